"""The Python API for notebooks and scripts: the same registry, validation and stages as the CLI.

Example::

    import voxpipe
    pipe = voxpipe.load_pipeline("configs/demo.yaml", overrides=["denoise.gaussian.sigma_mm=2"])
    case = pipe.run_file("brain.nii.gz")            # the case dict: image, label, history, ...
    summary = voxpipe.run("configs/demo.yaml", "data/", "out/")
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from voxpipe import config as config_module
from voxpipe.cases import case_id
from voxpipe.config import ValidatedConfig
from voxpipe.defaults import DEFAULT_WORKERS
from voxpipe.device import resolve_device
from voxpipe.errors import StageError, UsageError
from voxpipe.pipeline import Pipeline
from voxpipe.registry import PluginSelection, Registry
from voxpipe.runner import RunSummary
from voxpipe.runner import run as _run


def load_registry(allow: tuple[str, ...] = (), block: tuple[str, ...] = (), strict: bool = False) -> Registry:
    """Load the installed plugins (honouring ``VOXPIPE_PLUGINS_ALLOW``/``_BLOCK``)."""
    return Registry.load(PluginSelection.from_env(allow, block), strict=strict)


def validate(
    config: str | Path | Mapping[str, Any], overrides=(), device: str | None = None, registry: Registry | None = None
) -> ValidatedConfig:
    """Validate a config file, or a config given as a dict."""
    registry = registry or load_registry()
    if isinstance(config, Mapping):
        text = yaml.safe_dump(dict(config), sort_keys=False)
        return config_module.validate_text(text, registry, source="<dict>", overrides=overrides, device=device)
    return config_module.load_config(config, registry, overrides=overrides, device=device)


class NotebookPipeline:
    """A built pipeline you can call on single files."""

    def __init__(self, validated: ValidatedConfig, device: str, registry: Registry) -> None:
        self.config = validated
        self.registry = registry
        self.pipeline = Pipeline(validated, device)

    def run_file(self, path: str | Path, output_dir: str | Path | None = None) -> dict:
        """Run the pipeline on one file and return the case dict; raises ``StageError`` on failure.

        Without ``output_dir`` the writers' files go to a temporary folder that is removed before
        this returns: the results are the case dict, in memory, and nothing is left behind.
        """
        found = self.pipeline.discover(Path(path))
        if not found.cases:
            raise UsageError(f"{path}: not a case the loader `{self.pipeline.loader.spec.id}` can read")
        source = found.cases[0]
        if output_dir is not None:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            return self._run_case(source, out)
        with tempfile.TemporaryDirectory(prefix="voxpipe-") as scratch:
            case = self._run_case(source, Path(scratch))
        case.pop("output_dir", None)  # it is gone
        return case

    def _run_case(self, source, out: Path) -> dict:
        result = self.pipeline.run_case(source, case_id(source), out)
        if not result.ok:
            raise StageError(result.error)
        return result.case


def load_pipeline(config, overrides=(), device: str | None = None, registry: Registry | None = None) -> NotebookPipeline:
    """Validate and build a pipeline (imports the stages' heavy libraries)."""
    registry = registry or load_registry()
    validated = validate(config, overrides, device, registry)
    return NotebookPipeline(validated, resolve_device(validated.config.device), registry)


def run(
    config,
    input_path,
    output_dir,
    overrides=(),
    device: str | None = None,
    force: bool = False,
    registry: Registry | None = None,
    workers: int = DEFAULT_WORKERS,
    executor: str = "local",
    timeout: float | None = None,
    retries: int = 2,
    report: bool = True,
    source_map: str | Path | None = None,
    ae_title: str | None = None,
    ca_bundle: str | Path | None = None,
) -> RunSummary:
    """Run a pipeline over every case under ``input_path``; like ``voxpipe run``.

    The names and defaults are the CLI's: ``workers`` defaults to ``DEFAULT_WORKERS`` (one
    isolated worker process, as ``voxpipe run``); ``workers=0`` runs the cases in this process,
    ``executor="dask-local"`` or ``"tcp://HOST:PORT"`` a Dask cluster. ``input_path`` may be a
    PACS URL (``dicomweb+https://...``, ``dimse://...``); ``ae_title`` and ``ca_bundle`` are then
    VoxPipe's DIMSE AE title and the CA bundle that verifies an https server.
    """
    from voxpipe.input_sources import opener_options, source_text

    registry = registry or load_registry()
    validated = validate(config, overrides, device, registry)
    return _run(
        validated,
        registry,
        source_text(input_path) or Path(input_path),
        Path(output_dir),
        force=force,
        workers=workers,
        executor=executor,
        timeout=timeout,
        retries=retries,
        report=report,
        source_map=Path(source_map) if source_map is not None else None,
        source_options=opener_options(ae_title, ca_bundle),
    )
