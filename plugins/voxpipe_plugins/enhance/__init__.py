"""Enhancement stages: windowing, normalisation, equalisation, CLAHE, gamma, sharpening, resampling."""
