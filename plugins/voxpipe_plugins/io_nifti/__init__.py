"""NIfTI loading and writing with nibabel; affines kept exactly."""
