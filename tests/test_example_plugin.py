"""The example third-party plugin, installed for real and used through the CLI.

The example folder (``plugins/examples/voxpipe-example-invert``) is built and installed
with pip into a private ``--target`` folder, and ``voxpipe`` runs in subprocesses with
that folder on ``PYTHONPATH``: the same entry-point discovery a user's ``pip install``
goes through, without touching the project's virtual environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "examples" / "voxpipe-example-invert"
STAGE_ID = "example.invert"
ENTRY_POINT = "example_invert"
DISTRIBUTION = "voxpipe-example-invert"

AFFINE = np.array(
    [
        [0.0, -1.5, 0.0, 30.0],
        [2.0, 0.0, 0.0, -40.0],
        [0.0, 0.0, 3.0, 12.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)

CONFIG = f"""\
version: 1
name: invert-example
device: cpu
stages:
  - use: load.auto
  - use: {STAGE_ID}
  - use: write.nifti
"""


@pytest.fixture(scope="module")
def plugin_target(tmp_path_factory) -> Path:
    """Install the example with pip into an isolated folder; return that folder."""
    base = tmp_path_factory.mktemp("example-plugin")
    source = base / "source"  # build from a copy: pip's in-tree build would leave build/ and egg-info in the repo
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    target = base / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (target / "voxpipe_example_invert" / "plugin.py").is_file()
    return target


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("id-key") / "id.key"


def _env(key_file: Path, plugin_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["VOXPIPE_ID_KEY_FILE"] = str(key_file)
    for name in ("VOXPIPE_PLUGINS_ALLOW", "VOXPIPE_PLUGINS_BLOCK", "VOXPIPE_STRICT", "VOXPIPE_DEBUG"):
        env.pop(name, None)
    if plugin_dir is not None:
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(plugin_dir) + (os.pathsep + existing if existing else "")
    return env


def voxpipe(
    *args: str, key_file: Path, plugin_dir: Path | None, cwd: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = _env(key_file, plugin_dir)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "voxpipe", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "invert.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def test_plugins_lists_the_example(plugin_target, key_file):
    result = voxpipe("plugins", key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 0, result.stderr
    assert STAGE_ID in result.stdout
    assert DISTRIBUTION in result.stdout
    assert f"{ENTRY_POINT} ({DISTRIBUTION} 0.1.0)" in result.stdout
    assert f"plugin `{ENTRY_POINT}`" not in result.stderr  # not reported as skipped


def test_plugins_json_reports_the_example(plugin_target, key_file):
    result = voxpipe("plugins", "--json", key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    stage = next(s for s in data["stages"] if s["id"] == STAGE_ID)
    assert (stage["kind"], stage["plugin"], stage["distribution"], stage["version"]) == ("transform", ENTRY_POINT, DISTRIBUTION, "0.1.0")
    assert {p["name"] for p in stage["parameters"]} == {"key", "low", "high"}


def test_plugins_show_lists_parameters(plugin_target, key_file):
    result = voxpipe("plugins", "show", STAGE_ID, key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"{STAGE_ID}  (transform)  from plugin `{ENTRY_POINT}`, {DISTRIBUTION} 0.1.0")
    assert "Parameters:" in out
    for name in ("key", "low", "high"):
        assert f"\n  {name} " in out, f"parameter {name} missing:\n{out}"
    assert "Reads: {key}" in out


def test_pipeline_inverts_and_keeps_affine(plugin_target, key_file, tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) * 0.5 - 10.0
    data[1, 2, 3] = 250.0
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(data, AFFINE), str(inputs / "volume.nii.gz"))
    config = _write_config(tmp_path)
    out = tmp_path / "out"

    result = voxpipe("run", str(config), "-i", str(inputs), "-o", str(out), key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 0, result.stderr

    written = sorted(out.glob("case-*/image.nii.gz"))
    assert len(written) == 1, sorted(p.relative_to(out) for p in out.rglob("*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == [written[0].parent.name]
    assert manifest["plugins"]["used"][DISTRIBUTION] == "0.1.0"
    image = nib.load(str(written[0]))
    expected = data.max() + data.min() - data
    np.testing.assert_allclose(np.asarray(image.dataobj), expected, rtol=0, atol=1e-5)
    assert np.allclose(image.affine, AFFINE)
    history = json.loads((written[0].parent / "case.json").read_text())["history"]
    inverted = [h for h in history if h["op"] == STAGE_ID]
    assert inverted and inverted[0]["low"] == pytest.approx(float(data.min()))
    assert inverted[0]["high"] == pytest.approx(250.0)


def test_bounds_are_validated(plugin_target, key_file, tmp_path):
    config = _write_config(tmp_path)
    result = voxpipe(
        "validate", str(config), "--set", f"{STAGE_ID}.low=5", "--set", f"{STAGE_ID}.high=1", key_file=key_file, plugin_dir=plugin_target
    )
    assert result.returncode == 2
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and STAGE_ID in errors[0] and "low" in errors[0], result.stderr
    result = voxpipe(
        "validate", str(config), "--set", f"{STAGE_ID}.low=-5", "--set", f"{STAGE_ID}.high=5", key_file=key_file, plugin_dir=plugin_target
    )
    assert result.returncode == 0, result.stderr


def test_unknown_without_the_plugin(key_file, tmp_path):
    config = _write_config(tmp_path)
    result = voxpipe("validate", str(config), key_file=key_file, plugin_dir=None)
    assert result.returncode == 2
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert STAGE_ID in errors[0] and "unknown stage" in errors[0]
    assert "Traceback" not in result.stderr


def test_blocked_plugin_is_unknown(plugin_target, key_file, tmp_path):
    config = _write_config(tmp_path)
    result = voxpipe("--block-plugin", ENTRY_POINT, "validate", str(config), key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 2
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and STAGE_ID in errors[0], result.stderr

    listing = voxpipe("plugins", key_file=key_file, plugin_dir=plugin_target, extra_env={"VOXPIPE_PLUGINS_BLOCK": ENTRY_POINT})
    assert listing.returncode == 0, listing.stderr
    assert STAGE_ID not in listing.stdout
    assert f"Not loaded (allow/block list): {ENTRY_POINT}" in listing.stdout


def test_stage_works_in_plain_monai_compose(plugin_target):
    torch = pytest.importorskip("torch")
    monai_transforms = pytest.importorskip("monai.transforms")
    from monai.data import MetaTensor

    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    sys.path.insert(0, str(plugin_target))
    try:
        from voxpipe_example_invert.invert import Invert

        values = torch.tensor([[[[1.0, 2.0], [3.0, 7.0]]]])
        affine = torch.as_tensor(AFFINE)
        case = {"image": MetaTensor(values, affine=affine, meta={"note": "kept"}), "label": "untouched"}
        result = monai_transforms.Compose([Invert(key="image")])(case)

        assert result is not case and case["image"] is not result["image"]
        assert torch.equal(case["image"].as_tensor(), values)  # the input case is not modified
        assert isinstance(result["image"], MetaTensor)
        assert torch.allclose(result["image"].as_tensor(), 8.0 - values)
        assert torch.allclose(result["image"].affine.double(), affine)
        assert result["image"].meta["note"] == "kept"
        assert result["label"] == "untouched"
        assert result["history"] == [{"op": STAGE_ID, "key": "image", "low": 1.0, "high": 7.0, "range": "image"}]

        bounded = Invert(low=0.0, high=10.0)({"image": MetaTensor(values, affine=affine)})
        assert torch.allclose(bounded["image"].as_tensor(), 10.0 - values)

        ints = Invert()({"image": torch.tensor([[0, 5, 255]], dtype=torch.uint8)})
        assert ints["image"].dtype == torch.uint8 and ints["image"].tolist() == [[255, 250, 0]]
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("voxpipe_example_invert"):
                del sys.modules[name]


def test_registration_is_light(plugin_target):
    """Loading the registry with the example imports neither torch nor the implementation."""
    code = (
        "import sys; from voxpipe.registry import PluginSelection, Registry; "
        f"r = Registry.load(PluginSelection(allow=frozenset({{{ENTRY_POINT!r}}})), strict=True); "
        f"assert {STAGE_ID!r} in r.stages, sorted(r.stages); "
        "heavy = [m for m in ('torch', 'monai', 'voxpipe_example_invert.invert') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = _env(Path(os.devnull), plugin_target)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


REPORT_CONFIG = f"""\
version: 1
name: invert-report
device: cpu
stages:
  - use: load.auto
  - use: {STAGE_ID}
  - use: example.histogram
  - use: write.nifti
