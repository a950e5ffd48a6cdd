"""Preview images: a slice of the image with the label map overlaid."""
