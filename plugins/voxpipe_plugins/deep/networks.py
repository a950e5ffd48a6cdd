"""The network allowlist and light argument checks (no torch, no MONAI: used by `voxpipe validate`).

A config names a network from :data:`NETWORKS` and gives its constructor arguments as
literals. At validation time each argument is checked against a small type table written
here by hand from the MONAI signatures (name known? value of a plausible type?). At build
time the real signature is checked too (``inspect.signature(cls).bind(**args)``), so a
MONAI release that renames an argument still fails with a clear line, before any case runs.
"""

from __future__ import annotations

from typing import Any

from voxpipe.suggest import did_you_mean

# Type codes: int, float, bool, str; ints = int or list of ints; intlist = list of ints;
# nested = list of (int or list of ints); act = str or [str, {options}]; floats = float or list of floats;
# "?" suffix: None allowed too.
_ACT = "act"
NETWORKS: dict[str, dict[str, str]] = {
    "UNet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "channels": "intlist",
        "strides": "ints",
        "kernel_size": "ints",
        "up_kernel_size": "ints",
        "num_res_units": "int",
        "act": _ACT,
        "norm": _ACT,
        "dropout": "float",
        "bias": "bool",
        "adn_ordering": "str",
    },
    "AttentionUnet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "channels": "intlist",
        "strides": "ints",
        "kernel_size": "ints",
        "up_kernel_size": "ints",
        "dropout": "float",
    },
    "BasicUNet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "features": "intlist",
        "act": _ACT,
        "norm": _ACT,
        "bias": "bool",
        "dropout": "floats",
        "upsample": "str",
    },
    "BasicUNetPlusPlus": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "features": "intlist",
        "deep_supervision": "bool",
        "act": _ACT,
        "norm": _ACT,
        "bias": "bool",
        "dropout": "floats",
        "upsample": "str",
    },
    "SegResNet": {
        "spatial_dims": "int",
        "init_filters": "int",
        "in_channels": "int",
        "out_channels": "int",
        "dropout_prob": "float?",
        "act": _ACT,
        "norm": _ACT,
        "norm_name": "str",
        "num_groups": "int",
        "use_conv_final": "bool",
        "blocks_down": "intlist",
        "blocks_up": "intlist",
        "upsample_mode": "str",
    },
    "SegResNetDS": {
        "spatial_dims": "int",
        "init_filters": "int",
        "in_channels": "int",
        "out_channels": "int",
        "act": _ACT,
        "norm": _ACT,
        "blocks_down": "intlist",
        "blocks_up": "intlist?",
        "dsdepth": "int",
        "upsample_mode": "str",
        "resolution": "floats?",
    },
    "DynUNet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "kernel_size": "nested",
        "strides": "nested",
        "upsample_kernel_size": "nested",
        "filters": "intlist?",
        "dropout": "floats?",
        "norm_name": _ACT,
        "act_name": _ACT,
        "deep_supervision": "bool",
        "deep_supr_num": "int",
        "res_block": "bool",
        "trans_bias": "bool",
    },
    "UNETR": {
        "in_channels": "int",
        "out_channels": "int",
        "img_size": "ints",
        "feature_size": "int",
        "hidden_size": "int",
        "mlp_dim": "int",
        "num_heads": "int",
        "proj_type": "str",
        "norm_name": _ACT,
        "conv_block": "bool",
        "res_block": "bool",
        "dropout_rate": "float",
        "spatial_dims": "int",
        "qkv_bias": "bool",
        "save_attn": "bool",
    },
    "SwinUNETR": {
        "in_channels": "int",
        "out_channels": "int",
        "patch_size": "int",
        "depths": "intlist",
        "num_heads": "intlist",
        "window_size": "ints",
        "qkv_bias": "bool",
        "mlp_ratio": "float",
        "feature_size": "int",
        "norm_name": _ACT,
        "drop_rate": "float",
        "attn_drop_rate": "float",
        "dropout_path_rate": "float",
        "normalize": "bool",
        "patch_norm": "bool",
        "use_checkpoint": "bool",
        "spatial_dims": "int",
        "downsample": "str",
        "use_v2": "bool",
    },
    "VNet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "act": _ACT,
        "dropout_prob": "float?",
        "dropout_prob_down": "float?",
        "dropout_prob_up": "floats",
        "dropout_dim": "int",
        "bias": "bool",
    },
    "DiNTS": {
        "dints_space": "topology",
        "in_channels": "int",
        "num_classes": "int",
        "act_name": _ACT,
        "norm_name": _ACT,
        "spatial_dims": "int",
        "use_downsample": "bool",
        "node_a": "grid?",
    },
    "HighResNet": {
        "spatial_dims": "int",
        "in_channels": "int",
        "out_channels": "int",
        "norm_type": _ACT,
        "acti_type": _ACT,
        "dropout_prob": "float?",
        "bias": "bool",
        "channel_matching": "str",
    },
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "UNet": ("spatial_dims", "in_channels", "out_channels", "channels", "strides"),
    "AttentionUnet": ("spatial_dims", "in_channels", "out_channels", "channels", "strides"),
    "DynUNet": ("spatial_dims", "in_channels", "out_channels", "kernel_size", "strides", "upsample_kernel_size"),
    "UNETR": ("in_channels", "out_channels", "img_size"),
    "SwinUNETR": ("in_channels", "out_channels"),
    "DiNTS": ("dints_space", "in_channels", "num_classes"),
}

