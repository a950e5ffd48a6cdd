"""2D images (PNG, JPEG, TIFF, BMP) as cases."""
