"""`voxpipe bundle info`: what a bundle is (metadata.json) and what `bundle import` would make of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxpipe_plugins.bundle.expressions import BundleError


def _text(value: Any, limit: int = 120) -> str:
    text = " ".join(str(value).split()) if value is not None else "-"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(root: Path) -> dict[str, Any]:
    from voxpipe_plugins.bundle.mapping import import_bundle
    from voxpipe_plugins.bundle.reader import Bundle

    try:
        bundle = Bundle(root)
    except BundleError as exc:
        from voxpipe.errors import UsageError

        raise UsageError(f"bundle {root.name}: {exc}") from None
    meta = bundle.metadata if isinstance(bundle.metadata, dict) else {}
    fmt = meta.get("network_data_format") if isinstance(meta.get("network_data_format"), dict) else {}
    inputs, outputs = {}, {}
    for name, spec in (fmt.get("inputs") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        inputs[_text(name, 40)] = {
            "modality": _text(spec.get("modality")),
            "channels": spec.get("num_channels"),
            "spatial_shape": spec.get("spatial_shape"),
            "spacing": _spacing(bundle),
        }
    for name, spec in (fmt.get("outputs") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        labels = spec.get("channel_def") if isinstance(spec.get("channel_def"), dict) else {}
        outputs[_text(name, 40)] = {"channels": spec.get("num_channels"), "labels": {str(k): _text(v, 60) for k, v in labels.items()}}
    info: dict[str, Any] = {
        "name": _text(meta.get("name") or root.name),
        "version": _text(meta.get("version")),
        "task": _text(meta.get("task")),
        "inputs": inputs,
        "outputs": outputs,
        "network": "-",
        "importable": False,
        "stages": [],
        "refused": None,
        "notes": [],
    }
    try:
        imported = import_bundle(root, root / "imported.yaml", require_weights=False)
    except BundleError as exc:
        info["refused"] = str(exc)
        net = bundle.config.get("network_def")
        if isinstance(net, dict) and isinstance(net.get("_target_"), str):
            info["network"] = _text(net["_target_"], 60)
        return info
    info.update(importable=True, network=imported.network, notes=imported.notes)
    info["stages"] = [s["use"] for s in imported.config["stages"]]
    return info


def _spacing(bundle) -> Any:
    """The preprocessing's Spacingd pixdim, when it has one (resolved as data)."""
    try:
        pre = bundle.config.get("preprocessing", {})
        for i, t in enumerate(pre.get("transforms", []) if isinstance(pre, dict) else []):
            if isinstance(t, dict) and str(t.get("_target_", "")).endswith("Spacingd"):
                value = bundle.value(t.get("pixdim"), f"preprocessing#transforms#{i}#pixdim")
                return value if isinstance(value, list) else [value]
    except BundleError:
        return "-"
    return "as given"
