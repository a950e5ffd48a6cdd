"""`head.vgg` / `head.vgg_rnn` in `voxpipe run`: a trained checkpoint predicts a class and a value per case."""

from __future__ import annotations

from typing import Any

import torch

from voxpipe.stage import StageContext, record
from voxpipe_plugins.deep.infer import resolve
from voxpipe_plugins.features.inputs import prepare
from voxpipe_plugins.heads import checkpoint
from voxpipe_plugins.heads.losses import probabilities
from voxpipe_plugins.heads.train import autocast


class HeadStage:
    """Loads the checkpoint named by ``weights`` (architecture from its sidecar, checked against the stage) once."""

    def __init__(self, device: str = "cpu", context: StageContext | None = None, **params: Any) -> None:
        context = context or StageContext()
        self.stage_id = context.stage_id or "head.vgg"
        from types import SimpleNamespace

        self.p = SimpleNamespace(**params)
        if not self.p.weights:
            raise ValueError(
                f"{self.stage_id}: `weights` is not set; train with `voxpipe train CONFIG -o DIR` and set weights "
                "to DIR/best.safetensors (relative to the config file)"
            )
        self.device = resolve(None, device)
        self.amp = bool(self.p.amp and self.device.type == "cuda")
        path = context.resolve_path(self.p.weights)
        self.model, self.info = checkpoint.load(path, self.stage_id, self.p)
        self.model.to(self.device)
        self.source = path.name
        self.rnn = self.info["architecture"].get("rnn") is not None
        self.options = dict(self.info.get("input") or {})

    def __call__(self, case: dict) -> dict:
        image = case[self.p.key]
        dims = image.ndim - 1
        if self.rnn and dims != 3:
            raise ValueError(f"{self.stage_id}: reads volumes slice by slice, this image is {dims}D")
        if not self.rnn and dims != 2:
            raise ValueError(f"{self.stage_id}: takes 2D images, this one is {dims}D; use head.vgg_rnn for volumes")
        x = prepare(image, what=self.stage_id, **self.options)
        if self.rnn:
            x = x.unsqueeze(0)
        with torch.inference_mode(), autocast(self.device, self.amp):
            out = self.model(x.to(self.device))
        prediction: dict[str, Any] = {}
        if "logits" in out:
            proba = probabilities(out["logits"], self.info.get("classification_loss", "ce"))[0].cpu().tolist()
            k = max(range(len(proba)), key=proba.__getitem__)
            names = self.info.get("classes") or [str(i) for i in range(len(proba))]
            prediction.update({"class": k, "class_name": names[k], "probabilities": [round(v, 6) for v in proba]})
        if "regression" in out:
            value = float(out["regression"][0].float()) * float(self.info["target_std"]) + float(self.info["target_mean"])
            prediction[self.info.get("target_name") or "regression"] = round(value, 6)
        outputs = dict(case.get("outputs") or {})
        if self.p.name:
            outputs[self.p.name] = prediction
        else:
            outputs.update(prediction)
        result = dict(case)
        result["outputs"] = outputs
        record(result, self.stage_id, weights=self.source, device=str(self.device), **({"name": self.p.name} if self.p.name else {}))
        return result
