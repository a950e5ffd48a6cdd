"""A built pipeline: stage callables in order, applied to one case dict at a time."""

from __future__ import annotations

import os
import re
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe import contract
from voxpipe.cases import CaseSource, Discovery
from voxpipe.config import PlannedStage, ValidatedConfig
from voxpipe.errors import ConfigError, one_line
from voxpipe.stage import StageContext, build_stage, import_object


@dataclass
class BuiltStage:
    planned: PlannedStage
    call: Callable[[dict], dict]
    writes: tuple[str, ...] | None = None  # declared outputs, `{param}` templates resolved: checked after each case

    def __post_init__(self) -> None:
        if self.writes is None:
            self.writes = tuple(getattr(self.planned, "writes", ()))


@dataclass
class CaseResult:
    """What happened to one case."""

    case: dict
    timings: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pipeline:
    """Stages built from a validated config. Building imports the heavy libraries."""

    def __init__(self, config: ValidatedConfig, device: str) -> None:
        self.config = config
        self.device = device
        self.stages: list[BuiltStage] = []
        problems: list[str] = []
        for planned in config.stages:
            context = StageContext(device=device, config_dir=config.config_dir, stage_id=planned.spec.id)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # third-party import chatter is not the user's problem
                    self.stages.append(BuiltStage(planned, build_stage(planned.spec, planned.params, context)))
            except Exception as exc:  # noqa: BLE001 - report which stage could not be built
                problems.append(f"{config.source}: stage {planned.index} ({planned.label}): cannot build: {one_line(exc)}")
        if problems:
            raise ConfigError(problems)

    @property
    def loader(self) -> PlannedStage:
        return self.config.stages[0]

    def discover(self, root: Path) -> Discovery:
        """Cases under ``root`` as the loader sees them."""
        return discover(self.config, root)

    def run_case(self, source: CaseSource, case_id: str, output_dir: Path) -> CaseResult:
        """Run every stage on one case. Failures are caught and described in one line."""
        case: dict[str, Any] = {"case_id": case_id, "source": source, "output_dir": Path(output_dir), "history": []}
        result = CaseResult(case)
        for stage in self.stages:
            start = time.perf_counter()
            before = dict(case)  # shallow: what the stage changed is what the contract checks
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # library warnings may quote raw header values
                    case = stage.call(case)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                    raise
                # Anything else fails this case only: Rust decoders panic with a BaseException.
                if os.environ.get("VOXPIPE_DEBUG"):
                    _print_debug_traceback(source)
                result.timings.append((stage.planned.label, time.perf_counter() - start))
                result.error = f"stage {stage.planned.index} ({stage.planned.label}): {redact(one_line(exc), source)}"
                result.case = case
                return result
            if not isinstance(case, dict):
                result.error = (
                    f"stage {stage.planned.index} ({stage.planned.label}): returned {type(case).__name__}, expected the case dict"
                )
                return result
            moved = _moved_runner_keys(case, case_id, source, Path(output_dir))
            if moved:
                result.error = (
                    f"stage {stage.planned.index} ({stage.planned.label}): changed `{moved}`, which only the runner "
                    "sets (writers put files in the case's own output folder)"
                )
                result.case = case
                return result
            broken = contract.violation(case, before, stage.writes)
            result.timings.append((stage.planned.label, time.perf_counter() - start))
            if broken:
                result.error = f"stage {stage.planned.index} ({stage.planned.label}): {redact(broken, source)}"
                result.case = case
                return result
        result.case = case
        return result


def discover(validated: ValidatedConfig, root: Path) -> Discovery:
    """Cases under ``root`` as the config's loader sees them, without building (importing) any stage."""
    loader = validated.stages[0]
    function = loader.spec.discover
    if function is None:
        raise ConfigError([f"{validated.source}: stage 1 ({loader.label}) cannot discover cases"])
    function = import_object(function) if isinstance(function, str) else function
    return function(root, loader.params)


def _moved_runner_keys(case: dict, case_id: str, source: CaseSource, output_dir: Path) -> str | None:
    """The first runner-owned key a stage changed: a stage that points ``output_dir`` elsewhere
    would have every later writer write outside ``-o``."""
    for key, expected in (("case_id", case_id), ("source", source), ("output_dir", output_dir)):
        value = case.get(key)
        if value is not expected and value != expected:
            return key
    return None


def _print_debug_traceback(source: CaseSource) -> None:
    """``--debug`` in any process, workers included: input names redacted unless ``--show-phi``."""
    import sys

    from voxpipe.input_redaction import show_phi
    from voxpipe.redaction import header_values, redact_values

    text = traceback.format_exc()
    if not show_phi():
        text = redact_values(redact(text, source), header_values(source.paths))
        text += "(input names and header values redacted; add --show-phi to see them)\n"
    sys.stderr.write(text)
    sys.stderr.flush()


def redact(message: str, source: CaseSource) -> str:
    """Remove input paths from a message: folder and file names may name the patient.

    A DICOM series keeps its files' base names when they are the kind scanners generate
    (``IM000123.dcm``, UIDs), which say which file is at fault; its folders are removed. Any
    other name, and single-file cases (NIfTI, images, often named after the patient), become
    ``<input>`` / ``<input file N>``.
    """
    from voxpipe.redaction import technical_name

    for number, path in enumerate(source.paths, start=1):
        keep_name = source.kind == "dicom" and technical_name(path.name)  # Doe_Jane_CT.dcm goes too
        replacement = path.name if keep_name else ("<input>" if len(source.paths) == 1 else f"<input file {number}>")
        for text in (str(path.resolve()), str(path)):
            message = message.replace(text, replacement)
        folders = {str(path.resolve().parent), str(path.parent)} - {"", "."}
        for folder in sorted(folders, key=len, reverse=True):  # as a path's start only: `in/` is not `main/`
            message = re.sub(r"(?<![\w./-])" + re.escape(folder + "/"), "", message)
        if not keep_name and len(path.name) > 3:
            message = message.replace(path.name, replacement)
    return message
