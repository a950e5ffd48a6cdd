"""A PHI corpus for tests: DICOM and NIfTI inputs with a unique marker string in 30+ places.

Every marker is ``PHIMK<nn>`` plus a random suffix, so a byte search for ``PHIMK`` (or for
each marker) over everything VoxPipe wrote proves nothing identifying escaped: patient and
study modules, physician and institution names, free text, malformed dates, sequences three
levels deep (in sequences the table names and in ones it does not), private elements and a
private sequence, the preamble, file meta, overlay comments, file and folder names, a
DICOMDIR and NIfTI header fields and extensions.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

PREFIX = "PHIMK"


def _salt() -> str:
    """Six random hex digits, at least one of them a letter.

    An all-digit salt (about 6 % of draws) would make a marker file name such as
    ``PHIMK0312345678.dcm`` look like a scanner-generated name, which error messages are
    allowed to show (:func:`voxpipe.redaction.technical_name`); the corpus would then
    "leak" through a rule that is right.
    """
    while True:
        salt = secrets.token_hex(3).upper()
        if not salt.isdigit():
            return salt


class Markers:
    def __init__(self) -> None:
        self.salt = _salt()
        self.all: list[str] = []

    def new(self) -> str:
        marker = f"{PREFIX}{len(self.all):02d}{self.salt}"
        self.all.append(marker)
        return marker


def _ds(
    m: Markers,
    k: int,
    n: int,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
    sop_uids: list[str],
    patient: dict,
    modality: str = "CT",
    pixels: np.ndarray | None = None,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uids[k]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = patient["ae"]
    meta.PrivateInformationCreatorUID = "1.2.3.4"
    meta.PrivateInformation = patient["meta_private"].encode()
    ds.file_meta = meta
    ds.preamble = patient["preamble"].encode().ljust(128, b"\0")
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop_uids[k]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality = modality
    for keyword, value in patient["text"].items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20190314", "20190314", "20190314"
    ds.StudyTime, ds.SeriesTime = "101500", "101700"
    ds.PatientBirthDate = "19700102"
    ds.PatientSex, ds.PatientAge = "F", "049Y"
    ds.AcquisitionDateTime = patient["bad_dt"]  # malformed DT: must be removed, not shifted
    ds.InstanceCreationDate = patient["bad_da"]  # malformed DA
    ds.Manufacturer = "VoxPipe test"
    ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
    # three levels of nesting in a sequence the table names (Content Sequence, D) ...
    level3 = Dataset()
    level3.TextValue = patient["nested3"]
    level3.DateTime = "20190314101500"
    level3.UID = "1.2.826.0.1.3680043.2.1143.99.1"
    level2 = Dataset()
    level2.PersonName = patient["nested2"]
    level2.ContentSequence = Sequence([level3])
    level1 = Dataset()
    level1.TextValue = patient["nested1"]
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121071", "DCM", "Finding"
    level1.ConceptNameCodeSequence = Sequence([concept])
    level1.ContentSequence = Sequence([level2])
    ds.ContentSequence = Sequence([level1])
    # ... and in sequences it does not name (judged by value representation)
    inner = Dataset()
    inner.ContrastBolusRoute = patient["unlisted3"]
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "47625008", "SCT", "Intravenous route"
    middle = Dataset()
    middle.ContrastBolusRoute = patient["unlisted2"]
    middle.ContrastBolusAdministrationRouteSequence = Sequence([inner])
    ds.ContrastBolusAgentSequence = Sequence([middle])
    # references to the other slices (consistency of remapped links)
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = sop_uids[(k + 1) % n]
    ds.ReferencedImageSequence = Sequence([ref])
    # private elements and a private sequence
    block = ds.private_block(0x0009, patient["creator"], create=True)
    block.add_new(0x10, "LO", patient["private"])
    item = Dataset()
    item.PatientName = patient["private_nested"]
    block.add_new(0x11, "SQ", Sequence([item]))
    ds.add_new(0x60004000, "LT", patient["overlay"])  # Overlay Comments
    ds.Rows, ds.Columns = pixels.shape if pixels is not None else (16, 16)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], "2.0"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = ["-6.4", "-6.4", f"{2.0 * k:.1f}"]
    array = pixels if pixels is not None else (np.indices((16, 16)).sum(0) * 40 + 1024 * (k % 2)).astype(np.int16)
    ds.PixelData = array.astype(np.int16).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_phi_corpus(root: Path, slices: int = 4, series: int = 2) -> Markers:
    """Write a study of ``series`` CT series (``slices`` files each), a secondary capture without a burned-in flag,
    a DICOMDIR and a NIfTI file under ``root``, all laden with markers. Returns the markers."""
    import warnings

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    m = Markers()
    patient = {
        "text": {
            "PatientName": f"{m.new()}^{m.new()}",
            "PatientID": m.new(),
            "OtherPatientIDs": m.new(),
            "PatientBirthName": m.new(),
            "PatientAddress": m.new(),
            "PatientMotherBirthName": m.new(),
            "PatientTelephoneNumbers": m.new(),
            "PatientComments": m.new(),
            "AccessionNumber": m.new(),
            "ReferringPhysicianName": m.new(),
            "StudyID": m.new()[:16],
            "StudyDescription": m.new(),
            "SeriesDescription": m.new(),
            "InstitutionName": m.new(),
            "InstitutionAddress": m.new(),
            "StationName": m.new(),
            "OperatorsName": m.new(),
            "PerformingPhysicianName": m.new(),
            "ProtocolName": m.new(),
            "ImageComments": m.new(),
            "RequestingPhysician": m.new(),
            "DeviceSerialNumber": m.new(),
            "InstitutionalDepartmentName": m.new(),
            "AdmittingDiagnosesDescription": m.new(),
        },
        "ae": m.new()[:16],
        "meta_private": m.new(),
        "preamble": m.new(),
        "bad_dt": m.new(),
        "bad_da": m.new(),
        "nested1": m.new(),
        "nested2": m.new(),
        "nested3": m.new(),
        "unlisted2": m.new(),
        "unlisted3": m.new(),
        "creator": m.new(),
        "private": m.new(),
        "private_nested": m.new(),
        "overlay": m.new(),
    }
    m.all = [x for x in m.all]  # StudyID and AE were cut to 16 characters: they still start with the prefix
    folder_marker, file_marker = m.new(), m.new()
    study_uid = generate_uid()
    frame_uid = generate_uid()
    study_dir = Path(root) / f"{folder_marker}_study"
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the malformed dates are the point
        for s in range(series):
            series_uid = generate_uid()
            sops = [generate_uid() for _ in range(slices)]
            folder = study_dir / f"series{s}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(slices):
                ds = _ds(m, k, slices, series_uid, study_uid, frame_uid, sops, patient)
                path = folder / f"{file_marker}_{s}_{k}.dcm"
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
        sc = _ds(m, 0, 1, generate_uid(), study_uid, frame_uid, [generate_uid()], patient, modality="OT")
        del sc.ImagePositionPatient, sc.ImageOrientationPatient
        sc.save_as(study_dir / f"{file_marker}_capture.dcm", enforce_file_format=True)
    # a DICOMDIR naming the patient
    dicomdir = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.file_meta = meta
    dicomdir.FileSetID = "TEST"
    record = Dataset()
    record.DirectoryRecordType = "PATIENT"
    record.PatientName = m.new()
    record.PatientID = m.new()
    dicomdir.DirectoryRecordSequence = Sequence([record])
    dicomdir.save_as(study_dir / "DICOMDIR", enforce_file_format=True)
    write_phi_nifti(Path(root) / f"{m.new()}_t1.nii.gz", m)
    return m


def write_phi_nifti(path: Path, m: Markers) -> Path:
    """A small NIfTI file whose descrip, aux_file, intent_name, db_name and an extension carry markers."""
    import nibabel as nib

    image = nib.Nifti1Image(np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4), np.diag([1.0, 1.0, 2.0, 1.0]))
    header = image.header
    header["descrip"] = m.new().encode()
    header["aux_file"] = m.new().encode()[:23]
    header["intent_name"] = m.new().encode()[:15]
    header["db_name"] = m.new().encode()[:17]
    header.extensions.append(nib.nifti1.Nifti1Extension(6, m.new().encode()))  # code 6: comment
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path
