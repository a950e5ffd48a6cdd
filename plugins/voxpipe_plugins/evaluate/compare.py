"""`voxpipe evaluate`: score one or more prediction folders against reference labels, side by side.

Matching. Every ``.nii``/``.nii.gz`` file in the reference folder is a case, named by its
*stem*: the file name without ``.nii(.gz)`` and without one trailing suffix such as
``_label``, ``_seg``, ``_pred``, ``_mask`` or ``_0000`` (case-insensitive; ``-`` works like
``_``). A prediction is either

* a folder of label NIfTI files, matched to the references by the same stems, or
* a ``voxpipe run`` output folder (``case-*/label.nii.gz``): case ids are pseudonymous, so
  the case-id -> input TSV that ``voxpipe run --source-map`` wrote is needed
  (``--source-map``); the input file's stem (a DICOM series: its folder's name) is then
  matched to the references like a file name.

Grids must agree (shape, and affine within 1e-3 mm): a mismatch is a usage error naming
the case. Spacing comes from the reference's affine. Label names come from a label table
next to the reference (``<stem>.labels.json`` or ``<file>.labels.json``), else the
prediction's, else ``label_<value>``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxpipe.errors import UsageError
from voxpipe.source_map import read_source_map
from voxpipe_plugins.evaluate.metrics import METRICS, LabelScore, mean_std, score_case

SUFFIXES = ("label", "labels", "seg", "segmentation", "pred", "prediction", "mask", "gt", "ref", "0000")
_SUFFIX = re.compile(r"[_-](" + "|".join(SUFFIXES) + r")$", re.IGNORECASE)
METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)"}


def strip_nifti(name: str) -> str | None:
    lower = name.lower()
    for ext in (".nii.gz", ".nii"):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return None


def stem(name: str) -> str:
    """Case stem of a file or folder name: no .nii/.nii.gz, no trailing _label/_seg/_pred/... suffix."""
    base = strip_nifti(name) or name
    for ext in (".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return _SUFFIX.sub("", base).lower()


def nifti_files(folder: Path) -> dict[str, Path]:
    """stem -> file for every NIfTI file directly in ``folder``; two files with one stem is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and strip_nifti(path.name) is not None:
            key = stem(path.name)
            if key in found:
                raise UsageError(f"{folder}: `{found[key].name}` and `{path.name}` both match case `{key}`; rename one")
            found[key] = path
    return found


def is_run_output(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() or any(p.is_dir() and p.name.startswith("case-") for p in folder.iterdir())


def run_output_files(folder: Path, source_map: Path | None, label_file: str = "label.nii.gz") -> dict[str, Path]:
    """stem of each case's input -> its label file, through the case-id -> input TSV."""
    if source_map is None:
        raise UsageError(
            f"{folder} is a `voxpipe run` output (case-* folders): give --source-map TSV "
            f"(written by `voxpipe run --source-map`) to match its cases to the references"
        )
    mapping = read_source_map(source_map)
    found: dict[str, Path] = {}
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("case-")):
        source = mapping.get(case_dir.name)
        label = case_dir / label_file
        if source is None or not label.is_file():
            continue
        found[stem(Path(source).name)] = label
    return found


