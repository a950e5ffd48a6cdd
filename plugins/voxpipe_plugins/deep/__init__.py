"""Deep segmentation: MONAI networks, local weights, sliding-window inference, training."""