# DiNTS takes its searched topology as a TopologyInstance object; a config gives that object's
# literal arguments as a mapping (`dints_space: {arch_code: [arch_code_a, arch_code_c], num_blocks: 12, ...}`).
TOPOLOGY: dict[str, str] = {
    "arch_code": "archcode",
    "channel_mul": "float",
    "num_blocks": "int",
    "num_depths": "int",
    "spatial_dims": "int",
    "act_name": _ACT,
    "norm_name": _ACT,
    "use_downsample": "bool",
}
"""Arguments without a default in MONAI's signature."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_list(v: Any, item) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(item(x) for x in v)


_CHECKS = {
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "ints": (lambda v: _is_int(v) or _is_list(v, _is_int), "an integer or a list of integers"),
    "intlist": (lambda v: _is_list(v, _is_int), "a list of integers"),
    "floats": (lambda v: _is_float(v) or _is_list(v, _is_float), "a number or a list of numbers"),
    "nested": (lambda v: _is_list(v, lambda x: _is_int(x) or _is_list(x, _is_int)), "a list of integers or of integer lists"),
    "act": (
        lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], dict)),
        "a name or [name, {options}]",
    ),
}


def _is_grid(v: Any) -> bool:
    """A (nested) list of numbers, at most 3 levels deep: DiNTS node and architecture codes."""
    if _is_float(v):
        return True
    return (
        isinstance(v, (list, tuple))
        and len(v) <= 4096
        and all(_is_float(x) or (isinstance(x, (list, tuple)) and _is_grid_row(x)) for x in v)
    )


def _is_grid_row(v: Any) -> bool:
    return len(v) <= 4096 and all(
        _is_float(x) or (isinstance(x, (list, tuple)) and len(x) <= 64 and all(_is_float(y) for y in x)) for x in v
    )


def _is_topology(v: Any) -> bool:
    return isinstance(v, dict) and not check_arguments("DiNTS dints_space", TOPOLOGY, v)


_CHECKS["grid"] = (_is_grid, "a list of number lists")
_CHECKS["archcode"] = (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_grid(x) for x in v), "[arch_code_a, arch_code_c]")
_CHECKS["topology"] = (_is_topology, f"a mapping of TopologyInstance arguments ({', '.join(TOPOLOGY)}) with arch_code")


def check_arguments(name: str, table: dict[str, str], args: dict[str, Any]) -> list[str]:
    """Problems with literal arguments against a type table (names known, values of a plausible type)."""
    problems = []
    for arg, value in args.items():
        code = table.get(arg)
        if code is None:
            hint = did_you_mean(arg, list(table))
            problems.append(f"{name} has no argument `{arg}`{hint or ''}")
            continue
        optional = code.endswith("?")
        check, wanted = _CHECKS[code.rstrip("?")]
        if value is None and optional:
            continue
        if not check(value):
            shown = repr(value)
            problems.append(f"{name} argument `{arg}` must be {wanted}{' or null' if optional else ''}, got {shown[:60]}")
    return problems


def check_network(name: str, args: dict[str, Any]) -> list[str]:
    """Problems with a network name and its arguments, one line each (empty: fine)."""
    if name not in NETWORKS:
        hint = did_you_mean(name, list(NETWORKS))
        return [f"network `{name}` is not in the allowlist{hint or ''} (allowed: {', '.join(sorted(NETWORKS))})"]
    table = NETWORKS[name]
    problems = []
    missing = [a for a in REQUIRED.get(name, ()) if a not in args]
    if missing:
        problems.append(f"{name} needs argument{'s' if len(missing) > 1 else ''} {', '.join(f'`{a}`' for a in missing)}")
    problems.extend(check_arguments(name, table, args))
    if name == "DiNTS" and isinstance(args.get("dints_space"), dict) and "arch_code" not in args["dints_space"]:
        problems.append("DiNTS argument `dints_space` needs `arch_code` (the searched topology)")
    return problems
