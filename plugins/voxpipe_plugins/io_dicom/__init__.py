"""DICOM series: discovery, selection, volume assembly, compressed syntaxes, DICOM SEG."""
