"""Handcrafted (radiomics-style) features inside a mask: first-order, shape and GLCM texture.

Definitions follow the Image Biomarker Standardisation Initiative (IBSI); every formula is
written out in docs/matching.md. ``plugin`` is light; the other modules import NumPy,
scipy and scikit-image and are loaded only when the stage is built.
"""
