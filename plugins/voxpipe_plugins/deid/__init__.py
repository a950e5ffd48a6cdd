"""De-identification: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

``table`` reads the standard's attribute table (``data/annex_e.tsv``), ``pseudonyms`` holds
the keyed mappings (UIDs, dates, patient ids), ``engine`` applies the profile to one data
set, ``tree`` de-identifies a folder (``voxpipe deid``) and ``stage`` is the pipeline stage.
Only ``plugin`` is imported when the registry loads; it imports nothing heavy.
"""

from voxpipe.redaction import redact_pydicom_log

redact_pydicom_log()
