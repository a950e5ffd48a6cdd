"""``voxpipe run``: discover cases, run the pipeline on each, publish outputs atomically.

Every case is processed in a private staging folder under ``OUTDIR/.voxpipe/`` and moved
to ``OUTDIR/<case-id>/`` only when all of its stages succeeded, so a case folder is
always complete. A failing case is recorded (one line, no paths) and the run goes on.
``manifest.json`` is rewritten atomically after every case, so even a killed run leaves
a valid account of what finished. A case whose folder holds a ``case.json`` with the same
config hash is complete and is skipped on a rerun unless ``force`` is given.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform as _platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from voxpipe import __version__
from voxpipe.atomic import publish_dir, write_json
from voxpipe.cases import CaseSource, case_id, id_key
from voxpipe.config import ValidatedConfig
from voxpipe.device import resolve_device
from voxpipe.errors import UsageError
from voxpipe.pipeline import CaseResult, Pipeline
from voxpipe.registry import Registry

MANIFEST = "manifest.json"
CASE_RECORD = "case.json"
STAGING = ".voxpipe"


@dataclass
class CaseOutcome:
    case_id: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    error: str | None = None
    stages: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        entry = {"case_id": self.case_id, "status": self.status, "seconds": round(self.seconds, 4)}
        if self.error:
            entry["error"] = self.error
        if self.warnings:
            entry["warnings"] = self.warnings
        if self.stages:
            entry["stages"] = self.stages
        if self.outputs:
            entry["outputs"] = self.outputs
        return entry


@dataclass
class RunSummary:
    output_dir: Path
    outcomes: list[CaseOutcome]
    skipped_files: Counter = field(default_factory=Counter)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


def prepare_output(output_dir: Path) -> None:
    """Create the output folder and prove it is writable, before any case runs."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / STAGING).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir / STAGING):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"output folder {output_dir} is not writable ({reason}); choose another with -o") from None


def run(
    validated: ValidatedConfig,
    registry: Registry,
    input_path: Path,
    output_dir: Path,
    device: str | None = None,
    force: bool = False,
    on_case: Callable[[int, int, CaseOutcome], None] | None = None,
    source_map: Path | None = None,
) -> RunSummary:
    """Run a validated pipeline over every case under ``input_path``."""
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise UsageError(f"input path {input_path} does not exist; pass a file or folder with -i")
    resolved_device = resolve_device(device or validated.config.device)
    pipeline = Pipeline(validated, resolved_device)
    discovery = pipeline.discover(input_path)
    if not discovery.cases:
        skipped = "; ".join(f"{n} {reason}" for reason, n in discovery.skipped.most_common()) or "no files"
        raise UsageError(f"no cases found under {input_path} for loader `{pipeline.loader.spec.id}` ({skipped})")
    prepare_output(output_dir)
    key = id_key()
    ids = [case_id(source, key) for source in discovery.cases]
    started = _now()
    outcomes: list[CaseOutcome] = []
    manifest = _manifest_header(validated, registry, resolved_device, started, discovery.skipped)
    if source_map is not None:
        _write_source_map(source_map, ids, discovery.cases)
    for position, (source, cid) in enumerate(zip(discovery.cases, ids), start=1):
        if not force and _is_complete(output_dir / cid, validated.hash):
            outcome = CaseOutcome(cid, "skipped", error=None)
        else:
            outcome = _run_one(pipeline, source, cid, output_dir, validated.hash)
        outcomes.append(outcome)
        _write_manifest(output_dir, manifest, outcomes, finished=None)
        if on_case:
            on_case(position, len(discovery.cases), outcome)
    _write_manifest(output_dir, manifest, outcomes, finished=_now())
    shutil.rmtree(output_dir / STAGING, ignore_errors=True)
    return RunSummary(output_dir, outcomes, discovery.skipped)


def _run_one(pipeline: Pipeline, source: CaseSource, cid: str, output_dir: Path, config_hash: str) -> CaseOutcome:
    staging = Path(tempfile.mkdtemp(prefix=f"{cid}-", dir=output_dir / STAGING))
    start = time.perf_counter()
    try:
        result = pipeline.run_case(source, cid, staging)
        seconds = time.perf_counter() - start
        stages = [{"stage": label, "seconds": round(t, 4)} for label, t in result.timings]
        warnings = [str(w) for w in result.case.get("warnings", [])]
        if not result.ok:
            return CaseOutcome(cid, "failed", seconds, result.error, stages, warnings=warnings)
        outputs = sorted([p.name for p in staging.iterdir()] + [CASE_RECORD])
        record = _case_record(result, cid, config_hash, seconds, stages, outputs)
        write_json(staging / CASE_RECORD, record)
        publish_dir(staging, output_dir / cid, output_dir / STAGING)
        return CaseOutcome(cid, "ok", seconds, None, stages, outputs, warnings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _case_record(result: CaseResult, cid: str, config_hash: str, seconds: float, stages: list, outputs: list) -> dict:
    return {
        "case_id": cid,
        "status": "ok",
        "config_hash": config_hash,
        "kind": result.case["source"].kind,
        "seconds": round(seconds, 4),
        "stages": stages,
        "history": _jsonable(result.case.get("history", [])),
        "warnings": [str(w) for w in result.case.get("warnings", [])],
        "outputs": outputs,
        "finished": _now(),
    }


def _is_complete(case_dir: Path, config_hash: str) -> bool:
    try:
        record = json.loads((case_dir / CASE_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "ok" and record.get("config_hash") == config_hash


def _manifest_header(validated: ValidatedConfig, registry: Registry, device: str, started: str, skipped) -> dict:
    used = {stage.spec.distribution: stage.spec.version for stage in validated.stages}
    return {
        "manifest_version": 1,
        "voxpipe_version": __version__,
        "pipeline": validated.config.name,
        "config_file": Path(validated.source).name,
        "config_hash": validated.hash,
        "config": validated.resolved(),
        "overrides": validated.overrides,
        "device": device,
        "started": started,
        "plugins": {"used": used, "loaded": registry.versions()},
        "environment": _environment(),
        "discovery": {"skipped_files": dict(skipped)},  # reason -> count; never names
    }


def _write_manifest(output_dir: Path, header: dict, outcomes: list[CaseOutcome], finished: str | None) -> None:
    manifest = dict(header)
    manifest["finished"] = finished
    manifest["summary"] = {
        "cases": len(outcomes),
        "ok": sum(o.status == "ok" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
    }
    manifest["cases"] = [o.as_dict() for o in outcomes]
    write_json(output_dir / MANIFEST, manifest)


def _write_source_map(path: Path, ids: list[str], sources: list[CaseSource]) -> None:
    """Case id -> input path, written only where the user asks (it may contain names)."""
    lines = ["case_id\tsource"] + [f"{cid}\t{source.path}" for cid, source in zip(ids, sources)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def _environment() -> dict:
    versions = {"python": _platform.python_version()}
    for name in ("torch", "monai", "numpy", "nibabel", "pydicom", "skimage"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "")
    return versions


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
