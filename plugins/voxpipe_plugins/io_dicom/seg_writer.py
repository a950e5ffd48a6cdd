"""`write.dicom_seg`: a label map as a DICOM Segmentation (highdicom) referencing its source series.

The label must lie on the grid the series was loaded on (same shape and affine as the
loaded image); a label that was resampled is refused, because SEG frames are tied to the
source images one by one. Segment labels come from the label map's label table. The
object is built and validated by highdicom, written atomically, and opens in viewers
that read DICOM SEG (3D Slicer with QuantitativeReporting, OHIF).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from voxpipe import __version__
from voxpipe.atomic import atomic_path
from voxpipe.stage import record

_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "AccessionNumber", "StudyID", "StudyInstanceUID")


class DicomSegWriter:
    def __init__(self, label_key: str = "label", image_key: str = "image", filename: str = "segmentation.dcm",
                 series_description: str = "VoxPipe segmentation", series_number: int = 9001, algorithm: str = "VoxPipe") -> None:
        self.label_key, self.image_key, self.filename = label_key, image_key, filename
        self.series_description, self.series_number, self.algorithm = series_description, series_number, algorithm

    def __call__(self, case: dict) -> dict:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes

        source = case.get("dicom")
        if not source:
            raise ValueError("write.dicom_seg needs a case loaded from DICOM (load.dicom or load.auto on a DICOM series)")
        label = case[self.label_key]
        image = case[self.image_key]
        self._check_grid(label, image, source)
        array = np.asarray(label.detach().cpu().numpy() if hasattr(label, "detach") else label)[0]
        mask = np.ascontiguousarray(array.transpose(2, 1, 0))  # (i, j, k) -> (k, rows, cols): source order
        if not np.issubdtype(mask.dtype, np.integer):
            if not np.all(mask == np.round(mask)):
                raise ValueError("label map has non-integer values; threshold or argmax it before write.dicom_seg")
            mask = mask.astype(np.int32)
        values = [int(v) for v in np.unique(mask) if v > 0]
        if not values:
            raise ValueError("label map is empty: nothing to write as DICOM SEG")
        mask = mask.astype(np.uint8 if max(values) < 256 else np.uint16)
        names = (getattr(label, "meta", {}) or {}).get("label_names", {}) or {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in source["files"]]
            frame_order = source.get("frame_order")
            if frame_order is not None:  # multi-frame source: SEG frames follow the file's frame order
                inverse = np.argsort(frame_order)
                mask = mask[inverse]
                datasets = datasets[:1]
            for ds in datasets:
                for keyword in _TYPE2:
                    if keyword not in ds:
                        setattr(ds, keyword, "")
            algorithm = hd.AlgorithmIdentificationSequence(name=self.algorithm, version=__version__, family=codes.cid7162.ArtificialIntelligence)
            segments = [
                hd.seg.SegmentDescription(
                    segment_number=value,
                    segment_label=str(names.get(value, names.get(str(value), f"label {value}")))[:64],
                    segmented_property_category=codes.SCT.Tissue,
                    segmented_property_type=codes.SCT.Tissue,
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=algorithm,
                )
                for value in range(1, max(values) + 1)
            ]
            seg = hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=mask,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments,
                series_instance_uid=hd.UID(),
                series_number=self.series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="VoxPipe",
                manufacturer_model_name="voxpipe",
                software_versions=__version__,
                device_serial_number="none",
                series_description=self.series_description,
            )
        target = Path(case["output_dir"]) / self.filename
        with atomic_path(target) as tmp:
            seg.save_as(tmp)
        record(case, "write.dicom_seg", file=self.filename, segments=len(segments), frames=int(mask.shape[0]))
        return case

    @staticmethod
    def _check_grid(label, image, source: dict) -> None:
        expected_affine = np.asarray(source["affine"], dtype=np.float64)
        affine = getattr(label, "affine", None)
        shape = tuple(label.shape[1:])
        if shape != tuple(source["shape"]) or affine is None or not np.allclose(np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine), expected_affine, atol=1e-3):
            raise ValueError(
                f"label grid {shape} does not match the source series grid {tuple(source['shape'])}; "
                "DICOM SEG frames must align with the source images (write it before any resampling, or resample back)"
            )