def parse_pred(option: str, index: int) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the folder)."""
    name, sep, path = option.partition("=")
    if sep and name and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.+-]*", name):
        return name, Path(path)
    path = Path(option)
    return (path.name or f"pred{index + 1}"), path


@dataclass
class CaseResult:
    pipeline: str
    case: str
    scores: list[LabelScore]


@dataclass
class Evaluation:
    pipelines: list[str]
    labels: dict[int, str]
    results: list[CaseResult] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # pipeline -> reference cases without a prediction
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # pipeline -> predictions without a reference

    def rows(self) -> list[dict]:
        """Long format: one row per pipeline, case and label."""
        out = []
        for result in self.results:
            for s in result.scores:
                out.append(
                    {
                        "pipeline": result.pipeline,
                        "case": result.case,
                        "label": s.label,
                        "name": self.labels.get(s.label, f"label_{s.label}"),
                        "dice": s.dice,
                        "iou": s.iou,
                        "hd95_mm": s.hd95_mm,
                        "assd_mm": s.assd_mm,
                        "ref_voxels": s.ref_voxels,
                        "pred_voxels": s.pred_voxels,
                    }
                )
        return out

    def summary(self) -> list[dict]:
        """Per pipeline and label: mean, std and count of every metric over the cases."""
        out = []
        for pipeline in self.pipelines:
            for label, name in self.labels.items():
                scores = [s for r in self.results if r.pipeline == pipeline for s in r.scores if s.label == label]
                row = {"pipeline": pipeline, "label": label, "name": name, "cases": len(scores)}
                for metric in METRICS:
                    mean, std, n = mean_std([s.value(metric) for s in scores])
                    row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n})
                out.append(row)
        return out


def _read(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise UsageError(f"{path.name}: expected a 2D or 3D label map, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.allclose(rounded, data):
            raise UsageError(f"{path.name}: label map has non-integer values")
        data = rounded
    return data.astype(np.int64), np.asarray(image.affine, dtype=np.float64)


def _label_table(path: Path) -> dict[int, str]:
    base = strip_nifti(path.name) or path.name
    for candidate in (path.with_name(base + ".labels.json"), path.with_name(stem(path.name) + ".labels.json")):
        if candidate.is_file():
            try:
                return {int(k): str(v) for k, v in json.loads(candidate.read_text()).items()}
            except (ValueError, AttributeError):
                return {}
    return {}


def evaluate(ref: Path, preds: Sequence[str], source_map: Path | None = None, progress=None) -> Evaluation:
    """Score every prediction folder in ``preds`` (``[NAME=]PATH``) against the references in ``ref``."""
    if not ref.is_dir():
        raise UsageError(f"--ref {ref}: not a folder of reference label NIfTI files")
    references = nifti_files(ref)
    if not references:
        raise UsageError(f"--ref {ref}: no .nii/.nii.gz files")
    named: list[tuple[str, Path]] = []
    for i, option in enumerate(preds):
        name, path = parse_pred(option, i)
        if not path.is_dir():
            raise UsageError(f"--pred {option}: {path} is not a folder")
        if name in dict(named):
            raise UsageError(f"--pred {option}: the name `{name}` is used twice; name them NAME=PATH")
        named.append((name, path))
    if not named:
        raise UsageError("give at least one --pred [NAME=]FOLDER")
    tables = {key: _label_table(path) for key, path in references.items()}
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    evaluation = Evaluation([n for n, _ in named], {})
    names: dict[int, str] = {}
    for table in tables.values():
        for value, label_name in table.items():
            names.setdefault(value, label_name)
    seen_labels: set[int] = set()
    for pipeline, folder in named:
        files = run_output_files(folder, source_map) if is_run_output(folder) else nifti_files(folder)
        evaluation.missing[pipeline] = sorted(set(references) - set(files))
        evaluation.unmatched[pipeline] = sorted(set(files) - set(references))
        if not set(files) & set(references):
            raise UsageError(
                f"--pred {pipeline}: none of its {len(files)} label files match a reference in {ref} "
                f"(stems like {sorted(files)[:3]} vs {sorted(references)[:3]})"
            )
        for case in sorted(set(files) & set(references)):
            if case not in cached:
                cached[case] = _read(references[case])
            ref_array, ref_affine = cached[case]
            pred_array, pred_affine = _read(files[case])
            if pred_array.shape != ref_array.shape:
                raise UsageError(
                    f"case `{case}` ({pipeline}): prediction grid {pred_array.shape} differs from the reference "
                    f"{ref_array.shape}; resample the prediction onto the reference grid"
                )
            if not np.allclose(pred_affine, ref_affine, atol=1e-3):
                raise UsageError(
                    f"case `{case}` ({pipeline}): prediction and reference affines differ (same shape, other "
                    f"position or spacing); resample the prediction onto the reference grid"
                )
            spacing = [float(s) for s in np.linalg.norm(ref_affine[:3, :3], axis=0)[: ref_array.ndim]]
            scores = score_case(pred_array, ref_array, spacing)
            evaluation.results.append(CaseResult(pipeline, case, scores))
            seen_labels.update(s.label for s in scores)
            for value, label_name in _label_table(files[case]).items():
                names.setdefault(value, label_name)
            if progress:
                progress(pipeline, case)
    evaluation.labels = {v: names.get(v, f"label_{v}") for v in sorted(seen_labels)}
    # Every pipeline is scored on every label seen anywhere in that case (absent = empty).
    by_case: dict[str, set[int]] = {}
    for result in evaluation.results:
        by_case.setdefault(result.case, set()).update(s.label for s in result.scores)
    for result in evaluation.results:
        have = {s.label for s in result.scores}
        for value in sorted(by_case[result.case] - have):
            result.scores.append(LabelScore(value, 1.0, 1.0, math.nan, math.nan, 0, 0))
        result.scores.sort(key=lambda s: s.label)
    return evaluation


def fmt(value: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _digits(metric: str) -> int:
    return 3 if metric in ("dice", "iou") else 2


def markdown(evaluation: Evaluation) -> str:
    """The side-by-side tables: mean ± std per label and pipeline, then per case."""
    pipes = evaluation.pipelines
    lines = ["## Summary (mean ± std over cases)", ""]
    header = ["label"] + [f"{METRIC_TITLES[m]} {p}" for m in METRICS for p in pipes]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = {(row["pipeline"], row["label"]): row for row in evaluation.summary()}
    for label, name in evaluation.labels.items():
        cells = [f"{label} {name}"]
        for metric in METRICS:
            for pipeline in pipes:
                row = summary[(pipeline, label)]
                mean, std, n = row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_n"]
                d = _digits(metric)
                cells.append(
                    "n/a" if n == 0 else fmt(mean, d) if math.isinf(mean) or math.isnan(std) else f"{fmt(mean, d)} ± {fmt(std, d)}"
                )
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{p}: {len({r.case for r in evaluation.results if r.pipeline == p})} cases" for p in pipes)
    lines += ["", counts, "", "## Per case", ""]
    header = ["case", "label"] + [f"{METRIC_TITLES[m]} {p}" for m in METRICS for p in pipes]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    index = {(r.pipeline, r.case, s.label): s for r in evaluation.results for s in r.scores}
    for case in sorted({r.case for r in evaluation.results}):
        for label, name in evaluation.labels.items():
            if not any((p, case, label) in index for p in pipes):
                continue
            cells = [case, f"{label} {name}"]
            for metric in METRICS:
                for pipeline in pipes:
                    score = index.get((pipeline, case, label))
                    cells.append("–" if score is None else fmt(score.value(metric), _digits(metric)))
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for pipeline in pipes:
        if evaluation.missing.get(pipeline):
            notes.append(
                f"{pipeline}: no prediction for {len(evaluation.missing[pipeline])} reference case(s): {', '.join(evaluation.missing[pipeline][:10])}"
            )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += [
        "",
        "Dice = IoU = 1 and distances n/a when reference and prediction are both empty; "
        "Dice = IoU = 0 and distances inf when only one is. Distances in mm (reference spacing).",
    ]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_outputs(evaluation: Evaluation, output_dir: Path) -> list[Path]:
    """per_case.csv, summary.csv and evaluation.md in ``output_dir`` (each written atomically)."""
    from voxpipe.atomic import atomic_path

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {output_dir}: cannot create the folder ({exc.strerror})") from None
    written = []
    for name, text in (
        ("per_case.csv", _csv(evaluation.rows())),
        ("summary.csv", _csv(evaluation.summary())),
        ("evaluation.md", "# Evaluation\n\n" + markdown(evaluation)),
    ):
        target = output_dir / name
        with atomic_path(target) as tmp:
            tmp.write_text(text)
        written.append(target)
    return written
