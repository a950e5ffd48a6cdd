"""Segmentation evaluation: Dice, IoU, HD95, ASSD per case and label; pipelines side by side."""
