"""What a config says about a head: which stage, its preprocessing, its table and split, and the images as tensors.

Shared by the trainer and ``voxpipe test`` so both see the same rows, the same split and the
same input as ``voxpipe run`` (the config's loader and preprocessing stages read every image).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from voxpipe.errors import ConfigError
from voxpipe.stage import StageContext, StageKind, build_stage, import_object
from voxpipe_plugins.features.inputs import prepare
from voxpipe_plugins.heads.table import Columns, Row, Split, TableError, class_names, read_table, split_rows

HEAD_STAGES = ("head.vgg", "head.vgg_rnn")
SKIPPED_KINDS = (StageKind.WRITER, StageKind.EXTRACTOR, StageKind.HEAD, StageKind.MATCHER)


def find_head(config, wanted: str | None):
    """The planned head stage to train or test: the one labelled ``wanted``, else the first head.vgg*."""
    heads = [s for s in config.stages if s.spec.id in HEAD_STAGES]
    if wanted is not None:
        heads = [s for s in heads if s.label == wanted or s.spec.id == wanted]
    if not heads:
        what = f"a head stage labelled `{wanted}`" if wanted else f"a {' or '.join(HEAD_STAGES)} stage"
        raise ConfigError([f"{config.source}: training task `heads` needs {what}"])
    return heads[0]


@dataclass
class Loaded:
    """Images of some rows as one tensor, with their class indices and raw regression targets."""

    x: torch.Tensor  # (N, C, H, W), or (N, S, C, H, W) for the RNN head
    labels: torch.Tensor | None  # (N,) int64
    targets: torch.Tensor | None  # (N,) float32, in the table's units
    rows: list[Row]


class HeadSetup:
    """The head stage of a validated config plus its `training:` parameters."""

    def __init__(self, config, params, context: StageContext) -> None:
        self.config, self.params, self.context = config, params, context
        self.planned = find_head(config, params.stage)
        self.stage = self.planned.params
        self.rnn = self.planned.spec.id == "head.vgg_rnn"
        self.classifies = self.stage.task in ("multitask", "classification")
        self.regresses = self.stage.task in ("multitask", "regression")
        self.table_path = context.resolve_path(params.data)
        self.columns = Columns(
            image=params.image_column,
            label=params.class_column if self.classifies else None,
            target=params.target_column if self.regresses else None,
            patient=params.patient_column,
        )
        self.loader = config.stages[0]
        self.preprocess = [s for s in config.stages[1 : self.planned.index - 1] if s.spec.kind not in SKIPPED_KINDS]

    # -- table
    def table(self) -> tuple[list[Row], list[str], Split]:
        rows = read_table(self.table_path, self.columns)
        names = class_names(rows, self.stage.classes, self.table_path.name) if self.classifies else []
        split = split_rows(rows, self.params.val_fraction, self.params.test_fraction, self.params.seed, self.table_path.name)
        if self.classifies:
            missing = [n for n in names if not any(r.label == n for r in split.train)]
            if missing:
                raise TableError(
                    f"{self.table_path.name}: class {missing[0]!r} has no training sample after the patient-grouped "
                    "split; add samples of it or lower val_fraction/test_fraction"
                )
        return rows, names, split

    # -- images
    def _stages(self):
        built = []
        for planned in [self.loader, *self.preprocess]:
            ctx = StageContext(device=self.context.device, config_dir=self.context.config_dir, stage_id=planned.spec.id)
            built.append((planned, build_stage(planned.spec, planned.params, ctx)))
        return built

    def input_options(self, normalise: bool) -> dict[str, Any]:
        s = self.stage
        return {
            "mode": "slices" if self.rnn else "2d",
            "slice_axis": s.slice_axis,
            "in_channels": s.in_channels,
            "intensity": s.intensity,
            "normalise": normalise,
            "size": s.size,
        }

    def load(self, rows: list[Row], names: list[str], normalise: bool, what: str) -> Loaded:
        """Read, preprocess and stack the images of ``rows``; a row that cannot be used is named."""
        stages = self._stages()
        discover = self.loader.spec.discover
        discover = import_object(discover) if isinstance(discover, str) else discover
        options = self.input_options(normalise)
        tensors = []
        for n, row in enumerate(rows, start=1):
            where = f"{self.table_path.name} row {row.row}"
            cases = discover(row.image, self.loader.params).cases if discover else []
            if len(cases) != 1:
                raise TableError(
                    f"{where}: {row.image.name} gives {len(cases)} cases to loader {self.loader.spec.id}; "
                    "each row must name one image (a file, or one DICOM series folder)"
                )
            case: dict[str, Any] = {"case_id": f"row{row.row}", "source": cases[0], "history": []}
            for planned, stage in stages:
                try:
                    case = stage(case)
                except Exception as exc:  # noqa: BLE001 - name the row and the stage
                    raise TableError(f"{where}: stage {planned.index} ({planned.label}): {' '.join(str(exc).split())}") from None
            image = case[self.stage.key]
            dims = image.ndim - 1
            if self.rnn and dims != 3:
                raise TableError(f"{where}: head.vgg_rnn reads volumes slice by slice, this image is {dims}D; use head.vgg")
            if not self.rnn and dims != 2:
                raise TableError(f"{where}: head.vgg takes 2D images, this one is {dims}D; use head.vgg_rnn for volumes")
            try:
                x = prepare(image, what=where, **options)
            except ValueError as exc:
                raise TableError(str(exc)) from None
            x = x if self.rnn else x[0]
            if tensors and x.shape != tensors[0].shape:
                raise TableError(
                    f"{where}: input shape {tuple(x.shape)} differs from row {rows[0].row}'s {tuple(tensors[0].shape)}; "
                    "set `size` in the head stage (and resample volumes to one slice count)"
                )
            tensors.append(x)
            if n % 50 == 0 or n == len(rows):
                print(f"loaded {what} {n}/{len(rows)}", file=sys.stderr, flush=True)
        labels = torch.tensor([names.index(r.label) for r in rows], dtype=torch.long) if self.classifies else None
        targets = torch.tensor([r.target for r in rows], dtype=torch.float32) if self.regresses else None
        return Loaded(torch.stack(tensors), labels, targets, rows)
