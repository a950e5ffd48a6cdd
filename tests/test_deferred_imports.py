"""voxpipe.deferred_imports: deferred modules run their code once, on first use, and only then.

Toy packages written into tmp_path record each time their code runs, so "not loaded yet",
"loaded once" and "package before its children" are checked directly. One test runs the
real fork-server preload in a fresh interpreter and calls the MONAI functions whose
libraries it defers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

from voxpipe import deferred_imports
from voxpipe.deferred_imports import DeferredName, defer, is_deferred

RUNS: list[str] = []  # the toy modules append their names here when their code runs
RECORDER = types.ModuleType("deferred_imports_recorder")
RECORDER.runs = RUNS


@pytest.fixture()
def toy(tmp_path, monkeypatch, request):
    """A fresh toy package under a unique name; returns that name."""
    name = f"toy_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    record = "import deferred_imports_recorder as _r; _r.runs.append(__name__)\n"
    monkeypatch.setitem(sys.modules, RECORDER.__name__, RECORDER)
    (root / "__init__.py").write_text(record + "value = 42\n\ndef twice(x):\n    return 2 * x\n\nfrom . import child\n")
    (root / "child.py").write_text(record + "from . import value as parent_value\n")
    (root / "other.py").write_text(record + "answer = 'other'\n")
    (root / "broken.py").write_text(record + "raise RuntimeError('broken on purpose')\n")
    (root / "lazy.py").write_text(
        record + "def __getattr__(name):\n    if name == 'made':\n        return 'on demand'\n    raise AttributeError(name)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    RUNS.clear()
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_a_deferred_module_runs_on_first_use_only(toy):
    assert defer([toy]) == [toy]
    module = sys.modules[toy]
    assert is_deferred(module) and RUNS == []
    import importlib

    assert importlib.import_module(toy) is module  # importing hands out the same, unloaded object
    assert module.__file__.endswith("__init__.py") and hasattr(module, "__path__") and module.__spec__ is not None
    assert RUNS == []  # asking whether it exists loads nothing
    assert module.value == 42
    assert RUNS == [toy, f"{toy}.child"] and not is_deferred(module)
    assert type(module) is types.ModuleType
    assert module.twice(4) == 8 and RUNS == [toy, f"{toy}.child"]  # and never again


def test_importing_a_submodule_first_loads_the_package_first_and_nothing_twice(toy):
    defer([toy])
    import importlib

    child = importlib.import_module(f"{toy}.child")  # the package's __init__ imports it itself
    assert RUNS == [toy, f"{toy}.child"]
    assert sys.modules[f"{toy}.child"] is child is sys.modules[toy].child
    assert child.parent_value == 42
    assert type(child.__spec__.loader).__name__ == "SourceFileLoader"  # its own spec, put back
    other = importlib.import_module(f"{toy}.other")  # one the package does not import
    assert RUNS == [toy, f"{toy}.child", f"{toy}.other"] and other.answer == "other"


def test_from_import_of_a_stand_in_defers_until_called(toy):
    defer({toy: ("twice",)})
    namespace: dict = {}
    exec(f"from {toy} import twice", namespace)
    assert isinstance(namespace["twice"], DeferredName) and RUNS == []
    assert namespace["twice"](21) == 42
    assert RUNS[0] == toy
    assert sys.modules[toy].twice is not namespace["twice"]  # the module holds the real function now


def test_a_child_of_an_ordinary_package_can_be_deferred(toy):
    import importlib

    importlib.import_module(toy)
    RUNS.clear()
    defer({f"{toy}.other": ()})
    other = sys.modules[f"{toy}.other"]
    assert is_deferred(other) and sys.modules[toy].other is other and RUNS == []
    assert other.answer == "other" and RUNS == [f"{toy}.other"]


def test_a_module_level_getattr_still_answers_after_loading(toy):
    import importlib

    importlib.import_module(toy)
    defer({f"{toy}.lazy": ("made",)})
    stand_in = sys.modules[f"{toy}.lazy"].made
    assert isinstance(stand_in, DeferredName)
    assert stand_in.resolve() == "on demand"
    assert sys.modules[f"{toy}.lazy"].made == "on demand"  # the stand-in is gone, the module's hook answers


def test_a_module_whose_code_fails_is_removed_like_a_failed_import(toy):
    import importlib

    importlib.import_module(toy)
    defer([f"{toy}.broken"])
    broken = sys.modules[f"{toy}.broken"]
    with pytest.raises(RuntimeError, match="broken on purpose"):
        _ = broken.anything
    assert f"{toy}.broken" not in sys.modules and "broken" not in vars(sys.modules[toy])
    with pytest.raises(RuntimeError, match="broken on purpose"):
        importlib.import_module(f"{toy}.broken")  # an ordinary import now, failing the same way


def test_missing_or_already_imported_modules_are_left_alone(toy):
    import importlib

    importlib.import_module(toy)
    assert defer([toy, f"{toy}.does_not_exist", "json"]) == []
    assert f"{toy}.does_not_exist" not in sys.modules and not is_deferred(sys.modules["json"])


def test_the_environment_can_turn_it_off(toy, monkeypatch):
    monkeypatch.setenv(deferred_imports.EAGER_ENV, "1")
    assert defer([toy]) == [] and toy not in sys.modules


def test_threads_that_race_to_use_it_load_it_once(toy):
    defer([toy])
    module = sys.modules[toy]
    results, barrier = [], threading.Barrier(4)

    def use() -> None:
        barrier.wait()
        results.append(module.twice(1))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [2, 2, 2, 2] and RUNS.count(toy) == 1


PRELOAD_CHECK = textwrap.dedent("""
    import gc, sys
    import numpy as np
    import voxpipe.preload
    from voxpipe.deferred_imports import is_deferred

    assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()
    assert "monai.transforms" in sys.modules and "torch" in sys.modules
    import os
    eager = set(os.environ.get("EAGER_IN_PACKAGE", "").split(","))  # loaded by their own package's __init__ (older SciPy)
    deferred = [name for name in voxpipe.preload.DEFERRED if is_deferred(sys.modules.get(name))]
    assert [n for n in voxpipe.preload.DEFERRED if n not in eager] == [n for n in deferred if n not in eager], deferred  # none was loaded by the preload itself
    assert "scipy.stats" not in sys.modules
    assert voxpipe.preload.builtin_plugins() and all(m in sys.modules for m in voxpipe.preload.builtin_plugins())

    # the MONAI functions that use what was deferred still work, and give the libraries' answers
    import torch
    from monai.data import ultrasound_confidence_map as ucm
    from monai.metrics import utils as metric_utils
    from monai.transforms import RemoveSmallObjects
    from monai.transforms.signal import array as signal_array
    import scipy.signal, scipy.spatial

    x = np.sin(np.linspace(0, 20, 64))
    assert np.allclose(ucm.hilbert(x), scipy.signal.hilbert(x))
    assert np.allclose(signal_array.iirnotch(50.0, 30.0, 1000.0), scipy.signal.iirnotch(50.0, 30.0, 1000.0))
    points = np.random.default_rng(0).random((20, 3))
    assert np.allclose(metric_utils.KDTree(points).query(points)[0], 0.0)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 1:4, 1:4] = True
    mask[0, 6, 6] = True
    kept = RemoveSmallObjects(min_size=3)(mask)
    assert int(kept.sum()) == 9 and not bool(kept[0, 6, 6])
    import matplotlib.pyplot as plt
    assert plt.get_backend().lower() == "agg"
    print("preload ok")
