"""PACS connectivity: DICOMweb and DIMSE input sources, the ``write.stow`` writer and ``voxpipe listen``."""
