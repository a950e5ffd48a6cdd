"""MONAI Model Zoo bundles read as data: ``voxpipe bundle import`` and ``voxpipe bundle info``."""