""")


def _loaded_by_their_packages(env, cwd) -> str:
    """Deferred names a parent package imports itself (SciPy < 1.16's ``scipy.sparse`` imports ``csgraph``): nothing can defer those."""
    import ast
    import importlib.util

    source = Path(importlib.util.find_spec("voxpipe.preload").origin).read_text()  # read, not imported: importing it preloads
    names = next(
        ast.literal_eval(node.value) for node in ast.parse(source).body if isinstance(node, ast.Assign) and node.targets[0].id == "DEFERRED"
    )
    parents = sorted({n.rsplit(".", 1)[0] for n in names if "." in n} - set(names))
    code = f"import importlib, sys\nfor m in {parents!r}: importlib.import_module(m)\nprint(','.join(n for n in {list(names)!r} if n in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, check=True).stdout.strip()


def test_the_fork_server_preload_defers_and_monai_still_works(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != deferred_imports.EAGER_ENV}
    env["MPLBACKEND"] = "agg"
    env["EAGER_IN_PACKAGE"] = _loaded_by_their_packages(env, tmp_path)
    proc = subprocess.run([sys.executable, "-c", PRELOAD_CHECK], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "preload ok" in proc.stdout


GMM_AFTER_PRELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import voxpipe.preload
    from voxpipe.deferred_imports import is_deferred

    assert is_deferred(sys.modules["sklearn"]) and "sklearn.mixture" not in sys.modules
    from voxpipe_plugins.segment.phantoms import brain_phantom
    from voxpipe_plugins.segment.tissue import GMMSegmenter

    phantom = brain_phantom(shape=(24, 28, 24), spacing=(4.0, 4.0, 4.0))
    values = phantom.image[phantom.truth["brain"]].astype(np.float64)
    assign, fitted = GMMSegmenter(classes=3).fit_assign(values, values)
    assert not is_deferred(sys.modules["sklearn"]) and "sklearn.mixture" in sys.modules
    print(" ".join(map(str, np.bincount(assign, minlength=3))), fitted["means"])
""")


def test_gmm_runs_in_a_preloaded_worker_as_in_a_plain_process(tmp_path):
    """segment.gmm imports scikit-learn, which the fork server defers: the same fit either way."""
    import os

    answers = []
    for eager in ("", "1"):
        env = {k: v for k, v in os.environ.items() if k != deferred_imports.EAGER_ENV}
        env.update(MPLBACKEND="agg", **({deferred_imports.EAGER_ENV: eager} if eager else {}))
        code = (
            GMM_AFTER_PRELOAD
            if not eager
            else GMM_AFTER_PRELOAD.replace("assert is_deferred", "assert not is_deferred", 1).replace(
                ' and "sklearn.mixture" not in sys.modules', "", 1
            )
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers.append(proc.stdout.strip())
    assert answers[0] == answers[1] and answers[0]