"""


def test_a_third_party_stage_shows_a_metric_and_a_picture_in_the_report(plugin_target, key_file, tmp_path):
    """`example.histogram` records a metric and a picture; case.json and report.html show both (no core change)."""
    import base64
    import io
    import re

    from PIL import Image

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(data, AFFINE), str(inputs / "volume.nii.gz"))
    config = tmp_path / "report.yaml"
    config.write_text(REPORT_CONFIG, encoding="utf-8")
    out = tmp_path / "out"
    result = voxpipe("run", str(config), "-i", str(inputs), "-o", str(out), key_file=key_file, plugin_dir=plugin_target)
    assert result.returncode == 0, result.stderr

    case = next(out.glob("case-*"))
    record = json.loads((case / "case.json").read_text())
    mean = float((data.max() + data.min() - data).mean())  # after example.invert
    assert record["report"]["metrics"] == [{"name": "example.image_mean", "value": pytest.approx(mean), "unit": "", "label": "image mean"}]
    assert record["report"]["pictures"] == [{"path": "histogram.png", "caption": "image intensity histogram"}]
    assert record["metrics"]["example"]["image_mean"] == pytest.approx(mean)
    assert (case / "histogram.png").is_file()

    page = (out / "report.html").read_text()
    assert "image mean" in page and f"{mean:.3g}" in page
    figures = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"><figcaption>([^<]*)</figcaption>', page)
    assert [(alt, caption) for _, alt, caption in figures] == [("image intensity histogram", "image intensity histogram")]
    shown = Image.open(io.BytesIO(base64.b64decode(figures[0][0])))
    assert shown.size == Image.open(case / "histogram.png").size  # the stage's own picture, not a fallback thumbnail
