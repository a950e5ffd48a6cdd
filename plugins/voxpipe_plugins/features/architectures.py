"""The VGG layer tables (Simonyan & Zisserman 2015, configurations A, B, D, E), pure data.

Light on purpose (no torch): the plugin's parameter models and ``voxpipe plugins`` use these
tables to check architecture names and layer names without importing anything heavy.
Layer names follow the paper (``conv3_2``, ``relu3_2``, ``pool3``); each maps to the index
of the module in ``features`` that torchvision gives it, so ``features.<i>`` keys line up.
"""

from __future__ import annotations

# "M" is a 2x2 max pool; numbers are the output channels of a 3x3 convolution.
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
ARCHITECTURES: tuple[str, ...] = tuple(sorted([*CONFIGS, *(f"{name}_bn" for name in CONFIGS)]))
FC_LAYERS = {"fc6": 1, "fc7": 4}  # after the ReLU of classifier.0 / classifier.3 (torchvision's indices)


def base_config(arch: str) -> tuple[list[int | str], bool]:
    """``"vgg16_bn"`` -> (layer config of vgg16, batch norm True)."""
    batch_norm = arch.endswith("_bn")
    name = arch[:-3] if batch_norm else arch
    if name not in CONFIGS:
        raise ValueError(f"unknown VGG architecture `{arch}`; choose one of {', '.join(ARCHITECTURES)}")
    return CONFIGS[name], batch_norm


def scaled(channels: int, width: float) -> int:
    """Channels of a narrowed network (``width`` < 1, for tests and small data), at least 1."""
    return max(1, int(round(channels * width)))


def layer_index(arch: str) -> dict[str, int]:
    """Paper layer names -> index in ``features`` (torchvision numbering), e.g. vgg16 ``pool5`` -> 30."""
    config, batch_norm = base_config(arch)
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in config:
        if item == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 1
            continue
        names[f"conv{block}_{conv}"] = index
        index += 1
        if batch_norm:
            names[f"bn{block}_{conv}"] = index
            index += 1
        names[f"relu{block}_{conv}"] = index
        index += 1
        conv += 1
    return names


def layer_names(arch: str, spatial_dims: int = 2) -> list[str]:
    """Every layer that can be extracted: the ``features`` layers, then fc6/fc7 (2D only)."""
    names = list(layer_index(arch))
    return names + (list(FC_LAYERS) if spatial_dims == 2 else [])


def state_dict_shapes(
    arch: str, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, spatial_dims: int = 2, classifier: bool = True
) -> dict[str, tuple[int, ...]]:
    """The state dict a network of this architecture has (names and shapes), computed without torch.

    Used to tell a user which architecture a checkpoint that does not fit was made for.
    """
    config, batch_norm = base_config(arch)
    kernel = (3,) * spatial_dims
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, in_channels
    for item in config:
        if item == "M":
            index += 1
            continue
        out = scaled(int(item), width)
        shapes[f"features.{index}.weight"] = (out, channels, *kernel)
        shapes[f"features.{index}.bias"] = (out,)
        index += 1
        if batch_norm:
            for suffix in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"features.{index}.{suffix}"] = (out,)
            shapes[f"features.{index}.num_batches_tracked"] = ()
            index += 1
        index += 1
        channels = out
    if classifier and spatial_dims == 2:
        hidden = scaled(4096, width)
        flat = channels * 7 * 7
        shapes.update(
            {
                "classifier.0.weight": (hidden, flat),
                "classifier.0.bias": (hidden,),
                "classifier.3.weight": (hidden, hidden),
                "classifier.3.bias": (hidden,),
                "classifier.6.weight": (num_classes, hidden),
                "classifier.6.bias": (num_classes,),
            }
        )
    return shapes


def guess_architecture(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The full-width torchvision VGG whose ``features`` keys and shapes match ``shapes``, if any."""
    feature_shapes = {k: tuple(v) for k, v in shapes.items() if k.startswith("features.")}
    if not feature_shapes:
        return None
    for arch in ARCHITECTURES:
        for dims in (2, 3):
            for channels in (3, 1):
                expected = state_dict_shapes(arch, in_channels=channels, spatial_dims=dims, classifier=False)
                if expected == feature_shapes:
                    return f"{arch}{'' if dims == 2 else ' (3D)'}{'' if channels == 3 else ' with 1 input channel'}"
    return None
