"""A bundle's inference, read as data, mapped onto a VoxPipe config (registry ids and literals only).

The layout of the config it writes:

1. ``load.auto`` (the bundle's ``LoadImaged``; ``-i`` supplies the data);
2. ``monai.CopyItemsd``: the image is copied to ``net_input``, so the case keeps its input grid
   under ``image`` while the bundle's preprocessing works on the copy;
3. each preprocessing transform as ``monai.<Name>`` on ``net_input`` (within VoxPipe's reviewed
   MONAI transforms; ``EnsureChannelFirstd``/``EnsureTyped`` are what VoxPipe's loaders already do);
4. ``segment.deep``: the network, its weights (pinned by SHA-256), the sliding window, the
   postprocessing (activation, inversion to ``image``'s grid, argmax/threshold, label lambda,
   largest component) and the label names from metadata.json;
5. ``monai.DeleteItemsd`` of ``net_input``, then ``write.nifti`` of the label map (and
   ``write.dicom_seg`` when asked for: the input is DICOM).

Anything that cannot be mapped is refused with one line naming the key; what is left out on
purpose is listed in ``notes``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe_plugins.bundle.expressions import ArchCode, ArchItem, BundleError, Component, Device, Dtype, LabelRule, MissingWeights
from voxpipe_plugins.bundle.reader import Bundle, screen

NET_KEY = "net_input"
NETWORK_PREFIXES = ("monai.networks.nets.", "monai.networks.")
# Transforms a VoxPipe loader already did, so they are left out (with a note).
LOADER_DONE = {
    "LoadImaged": "VoxPipe's loader reads the input (`-i`); the bundle's reader is not used",
    "LoadImageD": "VoxPipe's loader reads the input",
    "EnsureChannelFirstd": "VoxPipe's loaders give channel-first images already",
    "EnsureChannelFirstD": "VoxPipe's loaders give channel-first images already",
    "EnsureTyped": "VoxPipe's images are float32 MetaTensors already",
    "EnsureTypeD": "VoxPipe's images are float32 MetaTensors already",
    "ToTensord": "VoxPipe's images are tensors already",
}
WEIGHT_NAMES = ("model.pt", "model.pth", "model.safetensors")


@dataclass
class Imported:
    """What `bundle import` writes and `bundle info` shows."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    network: str = ""
    weights: Path | None = None


