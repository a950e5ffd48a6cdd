"""Test helpers for MONAI bundles: a fixture bundle copied with small overrides, random weights, MONAI's own inference.

The overrides (a smaller sliding window or network, a CPU device, a reader MONAI can load
here) are written into the copied config, so MONAI's reference and VoxPipe's import read
the same bundle. The reference runs the bundle with MONAI's ``ConfigParser``, which
executes its expressions: that is fine in a test, where the bundle is ours.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BUNDLES = Path(__file__).parent / "data" / "bundles"
DROP = "<drop>"
"""An override value that removes the key."""


def config_file(bundle: Path) -> Path:
    for name in ("inference.json", "inference.yaml"):
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    raise FileNotFoundError(bundle)


def read_config(bundle: Path) -> dict:
    path = config_file(bundle)
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def write_config(bundle: Path, config: dict) -> None:
    path = config_file(bundle)
    path.write_text(json.dumps(config, indent=2) if path.suffix == ".json" else yaml.safe_dump(config, sort_keys=False))


def set_path(config: dict, ref: str, value: Any) -> None:
    parts = ref.split("#")
    node: Any = config
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value == DROP:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def copy_bundle(name: str, target: Path, overrides: dict[str, Any] | None = None) -> Path:
    """tests/data/bundles/<name> copied to ``target`` with ``overrides`` ({"inferer#roi_size": [32, 32, 32]}) applied."""
    bundle = target / name
    shutil.copytree(BUNDLES / name, bundle)
    (bundle / "models").mkdir(exist_ok=True)
    config = read_config(bundle)
    for ref, value in (overrides or {}).items():
        set_path(config, ref, value)
    write_config(bundle, config)
    return bundle


def _parser(bundle: Path, extra: dict[str, Any] | None = None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file(bundle)))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    for ref, value in (extra or {}).items():
        if value == DROP:
            parent, _, last = ref.rpartition("#")
            del parser[parent][last]
        else:
            parser[ref] = value
    return parser


def dints_arch_code(bundle: Path, num_blocks: int, num_depths: int, seed: int = 0) -> None:
    """A small searched DiNTS topology (TopologySearch.decode with a fixed seed) saved where the bundle loads it."""
    import torch
    from monai.networks.nets import TopologySearch

    torch.manual_seed(seed)
    search = TopologySearch(channel_mul=0.5, num_blocks=num_blocks, num_depths=num_depths, use_downsample=True)
    with torch.no_grad():
        search.log_alpha_a.normal_(0, 1)
        search.log_alpha_c.normal_(0, 1)
    node_a, arch_a, arch_c, _ = search.decode()
    code = {"node_a": np.asarray(node_a), "arch_code_a": np.asarray(arch_a), "arch_code_c": np.asarray(arch_c)}
    torch.save(code, bundle / "models" / "search_code_18590.pt")


def write_random_weights(bundle: Path, seed: int = 0, extra: dict[str, Any] | None = None) -> Path:
    """models/model.pt: the bundle's network_def with random weights (fixed seed), as a plain state dict."""
    import torch

    parser = _parser(bundle, extra)
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def")
    with torch.no_grad():  # a spread of outputs, so the label map is not one class
        for name, param in network.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    path = bundle / "models" / "model.pt"
    torch.save(network.state_dict(), path)
    return path


def monai_reference(bundle: Path, image: str | list[str], extra: dict[str, Any] | None = None) -> np.ndarray:
    """MONAI's own inference of the bundle on ``image``: preprocessing, inferer, postprocessing (minus saving)."""
    import torch

    parser = _parser(bundle, extra)
    transforms = parser["postprocessing"]["transforms"]
    parser["postprocessing"]["transforms"] = [t for t in transforms if not str(t.get("_target_", "")).startswith("SaveImage")]
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    pre = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    post = parser.get_parsed_content("postprocessing")
    data = pre({"image": image})
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], network)[0]
    data = post(data)
    return np.asarray(data["pred"])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def oblique_affine(spacing: tuple[float, float, float], degrees: float = 12.0, flip: bool = False) -> np.ndarray:
    """A rotated (about z and x) and optionally x-flipped affine with the given voxel sizes."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = rz @ rx @ np.diag(spacing)
    if flip:
        m = m @ np.diag([-1, 1, 1])
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = [-20.0, 15.0, -10.0]
    return affine


def phantom(shape: tuple[int, ...], seed: int = 0, low: float = -100.0, high: float = 300.0, channels: int = 0) -> np.ndarray:
    """Smooth blobs plus noise: structure for a random network to respond to."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    out = []
    for _channel in range(max(channels, 1)):
        vol = np.zeros(shape)
        for _ in range(4):
            centre = rng.uniform(-0.6, 0.6, 3)
            radius = rng.uniform(0.2, 0.5)
            vol += np.exp(-sum((g - c0) ** 2 for g, c0 in zip(grids, centre)) / (2 * radius**2))
        vol = low + (high - low) * vol / vol.max() + rng.normal(0, 10, shape)
        out.append(vol)
    return np.stack(out, -1) if channels else out[0]
