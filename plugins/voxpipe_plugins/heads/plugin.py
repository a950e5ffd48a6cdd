"""Registers `head.vgg`, `head.vgg_rnn`, `write.predictions` and the `heads` trainer (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec, TrainerSpec
from voxpipe_plugins.common.params import FileName, StageParams
from voxpipe_plugins.features.plugin import VGGInputParams

ClassName = str


class VGGHeadParams(VGGInputParams):
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="Unset: predictions are case['outputs'] itself; set: they go to case['outputs'][name] "
        "(use it when a pipeline has several heads).",
    )
    task: Literal["multitask", "classification", "regression"] = Field(
        "multitask", description="`multitask`: the seed's two heads (class + regression value); or one of them."
    )
    classes: list[ClassName] | None = Field(
        None, min_length=2, max_length=1000, description="Class names in index order; unset: the training table's labels, sorted."
    )
    hidden: int = Field(
        0,
        ge=0,
        le=8192,
        description="Units of a shared hidden layer before the heads; 0: the seed's model "
        "(two fully connected layers directly on the pooled backbone).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the heads (and after the hidden layer).")
    weights: str | None = Field(
        None,
        description="Trained checkpoint (.safetensors from `voxpipe train`, with its .json "
        "sidecar), relative to the config file. Required by `voxpipe run` and `voxpipe test`.",
    )
    backbone_weights: str | None = Field(
        None, description="Training: start the backbone from a local torchvision VGG checkpoint (features.* tensors; never downloaded)."
    )
    freeze_backbone: bool = Field(False, description="Training: keep the backbone fixed and train the heads only.")
    target_name: str = Field(
        "regression",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description="Key of the regression value in the predictions.",
    )


class VGGRNNHeadParams(VGGHeadParams):
    cell: Literal["gru", "lstm"] = Field("gru", description="Recurrent cell run over the per-slice VGG vectors.")
    rnn_hidden: int = Field(128, ge=1, le=4096, description="Hidden units of the recurrent layer.")
    rnn_layers: int = Field(1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read the slices in both directions.")


class PredictionsWriterParams(StageParams):
    filename: FileName = Field("predictions.json", description="File written into each case's output folder.")
    include_features: bool = Field(False, description="Also write the case's feature vectors (can be large).")


class HeadsTrainParams(StageParams):
    data: str = Field(
        description="CSV with one row per image: image path (relative to the CSV), class label, regression "
        "target, optional patient id. NIfTI, DICOM or 2D image files, read by the config's loader."
    )
    image_column: str = Field("image", min_length=1, description="Column with the image path.")
    class_column: str = Field("class", min_length=1, description="Column with the class label (multitask/classification).")
    target_column: str = Field("target", min_length=1, description="Column with the regression target (multitask/regression).")
    patient_column: str = Field(
        "patient",
        min_length=1,
        description="Column with the patient id: a patient's rows stay in one split. Absent: every row is its own patient.",
    )
    stage: str | None = Field(None, description="Label (`id`) of the head stage to train; unset: the first head.vgg*.")
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of patients for validation (early stopping).")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of patients held out for the test metrics.")
    epochs: int = Field(30, ge=1, le=100000, description="Most epochs to train (a resumed run continues up to this number).")
    batch_size: int = Field(8, ge=1, le=4096, description="Images (volumes for head.vgg_rnn) per step.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Adam (the seed's), AdamW or SGD with momentum.")
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay (decoupled for AdamW).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    classification_loss: Literal["ce", "bce", "focal"] = Field(
        "ce", description="`ce` cross-entropy; `bce` binary cross-entropy on one logit (two classes); `focal` (gamma focal_gamma)."
    )
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0, description="Focal loss focusing parameter.")
    regression_loss: Literal["mse", "l1", "huber"] = Field("mse", description="On standardised targets: MSE (the seed's), L1 or Huber.")
    huber_delta: float = Field(1.0, gt=0.0, description="Huber threshold in standard deviations of the target.")
    classification_weight: float = Field(1.0, ge=0.0, description="Weight of the classification loss in the multi-task sum.")
    regression_weight: float = Field(1.0, ge=0.0, description="Weight of the regression loss in the multi-task sum.")
    patience: int = Field(10, ge=0, le=100000, description="Early stopping: epochs without a better validation loss; 0: never stop early.")
    precise_bn: bool = Field(
        True,
        description="After each epoch, recompute batch-norm statistics over the training set "
        "(precise BN) so validation and inference see what training saw; no effect without batch norm.",
    )
    flip: bool = Field(False, description="Augment with random left-right flips.")
    seed: int = Field(0, ge=0, description="Seed of the split, the initialisation, the batches and the augmentation.")
    amp: bool = Field(True, description="float16 autocast on CUDA; ignored on CPU.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset: torch's default.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after the epoch during which this much time has passed.")

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% of the patients for training")
        return self


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="head.vgg",
            kind=StageKind.HEAD,
            summary="The seed's model: VGG backbone + classification and regression heads (or one), trained by `voxpipe train`.",
            description="Runs a checkpoint from `voxpipe train` (task `heads`) on 2D images and writes case['outputs']: class, "
            "class_name, probabilities and the regression value. The architecture is read from the checkpoint's sidecar and "
            "checked against the stage's parameters. See docs/features-and-heads.md.",
            params=VGGHeadParams,
            factory="voxpipe_plugins.heads.infer:HeadStage",
            reads=("{key}",),
            writes=("outputs",),
            content_files=("weights",),
        )
    )
    register(
        StageSpec(
            id="head.vgg_rnn",
            kind=StageKind.HEAD,
            summary="GRU/LSTM over per-slice VGG vectors of a volume -> one class and regression value per volume.",
            description="The volume is cut along `slice_axis`; every slice goes through the VGG backbone, the RNN reads the "
            "pooled slice vectors in order and its last hidden state feeds the heads. Trained by `voxpipe train` (task `heads`).",
            params=VGGRNNHeadParams,
            factory="voxpipe_plugins.heads.infer:HeadStage",
            reads=("{key}",),
            writes=("outputs",),
            content_files=("weights",),
        )
    )
    register(
        StageSpec(
            id="write.predictions",
            kind=StageKind.WRITER,
            summary="Write each case's head predictions (case['outputs']) to predictions.json in its output folder.",
            params=PredictionsWriterParams,
            factory="voxpipe_plugins.heads.writer:PredictionsWriter",
            reads=("outputs",),
        )
    )


@hookimpl
def voxpipe_register_trainers(register):
    register(
        TrainerSpec(
            task="heads",
            summary="Train the config's head.vgg / head.vgg_rnn on a CSV (image, class, target, patient): Adam + CE/MSE by default.",
            description="Patient-grouped train/val/test split, early stopping on the validation loss, safetensors checkpoints "
            "with a JSON sidecar, resume, learning-curve PNG, test metrics in metrics.json. `voxpipe test` re-scores a checkpoint.",
            params=HeadsTrainParams,
            factory="voxpipe_plugins.heads.train:HeadsTrainer",
        )
    )


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="test",
            summary="Score a trained head checkpoint on the split `voxpipe train` held out.",
            factory="voxpipe_plugins.heads.commands:test_command",
        )
    )