def _short(target: str) -> str:
    name = target
    for prefix in (*NETWORK_PREFIXES, "monai.transforms.", "monai.inferers.", "monai."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.rsplit(".", 1)[-1] if name.startswith("monai.") else name


def _literal(value: Any, where: str) -> Any:
    """A resolved value as YAML-safe literals; markers left over (devices, code objects) are refused."""
    if isinstance(value, Dtype):
        return value.name
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_literal(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _literal(v, f"{where}#{k}") for k, v in value.items()}
    if isinstance(value, Component):
        raise BundleError(f"`{where}`: refused: a `{value.target}` object where VoxPipe needs a literal value")
    raise BundleError(f"`{where}`: refused: {type(value).__name__} where VoxPipe needs a literal value")


class Mapper:
    def __init__(self, bundle: Bundle, weights_dir: Path | None = None) -> None:
        self.bundle = bundle
        self.notes: list[str] = []
        self.arch_cache: dict[str, dict] = {}

    # ------------------------------------------------------------------ network

    def network(self) -> tuple[str, dict[str, Any]]:
        b = self.bundle
        ref = "network_def" if b.has("network_def") else "network" if b.has("network") else None
        if ref is None:
            raise BundleError(f"{b.config_path.name}: no `network_def` (the network); cannot import")
        net = b.resolve(ref)
        if not isinstance(net, Component):
            raise BundleError(f"`{ref}`: refused: the network must be a `_target_` mapping of a monai.networks.nets class")
        name = _short(net.target)
        from voxpipe_plugins.deep.networks import NETWORKS

        if name not in NETWORKS:
            raise BundleError(
                f"`{net.path}#_target_`: {net.target!r}: refused: not on VoxPipe's network allow-list ({', '.join(sorted(NETWORKS))})"
            )
        args: dict[str, Any] = {}
        for key in net.args:
            value = b.arg(net, key)
            if isinstance(value, Device) or key == "device":
                continue
            if name == "DiNTS" and key == "dints_space":
                value = self.topology(value, f"{net.path}#{key}")
            elif isinstance(value, (ArchItem, ArchCode)):
                value = self.arch_value(value, f"{net.path}#{key}")
            args[key] = _literal(value, f"{net.path}#{key}")
        return name, self.fit_signature(name, args, net.path)

    def fit_signature(self, name: str, args: dict[str, Any], where: str) -> dict[str, Any]:
        """Arguments the installed MONAI no longer takes are dropped with a note; the rest checked."""
        from monai.networks import nets

        from voxpipe_plugins.deep.networks import check_network

        params = inspect.signature(getattr(nets, name)).parameters
        kept = {}
        for key, value in args.items():
            if key in params:
                kept[key] = value
            else:
                self.notes.append(f"`{where}#{key}` = {value!r} dropped: this MONAI's {name} has no such argument")
        problems = check_network(name, kept)
        if problems:
            raise BundleError(f"`{where}`: refused: {problems[0]}")
        return kept

    def topology(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Component) or _short(value.target) != "TopologyInstance":
            raise BundleError(f"`{where}`: refused: DiNTS needs a monai.networks.nets.TopologyInstance here")
        out = {}
        for key in value.args:
            item = self.bundle.arg(value, key)
            if key == "device" or isinstance(item, Device):
                continue
            if key == "arch_code":
                item = [self.arch_value(x, f"{where}#{key}") for x in item] if isinstance(item, list) else item
            out[key] = _literal(item, f"{where}#{key}")
        return out

    def arch_value(self, value: Any, where: str) -> Any:
        if isinstance(value, ArchItem):
            return self.load_arch(value.code.path, where).get(value.key, None) or _missing(where, value.key)
        if isinstance(value, list):
            return value
        raise BundleError(f"`{where}`: refused: a DiNTS architecture code must be indexed by name (`@arch_ckpt['arch_code_a']`)")

    def load_arch(self, path: str, where: str) -> dict[str, Any]:
        """A DiNTS architecture code: ``torch.load(weights_only=True)`` with only NumPy array types allowed."""
        if path in self.arch_cache:
            return self.arch_cache[path]
        file = self.inside(path, where)
        import numpy as np
        import torch

        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # NumPy 1.x
            from numpy.core.multiarray import _reconstruct
        # The explicit NumPy allow-list: arrays (rebuilt by _reconstruct) of plain numeric dtypes, nothing else.
        allowed = [
            np.ndarray,
            np.dtype,
            _reconstruct,
            *(type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8", "bool")),
        ]
        try:
            with torch.serialization.safe_globals(allowed):
                data = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError for anything beyond arrays, others for damage
            first = " ".join(str(exc).split())[:100]
            raise BundleError(f"`{where}`: {file.name}: refused: not an architecture code of NumPy arrays and tensors ({first})") from None
        if not isinstance(data, dict):
            raise BundleError(f"`{where}`: {file.name}: refused: expected a mapping of arrays")
        out = {str(k): np.asarray(v.cpu() if hasattr(v, "cpu") else v).tolist() for k, v in data.items()}
        self.arch_cache[path] = out
        return out

    def inside(self, path: str, where: str) -> Path:
        root = self.bundle.root.resolve()
        text = path[2:] if path.startswith("./") else path
        file = (root / text).resolve() if not Path(text).is_absolute() else Path(text).resolve()
        if not file.is_relative_to(root):
            raise BundleError(f"`{where}`: {path!r}: refused: the file is outside the bundle folder")
        if not file.is_file():
            raise MissingWeights(f"`{where}`: {file.relative_to(root)} not found in the bundle (it comes with the bundle's models)")
        return file

    # ------------------------------------------------------------------ preprocessing

    def transforms(self, ref: str) -> list[Component]:
        b = self.bundle
        if not b.has(ref):
            return []
        compose = b.resolve(ref)
        if isinstance(compose, list):
            items = compose
        elif isinstance(compose, Component) and _short(compose.target) == "Compose":
            items = b.arg(compose, "transforms", [])
        else:
            raise BundleError(f"`{ref}`: refused: expected a Compose of transforms")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, Component):
                raise BundleError(f"`{ref}#transforms#{i}`: refused: not a `_target_` transform")
            out.append(item)
        return out

    def preprocessing(self, image_key: str) -> tuple[list[dict], dict[str, Any]]:
        from voxpipe import monai_adapter

        stages: list[dict] = []
        spacing_padding = "border"
        for t in self.transforms("preprocessing"):
            name = _short(t.target)
            if name in LOADER_DONE:
                self.notes.append(f"`{t.path}` {name} left out: {LOADER_DONE[name]}")
                continue
            args = {}
            for key in t.args:
                value = self.bundle.arg(t, key)
                if isinstance(value, Device):
                    continue
                args[key] = _literal(value, f"{t.path}#{key}")
            keys = args.get("keys")
            keys = [keys] if isinstance(keys, str) else keys
            if keys != [image_key]:
                raise BundleError(f"`{t.path}#keys`: {keys!r}: refused: VoxPipe maps transforms of the image key `{image_key}` only")
            args["keys"] = [NET_KEY]
            if name in ("Spacingd", "SpacingD", "SpacingDict"):
                spacing_padding = args.get("padding_mode", "border")
            stage_id = f"monai.{name}"
            spec = monai_adapter.spec_for(stage_id)
            if spec is None:
                raise BundleError(f"`{t.path}`: {name}: refused: {monai_adapter.why_not(stage_id)}")
            try:
                spec.params.model_validate(args)
            except Exception as exc:  # noqa: BLE001 - pydantic ValidationError
                first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
                loc = ".".join(str(x) for x in first.get("loc", ()))
                raise BundleError(f"`{t.path}`: {name}({loc}): refused: {first['msg'].removeprefix('Value error, ')}") from None
            stages.append({"use": stage_id, "with": args})
        return stages, {"invert_padding": spacing_padding if spacing_padding in ("border", "zeros", "reflection") else "border"}

    # ------------------------------------------------------------------ inferer

    def inferer(self) -> dict[str, Any]:
        b = self.bundle
        if not b.has("inferer"):
            raise BundleError(f"{b.config_path.name}: no `inferer`; VoxPipe runs SlidingWindowInferer bundles")
        inf = b.resolve("inferer")
        if not isinstance(inf, Component) or _short(inf.target) != "SlidingWindowInferer":
            target = inf.target if isinstance(inf, Component) else type(inf).__name__
            raise BundleError(f"`inferer`: {target!r}: refused: VoxPipe maps SlidingWindowInferer only")
        out: dict[str, Any] = {"mode": "constant"}  # SlidingWindowInferer's default (segment.deep's is gaussian)
        names = {
            "roi_size": "roi_size",
            "sw_batch_size": "sw_batch_size",
            "overlap": "overlap",
            "mode": "mode",
            "sigma_scale": "sigma_scale",
        }
        for key in inf.args:
            value = b.arg(inf, key)
            if key in ("device", "sw_device", "progress", "cache_roi_weight_map", "cpu_thresh", "buffer_steps", "buffer_dim", "with_coord"):
                self.notes.append(f"`inferer#{key}` left out: VoxPipe's run decides devices and buffering")
                continue
            if key == "padding_mode":
                out["padding_mode"] = _literal(value, "inferer#padding_mode")
                continue
            if key == "cval" and value in (0, 0.0):
                continue
            if key not in names:
                raise BundleError(f"`inferer#{key}`: refused: SlidingWindowInferer argument `{key}` is not mapped by VoxPipe")
            out[names[key]] = _literal(value, f"inferer#{key}")
        if "roi_size" not in out:
            raise BundleError("`inferer#roi_size`: missing")
        if isinstance(out["roi_size"], int):
            out["roi_size"] = [out["roi_size"]] * 3
        return out

    # ------------------------------------------------------------------ postprocessing

    def postprocessing(self, image_key: str) -> dict[str, Any]:
        out: dict[str, Any] = {"activation": "none", "output": None}
        discrete = False
        for t in self.transforms("postprocessing"):
            name = _short(t.target)
            arg = lambda key, default=None, t=t: self.bundle.arg(t, key, default)  # noqa: E731
            if name in ("Activationsd", "ActivationsD", "ActivationsDict"):
                if arg("softmax", False):
                    out["activation"] = "softmax"
                elif arg("sigmoid", False):
                    out["activation"] = "sigmoid"
                if arg("other") is not None:
                    raise BundleError(f"`{t.path}#other`: refused: a callable activation")
            elif name in ("Invertd", "InvertD", "InvertDict"):
                orig = arg("orig_keys")
                if (orig if isinstance(orig, str) else (orig or [None])[0]) != image_key:
                    raise BundleError(f"`{t.path}#orig_keys`: refused: VoxPipe inverts onto the image key `{image_key}` only")
                out["invert_to"] = "image"
                nearest = bool(arg("nearest_interp", True))
                if discrete:
                    out["invert"] = "labels"
                    if not nearest:
                        self.notes.append(
                            f"`{t.path}`: the label map is inverted with nearest interpolation (MONAI's bilinear leaves fractional labels)"
                        )
                else:
                    out["invert"] = "probabilities"
                    out["invert_interp"] = "nearest" if nearest else "bilinear"
            elif name in ("AsDiscreted", "AsDiscreteD", "AsDiscreteDict"):
                if arg("to_onehot") not in (None, False):
                    raise BundleError(f"`{t.path}#to_onehot`: refused: VoxPipe writes label maps, not one-hot channels")
                if arg("argmax", False):
                    out["output"] = "argmax"
                elif arg("threshold") is not None:
                    out["output"], out["threshold"] = "threshold", float(arg("threshold"))
                else:
                    raise BundleError(f"`{t.path}`: refused: AsDiscreted without argmax or threshold")
                discrete = True
            elif name in ("Lambdad", "LambdaD", "LambdaDict"):
                func = arg("func")
                if not isinstance(func, LabelRule):
                    raise BundleError(f"`{t.path}#func`: refused: only label lambdas (`torch.where(x[[k]] > 0, v, ...)`) are read")
                if (
                    not discrete
                    or out["output"] != "threshold"
                    or any(thr < 0 or thr >= 1 for _, thr, _ in func.rules)
                    or func.default != 0
                ):
                    raise BundleError(
                        f"`{t.path}#func`: refused: a label lambda is read only after a threshold, with tests `> t` (0 <= t < 1) and 0 otherwise"
                    )
                out["channel_values"] = [[c, v] for c, _, v in func.rules]
            elif name in ("KeepLargestConnectedComponentd", "KeepLargestConnectedComponentD", "KeepLargestConnectedComponentDict"):
                labels = arg("applied_labels")
                for key in ("is_onehot", "independent", "connectivity", "num_components"):
                    if arg(key) not in (None, {"is_onehot": False, "independent": True, "num_components": 1}.get(key)):
                        raise BundleError(f"`{t.path}#{key}`: refused: only KeepLargestConnectedComponent's defaults are mapped")
                out["keep_largest"] = [labels] if isinstance(labels, int) else labels
                out["keep_largest_after_invert"] = "invert_to" in out
            elif name in ("SaveImaged", "SaveImageD", "SaveImageDict"):
                self.notes.append(f"`{t.path}` SaveImaged becomes write.nifti (label.nii.gz in each case's folder)")
            elif name in LOADER_DONE:
                continue
            elif discrete and "invert_to" in out:  # on the label map, on the input grid: a reviewed MONAI stage after segment.deep
                out.setdefault("after", []).append(self.label_stage(t, name))
            else:
                raise BundleError(
                    f"`{t.path}`: {name}: refused: VoxPipe maps this postprocessing transform only after AsDiscreted and Invertd "
                    "(as a monai stage on the label map)"
                )
        if out["output"] is None:
            raise BundleError("`postprocessing`: refused: no AsDiscreted (argmax or threshold); VoxPipe writes label maps")
        if out.get("keep_largest") is None:
            out.pop("keep_largest_after_invert", None)
        return out

    def label_stage(self, t: Component, name: str) -> dict[str, Any]:
        """A postprocessing transform of the label map as a ``monai.<Name>`` stage on ``label`` (reviewed transforms only)."""
        from voxpipe import monai_adapter

        args = {k: _literal(self.bundle.arg(t, k), f"{t.path}#{k}") for k in t.args}
        keys = args.get("keys")
        if (keys if isinstance(keys, list) else [keys]) != ["pred"]:
            raise BundleError(f"`{t.path}#keys`: refused: VoxPipe maps postprocessing of the `pred` key only")
        args["keys"] = ["label"]
        if name.startswith("MapLabelValue") and "dtype" not in args:  # MONAI's default float32 is not a label map
            top = max([0, *(v for v in args.get("target_labels") or [] if isinstance(v, (int, float)))])
            args["dtype"] = "uint8" if top < 256 else "uint16" if top < 65536 else "int32"
            self.notes.append(f"`{t.path}` MapLabelValued writes {args['dtype']} labels (MONAI's default is float32)")
        stage_id = f"monai.{name}"
        spec = monai_adapter.spec_for(stage_id)
        if spec is None:
            raise BundleError(f"`{t.path}`: {name}: refused: {monai_adapter.why_not(stage_id)}")
        try:
            spec.params.model_validate(args)
        except Exception as exc:  # noqa: BLE001 - pydantic ValidationError
            first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
            raise BundleError(f"`{t.path}`: {name}: refused: {first['msg'].removeprefix('Value error, ')}") from None
        return {"use": stage_id, "with": args}

    # ------------------------------------------------------------------ weights, labels, whole config

    def weights(self) -> Path:
        """The file the bundle's CheckpointLoader names (read as data), else models/model.pt."""
        root = self.bundle.root
        named = self.load_path()
        if named is not None:
            file = self.inside_or_none(named)
            if file is not None and file.suffix.lower() in (".pt", ".pth", ".safetensors"):
                return file
        for name in WEIGHT_NAMES:
            found = self.inside_or_none(f"models/{name}")  # a link out of the bundle is refused, not followed
            if found is not None:
                return found
        if (root / "models" / "model.ts").is_file():
            raise BundleError(
                f"{root.name}: only models/model.ts (TorchScript) is present; loading TorchScript deserialises code, so VoxPipe "
                "refuses it: get the bundle's models/model.pt (a state dict) instead"
            )
        shown = f"models/{Path(named).name}" if named else "models/model.pt"
        raise MissingWeights(f"{root.name}: {shown} not found; download the bundle with its weights (docs/bundles.md)")

    def load_path(self) -> str | None:
        b = self.bundle
        candidates = ["checkpointloader#load_path"]
        handlers = b.config.get("handlers")
        if isinstance(handlers, list):
            candidates += [
                f"handlers#{i}#load_path"
                for i, h in enumerate(handlers)
                if isinstance(h, dict) and "CheckpointLoader" in str(h.get("_target_"))
            ]
        for ref in candidates:
            if b.has(ref):
                value = b.resolve(ref)
                if isinstance(value, str):
                    return value
        return None

    def inside_or_none(self, path: str) -> Path | None:
        root = self.bundle.root.resolve()
        text = path[2:] if path.startswith("./") else path
        file = (root / text).resolve() if not Path(text).is_absolute() else Path(text).resolve()
        if not file.is_relative_to(root):
            raise BundleError(f"checkpoint {path!r}: refused: the weights file is outside the bundle folder")
        return file if file.is_file() else None

    def label_names(self, channels: int, post: dict[str, Any]) -> dict[int, str] | None:
        fmt = self.bundle.metadata.get("network_data_format", {}) if isinstance(self.bundle.metadata, dict) else {}
        outputs = fmt.get("outputs", {}) if isinstance(fmt, dict) else {}
        pred = next(iter(outputs.values()), {}) if isinstance(outputs, dict) and outputs else {}
        channel_def = pred.get("channel_def") if isinstance(pred, dict) else None
        if not isinstance(channel_def, dict):
            return None
        names = {int(k): str(v)[:128] for k, v in channel_def.items() if str(k).isdigit()}
        if post.get("channel_values"):
            out = {0: "background"}
            out.update({value: names.get(channel, f"class_{value}") for channel, value in post["channel_values"]})
            return out
        if post["output"] == "threshold" and channels > 1:
            return {0: "background", **{c + 1: names.get(c, f"class_{c + 1}") for c in range(channels)}}
        return names or None


def _missing(where: str, key: str) -> Any:
    raise BundleError(f"`{where}`: the architecture code has no `{key}`")


def _image_key(bundle: Bundle) -> str:
    key = bundle.resolve("image_key") if bundle.has("image_key") else "image"
    return key if isinstance(key, str) else "image"


def import_bundle(root: Path, config_path: Path, *, dicom_seg: bool = False, require_weights: bool = True) -> Imported:
    """Map the bundle at ``root`` onto a config that will live at ``config_path`` (weights named relative to it).

    ``require_weights=False`` (``bundle info``) maps a bundle whose weights are not there yet, with a note.
    """
    bundle = Bundle(root)
    ignored = screen(bundle)
    mapper = Mapper(bundle)
    if ignored:
        mapper.notes.append(f"not needed once -i supplies the data and VoxPipe runs the case: {', '.join(ignored)}")
    image_key = _image_key(bundle)
    try:
        network, args = mapper.network()
    except MissingWeights as exc:  # a DiNTS architecture file not there yet: describe the rest
        if require_weights:
            raise
        mapper.notes.append(str(exc))
        net = bundle.raw("network_def") if bundle.has("network_def") else {}
        network, args = _short(str(net.get("_target_", "?"))) if isinstance(net, dict) else "?", {}
    pre, invert_options = mapper.preprocessing(image_key)
    inferer = mapper.inferer()
    post = mapper.postprocessing(image_key)
    from voxpipe.digest import file_sha256

    try:
        weights: Path | None = mapper.weights()
    except MissingWeights as exc:
        if require_weights:
            raise
        mapper.notes.append(str(exc))
        weights = None
    target = weights if weights is not None else root / "models" / "model.pt"
    rel = os.path.relpath(target.resolve(), config_path.resolve().parent)
    deep: dict[str, Any] = {"key": NET_KEY, "drop_key": True, "network": network, "args": args, "weights": rel}
    if weights is not None:
        deep["weights_sha256"] = file_sha256(weights)
    deep.update(inferer)
    deep["output"] = post["output"]
    for key in ("threshold", "channel_values", "keep_largest", "keep_largest_after_invert", "invert_to", "invert", "invert_interp"):
        if key in post:
            deep[key] = post[key]
    deep["activation"] = post["activation"]
    if "invert_to" in post:
        deep["invert_padding"] = invert_options["invert_padding"]
    amp = bundle.resolve("evaluator#amp") if bundle.has("evaluator#amp") else None
    if isinstance(amp, bool):
        deep["amp"] = amp
    channels = int(args.get("out_channels", args.get("num_classes", 1)))
    names = mapper.label_names(channels, post)
    for stage in post.get("after", []):  # values a later MapLabelValued writes keep their class's name
        if stage["use"].startswith("monai.MapLabelValue"):
            names = dict(names or {0: "background", **{c: f"class_{c}" for c in range(1, max(channels, 2))}})
            for orig, target in zip(stage["with"].get("orig_labels") or [], stage["with"].get("target_labels") or []):
                if isinstance(orig, int) and isinstance(target, int):
                    names.setdefault(target, names.get(orig, f"class_{target}"))
    if names:
        deep["label_names"] = names
    if "invert_to" not in deep:
        mapper.notes.append(
            "the bundle has no Invertd: its label map is taken back to the input grid (nearest), as VoxPipe keeps labels on the image's grid"
        )
        deep.update(invert_to="image", invert="labels", invert_padding=invert_options["invert_padding"])
    stages: list[dict] = [
        {"use": "load.auto"},
        {"use": "bundle.working_copy", "with": {"key": "image", "output_key": NET_KEY}},
        *pre,
        {"use": "segment.deep", "id": "network", "with": deep},
        *post.get("after", []),
        {"use": "write.nifti", "with": {"keys": ["label"]}},
    ]
    meta = bundle.metadata if isinstance(bundle.metadata, dict) else {}
    name = str(meta.get("name") or root.name)[:80]
    if dicom_seg:  # the segments are named from the label table; the algorithm is the bundle
        stages.append({"use": "write.dicom_seg", "with": {"algorithm": " ".join(name.split())[:64] or "MONAI bundle"}})
    config = {
        "version": 1,
        "name": _slug(root.name),
        "description": f"Imported from the MONAI bundle {name} {str(meta.get('version', ''))[:20]} by `voxpipe bundle import`.".replace(
            "  ", " "
        ),
        "device": "auto",
        "stages": stages,
    }
    return Imported(config, mapper.notes, network, weights)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:60] or "bundle"
