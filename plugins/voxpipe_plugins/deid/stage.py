"""`deid.dicom`: de-identification inside a pipeline.

Placed right after the loader, it de-identifies the case's source series into the case
folder and points ``case["dicom"]["files"]`` at the copies, so writers that reference the
source (``write.dicom_seg``) build on de-identified data. Placed later, it also
de-identifies DICOM files earlier stages wrote to the case folder, in place, with the same
key (references still resolve: UIDs map the same way everywhere). On every case it reduces
image metadata to technical facts, so no writer can copy identifying text from it.
"""

from __future__ import annotations

from pathlib import Path

from voxpipe.limits import max_bytes
from voxpipe.stage import StageContext, record
from voxpipe_plugins.deid.engine import Deidentifier
from voxpipe_plugins.deid.keys import default_key_file, fingerprint, load_or_create
from voxpipe_plugins.deid.reading import read_dicom
from voxpipe_plugins.deid.writer import relative_parts, write_dataset

TECHNICAL_META = {
    "source_format",
    "modality",
    "transfer_syntax",
    "slices",
    "slice_spacing",
    "orientation",
    "rescale",
    "photometric",
    "original_channel_dim",
    "pixdim",
    "nifti_sform_code",
    "nifti_qform_code",
    "affine",
    "original_affine",
    "spatial_shape",
    "space",
    "label_names",
    "filename_or_obj",
    "dim",
    "spacing",
    "channel_dim",
    "applied_operations",
}


class DeidStage:
    def __init__(self, key_file=None, folder: str = "dicom", max_gib: float = 16.0, context: StageContext | None = None, **options) -> None:
        from voxpipe_plugins.deid.plugin import DeidOptionParams

        context = context or StageContext()
        self.key_path = context.resolve_path(key_file) if key_file else default_key_file()
        self.options = DeidOptionParams(**options).engine_options()
        self.folder = folder
        self.cap = max_bytes(max_gib)
        self._engine: Deidentifier | None = None

    def _engine_for(self, out_dir: Path) -> Deidentifier:
        root = out_dir.parent.parent if out_dir.parent.name == ".voxpipe" else out_dir
        key, _ = load_or_create(self.key_path, root)  # refuses a key inside the output tree
        if self._engine is None:
            self._engine = Deidentifier(key, self.options)
        return self._engine

    def __call__(self, case: dict) -> dict:
        out_dir = Path(case["output_dir"])
        engine = self._engine_for(out_dir)
        written, in_place, warnings = 0, 0, 0
        source = case.get("dicom")
        if source and source.get("files"):
            files = []
            for path in source["files"]:
                ds = read_dicom(Path(path), self.cap)
                warnings += engine.apply(ds).library_warnings  # Quarantined / AlreadyDeidentified fail the case with the reason
                files.append(write_dataset(ds, out_dir, (self.folder,) + relative_parts(ds, engine.pseudonyms, flat=True)))
                written += 1
            case["dicom"] = dict(source, files=files)
        for path in sorted(out_dir.glob("*.dcm")):  # DICOM written by earlier stages
            ds = read_dicom(path, self.cap)
            if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and "VoxPipe" in str(ds.get("DeidentificationMethod", "")):
                continue
            warnings += engine.apply(ds).library_warnings
            write_dataset(ds, out_dir, (path.name,))
            in_place += 1
        scrubbed = _scrub_meta(case)
        record(
            case,
            "deid.dicom",
            files=written,
            in_place=in_place,
            metadata_keys_removed=scrubbed,
            key=fingerprint(engine.pseudonyms._key),
            library_warnings_withheld=warnings,
            options=sorted(engine.enabled),
        )
        return case


def _scrub_meta(case: dict) -> int:
    """Drop image metadata that is not a known technical fact and is text (numbers and arrays stay)."""
    removed = 0
    for _key, value in list(case.items()):
        meta = getattr(value, "meta", None)
        if not isinstance(meta, dict):
            continue
        for name in list(meta):
            if name in TECHNICAL_META:
                continue
            if isinstance(meta[name], (str, bytes)) or name.lower().startswith(("patient", "study", "series", "institution")):
                del meta[name]
                removed += 1
        if "filename_or_obj" in meta:
            meta["filename_or_obj"] = case.get("case_id", "")
    return removed
