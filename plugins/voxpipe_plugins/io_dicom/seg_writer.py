"""`write.dicom_seg`: a label map as a DICOM Segmentation (highdicom) referencing its source series.

The label must lie on the grid the series was loaded on (same shape and affine as the
loaded image); a label that was resampled is refused, because SEG frames are tied to the
source images one by one. Segment labels come from the label map's label table. The
object is built and validated by highdicom, written atomically, and opens in viewers
that read DICOM SEG (3D Slicer with QuantitativeReporting, OHIF).

Whose identity the SEG carries is the config's choice (``identity``): ``deidentified`` (the
default) builds it from de-identified copies of the source headers, keyed as ``deid.dicom``
would key them; ``source`` keeps the patient and study of the source, for a SEG that goes
back to the PACS it came from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from voxpipe import __version__
from voxpipe.atomic import atomic_path
from voxpipe.image_checks import StageInputError
from voxpipe.stage import StageContext, record


class DicomSegWriter:
    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        filename: str = "segmentation.dcm",
        series_description: str = "VoxPipe segmentation",
        series_number: int = 9001,
        algorithm: str = "VoxPipe",
        identity: str = "deidentified",
        key_file: str | None = None,
        deid=None,
        context: StageContext | None = None,
    ) -> None:
        self.label_key, self.image_key, self.filename = label_key, image_key, filename
        self.series_description, self.series_number, self.algorithm = series_description, series_number, algorithm
        self.identity = identity
        self._deid = None
        if identity == "deidentified":
            from voxpipe_plugins.deid.derived import DerivedIdentity
            from voxpipe_plugins.deid.plugin import DeidOptionParams

            context = context or StageContext()
            options = deid if isinstance(deid, DeidOptionParams) else DeidOptionParams(**(deid or {}))
            self._deid = DerivedIdentity(context.resolve_path(key_file) if key_file else None, options.engine_options())

    def __call__(self, case: dict) -> dict:
        import highdicom as hd
        from pydicom.sr.codedict import codes

        source = case.get("dicom")
        if not source:
            raise StageInputError("write.dicom_seg needs a case loaded from DICOM (load.dicom or load.auto on a DICOM series)")
        label = case[self.label_key]
        image = case[self.image_key]
        self._check_grid(label, image, source)
        mask, values = self._mask(label, source)
        names = (getattr(label, "meta", {}) or {}).get("label_names", {}) or {}
        notes: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets, deidentified_here = self._sources(source, Path(case["output_dir"]), notes)
            algorithm = hd.AlgorithmIdentificationSequence(
                name=self.algorithm, version=__version__, family=codes.cid7162.ArtificialIntelligence
            )
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
            _patient_orientation(seg, datasets[0])
        target = Path(case["output_dir"]) / self.filename
        with atomic_path(target) as tmp:
            seg.save_as(tmp)
        if notes:
            case["warnings"] = list(case.get("warnings", [])) + notes
        details = {"identity": self.identity}
        if self._deid is not None:
            details.update(deidentified_here=deidentified_here, key=self._deid.key_fingerprint())
        record(case, "write.dicom_seg", file=self.filename, segments=len(segments), frames=int(mask.shape[0]), **details)
        return case

    def _mask(self, label, source: dict) -> tuple[np.ndarray, list[int]]:
        """The label as SEG frames in the source's frame order, and the segment values present."""
        array = np.asarray(label.detach().cpu().numpy() if hasattr(label, "detach") else label)[0]
        if array.ndim == 2:  # a single image: (columns, rows)
            array = array[..., None]
        mask = np.ascontiguousarray(array.transpose(2, 1, 0))  # (i, j, k) -> (k, rows, cols): source order
        if not np.issubdtype(mask.dtype, np.integer):
            if not np.all(mask == np.round(mask)):
                raise ValueError("label map has non-integer values; threshold or argmax it before write.dicom_seg")
            mask = mask.astype(np.int32)
        values = [int(v) for v in np.unique(mask) if v > 0]
        if not values:
            raise ValueError("label map is empty: nothing to write as DICOM SEG")
        frame_order = source.get("frame_order")
        if frame_order is not None:  # multi-frame source: SEG frames follow the file's frame order
            mask = mask[np.argsort(frame_order)]
        return mask.astype(np.uint8 if max(values) < 256 else np.uint16), values

    def _sources(self, source: dict, out_dir: Path, notes: list[str]):
        """Source headers with the chosen identity, completed with what the SEG needs."""
        import pydicom

        from voxpipe_plugins.io_dicom.seg_sources import complete

        datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in source["files"]]
        if source.get("frame_order") is not None:
            datasets = datasets[:1]
        done = 0
        if self._deid is not None:
            root = out_dir.parent.parent if out_dir.parent.name == ".voxpipe" else out_dir
            datasets, done = self._deid.apply(datasets, root)
        return complete(datasets, source["affine"], notes), done

    @staticmethod
    def _check_grid(label, image, source: dict) -> None:
        expected_affine = np.asarray(source["affine"], dtype=np.float64)
        affine = getattr(label, "affine", None)
        if affine is None or tuple(getattr(affine, "shape", ())) != (4, 4):
            raise ValueError(
                f"write.dicom_seg: the label is a {type(label).__name__} without a 4x4 affine; SEG frames are "
                "placed by it (keep the image's affine: voxpipe.plugin.as_label)"
            )
        shape = tuple(label.shape[1:])
        if (
            shape != tuple(source["shape"])
            or affine is None
            or not np.allclose(np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine), expected_affine, atol=1e-3)
        ):
            raise ValueError(
                f"label grid {shape} does not match the source series grid {tuple(source['shape'])}; "
                "DICOM SEG frames must align with the source images (write it before any resampling, or resample back)"
            )


def _patient_orientation(seg, source) -> None:
    """A SEG without plane orientation (a 2D image without patient geometry) needs PatientOrientation (type 2C)."""
    shared = seg.get("SharedFunctionalGroupsSequence")
    if "PatientOrientation" in seg or (shared and "PlaneOrientationSequence" in shared[0]):
        return
    seg.PatientOrientation = source.get("PatientOrientation", "") or ""
