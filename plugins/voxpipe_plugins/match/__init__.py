"""Feature files, the feature store, and matching: retrieval, clustering, keypoints, registration.

``plugin`` (stages) and ``commands`` (the CLI) are light; everything else imports NumPy,
scikit-learn, scikit-image or matplotlib and is loaded only when used. docs/matching.md
describes the formats and methods.
"""
