"""Feature files, the feature store, retrieval, Isomap, clustering, exports, keypoint matching.

Galleries are synthetic with known classes, so retrieval and clustering quality is
measured against the truth with thresholds far above chance; the end-to-end test runs
configs/radiomics.yaml on generated spheres and cubes.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import REPO, write_nifti

from voxpipe.errors import UsageError
from voxpipe_plugins.match import store as stores
from voxpipe_plugins.match.cluster import cluster
from voxpipe_plugins.match.export import read_csv, write_csv
from voxpipe_plugins.match.retrieval import leave_one_out
from voxpipe_plugins.match.space import distances, fit_space
from voxpipe_plugins.match.writer import FeatureWriter
from voxpipe_plugins.samples.matching import lesion_volume


def gallery(n_per_class=15, classes=3, dims=16, informative=6, seed=0):
    """Vectors whose first ``informative`` dims carry the class (unit-variance noise elsewhere, wildly scaled)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5.0, size=(classes, informative))
    rows, labels = [], []
    for c in range(classes):
        x = rng.normal(0, 1, size=(n_per_class, dims))
        x[:, :informative] += centres[c]
        rows.append(x)
        labels += [f"class{c}"] * n_per_class
    x = np.vstack(rows) * np.logspace(0, 4, dims)  # units differ by 10^4: standardisation has to fix this
    return x.astype(np.float32), labels


def make_store(x, labels, name="vec"):
    ids = [f"case-{i:04d}" for i in range(len(x))]
    return stores.FeatureStore(ids, {name: x}, {name: [f"f{i}" for i in range(x.shape[1])]}, [], dict(zip(ids, labels)))


def test_leave_one_out_scores_on_a_hand_checked_ranking():
    # 1-D points: a a b | b; distances |i - j|
    points = np.array([[0.0], [1.0], [2.0], [10.0]])
    scores = leave_one_out(distances(points, points), ["a", "a", "b", "b"], ks=(1, 2))
    # query 0: ranked 1(a) 2(b) 3(b): P@1 = 1, AP = 1; query 1: 0(a) 2(b) ... AP = 1 (tie 0/2 by index)
    # query 2: 1(a) 0(a) 3(b): P@1 = 0, AP = 1/3; query 3: 2(b) 1 0: P@1 = 1, AP = 1
    assert scores["precision@1"] == pytest.approx(3 / 4)
    assert scores["map"] == pytest.approx((1 + 1 + 1 / 3 + 1) / 4)
    assert scores["chance"] == pytest.approx(1 / 3)


def test_retrieval_is_far_above_chance_and_needs_standardisation():
    x, labels = gallery()
    _, z = fit_space(x.astype(np.float64), "raw", standardize=True)
    good = leave_one_out(distances(z, z), labels, ks=(5,))
    _, unscaled = fit_space(x.astype(np.float64), "raw", standardize=False)
    bad = leave_one_out(distances(unscaled, unscaled), labels, ks=(5,))
    assert good["precision@5"] >= 0.9 and good["map"] >= 0.8
    assert good["chance"] == pytest.approx(14 / 44)
    assert bad["precision@5"] < 0.6  # the largest-unit noise dimension dominates without z-scoring


def test_isomap_unrolls_a_swiss_roll_and_keeps_its_neighbours():
    from sklearn.datasets import make_swiss_roll

    points, t = make_swiss_roll(n_samples=600, noise=0.05, random_state=0)
    arc = (t * np.sqrt(1 + t * t) + np.arcsinh(t)) / 2  # length along the spiral x = t cos t, z = t sin t
    intrinsic = np.column_stack([arc, points[:, 1]])
    _, iso = fit_space(points, "isomap", standardize=False, neighbors=10, components=2)
    _, raw = fit_space(points, "raw", standardize=False)

    def overlap(coords, k=10):
        d_true = distances(intrinsic, intrinsic)
        d = distances(coords, coords)
        shared = [len(set(np.argsort(d[i])[1 : k + 1]) & set(np.argsort(d_true[i])[1 : k + 1])) / k for i in range(len(coords))]
        return float(np.mean(shared))

    assert overlap(iso) > 0.6
    # geodesic distances survive the embedding; straight 3D distances across the turns do not
    d_true = distances(intrinsic, intrinsic).ravel()
    assert np.corrcoef(distances(iso, iso).ravel(), d_true)[0, 1] > 0.6
    assert np.corrcoef(distances(points, points).ravel(), d_true)[0, 1] < 0.4
    assert overlap(iso) > overlap(raw[:, [0, 2]])


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_clustering_recovers_synthetic_clusters(method):
    rng = np.random.default_rng(2)
    centres = 6.0 * np.eye(4)  # four clusters, 8.5 standard deviations apart
    x = np.vstack([c + rng.normal(0, 1, size=(20, 4)) for c in centres])
    labels = [f"c{i}" for i in range(4) for _ in range(20)]
    _, z = fit_space(x, "raw")
    result = cluster(z, method, None, labels=labels)
    assert result["clusters"] == 4  # chosen by silhouette
    assert result["adjusted_rand"] > 0.9 and result["silhouette"] > 0.4
    assert sorted(result["sizes"]) == [20, 20, 20, 20]


def write_case(folder, vectors, names=None, case_id=None):
    folder.mkdir(parents=True, exist_ok=True)
    case = {"case_id": case_id or folder.name, "output_dir": folder, "features": vectors, "feature_names": names or {}, "history": []}
    FeatureWriter()(case)
    return folder


def test_store_refuses_mismatched_lengths_naming_the_case(tmp_path):
    run = tmp_path / "run"
    write_case(run / "case-aaa", {"radiomics": np.ones(5, np.float32)})
    write_case(run / "case-bbb", {"radiomics": np.ones(4, np.float32)})
    with pytest.raises(UsageError, match=r"case case-bbb: feature set `radiomics` has 4 values but case case-aaa has 5"):
        stores.collect([run])
    write_case(run / "case-bbb", {"radiomics": np.ones(5, np.float32), "vgg16": np.ones(3, np.float32)})
    write_case(run / "case-ccc", {"radiomics": np.ones(5, np.float32)})
    with pytest.raises(UsageError, match=r"case case-(aaa|ccc) has no feature set `vgg16`"):
        stores.collect([run])


def test_cli_collect_refusal_writes_nothing(tmp_path, cli):
    run = tmp_path / "run"
    write_case(run / "case-aaa", {"radiomics": np.ones(5, np.float32)})
    write_case(run / "case-bbb", {"radiomics": np.ones(6, np.float32)})
    result = cli("features", "collect", run, "-o", tmp_path / "store")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "case-bbb" in result.error_lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left behind


def test_writer_and_store_keep_names_provenance_and_refuse_nan(tmp_path):
    folder = tmp_path / "run" / "case-x1"
    folder.mkdir(parents=True)
    case = {
        "case_id": "case-x1",
        "output_dir": folder,
        "features": {"radiomics": np.arange(3, dtype=np.float32)},
        "feature_names": {"radiomics": ["a", "b", "c"]},
        "outputs": {"class": 1},
        "history": [{"op": "radiomics.extract", "feature_set": "radiomics", "levels": 32}],
    }
    FeatureWriter()(case)
    (folder / "case.json").write_text(json.dumps({"config_hash": "abc123"}))
    info = json.loads((folder / "features.json").read_text())
    assert info["sets"]["radiomics"]["stage"]["levels"] == 32 and info["outputs"] == {"class": 1}
    assert "numpy" in info["versions"]
    store = stores.collect([tmp_path / "run"])
    assert store.provenance[0]["config_hash"] == "abc123" and store.names["radiomics"] == ["a", "b", "c"]
    store.save(tmp_path / "store")
    loaded = stores.load(tmp_path / "store")
    np.testing.assert_array_equal(loaded.matrices["radiomics"], [[0, 1, 2]])
    with pytest.raises(UsageError, match="exists"):
        store.save(tmp_path / "store")
    case["features"]["radiomics"] = np.array([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="1 NaN"):
        FeatureWriter()(case)


def test_csv_export_round_trips_exactly(tmp_path):
    x, labels = gallery(n_per_class=4, classes=2, dims=5, informative=2)
    x[0, 0] = np.float32(1 / 3)
    store = make_store(x, labels)
    write_csv(store, tmp_path / "f.csv")
    ids, names, values = read_csv(tmp_path / "f.csv")
    assert ids == store.case_ids and names == [f"vec.f{i}" for i in range(5)]
    np.testing.assert_array_equal(values, x)  # bit for bit
    with open(tmp_path / "f.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["label"] == "class0"


def test_match_and_evaluate_commands_on_a_store(tmp_path, cli):
    x, labels = gallery()
    make_store(x, labels).save(tmp_path / "store")
    result = cli("match", "--store", tmp_path / "store", "--query", "case-0003", "-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    matches = json.loads(result.stdout)["matches"]
    assert len(matches) == 5 and "case-0003" not in [m["case_id"] for m in matches]
    assert sum(m["label"] == "class0" for m in matches) >= 3
    assert [m["distance"] for m in matches] == sorted(m["distance"] for m in matches)
    iso = cli("match", "--store", tmp_path / "store", "--query", "case-0003", "-k", "3", "--space", "isomap")
    assert iso.exit_code == 0 and iso.stdout.count("case-") == 4
    ev = cli("evaluate", "--store", tmp_path / "store", "-k", "1", "-k", "5", "--space", "isomap", "-o", tmp_path / "eval")
    assert ev.exit_code == 0, ev.stderr
    results = json.loads((tmp_path / "eval" / "retrieval.json").read_text())["results"]
    raw = next(r for r in results if r["space"] == "raw")
    assert raw["precision@5"] >= 0.9 and raw["map"] > 2 * raw["chance"]
    assert {r["space"] for r in results} == {"raw", "isomap"}
    bad = cli("match", "--store", tmp_path / "store", "--query", "case-nope")
    assert bad.exit_code == 2 and "case-nope" in bad.error_lines[0]
    no_store = cli("evaluate", "--store", tmp_path / "missing")
    assert no_store.exit_code == 2 and "not a feature store" in no_store.error_lines[0]
    neither = cli("evaluate")
    assert neither.exit_code == 2 and "--ref and --pred" in neither.error_lines[0]


def test_cluster_command_writes_table_and_plot(tmp_path, cli):
    x, labels = gallery(n_per_class=10, classes=3, dims=6, informative=6, seed=4)
    make_store(x, labels).save(tmp_path / "store")
    result = cli("cluster", "--store", tmp_path / "store", "--method", "agglomerative", "--clusters", "3", "-o", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    assert "silhouette" in result.stdout and "adjusted Rand" in result.stdout
    summary = json.loads((tmp_path / "c" / "clusters.json").read_text())
    assert summary["adjusted_rand"] > 0.9
    png = (tmp_path / "c" / "embedding.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len((tmp_path / "c" / "clusters.csv").read_text().splitlines()) == 31


def test_radiomics_config_end_to_end_retrieves_shape_classes(tmp_path, cli):
    inputs = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(12):
        kind = "sphere" if i % 2 else "cube"
        write_nifti(inputs / f"{kind}{i:02d}.nii.gz", lesion_volume(kind, rng.uniform(10, 16), i))
    write_nifti(inputs / "blank.nii.gz", np.zeros((16, 16, 16), np.float32))  # nothing to segment: that case fails alone
    run = cli(
        "run",
        REPO / "configs" / "radiomics.yaml",
        "-i",
        inputs,
        "-o",
        tmp_path / "out",
        "--workers",
        "0",
        "--no-report",
        "--source-map",
        tmp_path / "map.tsv",
    )
    assert run.exit_code == 1, run.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["ok"] == 12 and manifest["summary"]["failed"] == 1
    failed = next(c for c in manifest["cases"] if c["status"] == "failed")
    assert "\n" not in failed["error"] and "blank" not in failed["error"]  # one line, no input name
    with open(tmp_path / "labels.csv", "w") as handle:
        handle.write("case_id,label\n")
        for line in (tmp_path / "map.tsv").read_text().splitlines():
            cid, _, path = line.partition("\t")
            if cid.startswith("case-") and "blank" not in path:
                handle.write(f"{cid},{'sphere' if 'sphere' in path else 'cube'}\n")
    collected = cli("features", "collect", tmp_path / "out", "-o", tmp_path / "store", "--labels", tmp_path / "labels.csv")
    assert collected.exit_code == 0, collected.stderr
    store = stores.load(tmp_path / "store")
    assert len(store.case_ids) == 12 and len(store.labels) == 12
    names = store.names["radiomics"]
    sphericity = store.matrices["radiomics"][:, names.index("shape.sphericity")]
    is_sphere = np.array([store.labels[c] == "sphere" for c in store.case_ids])
    assert sphericity[is_sphere].min() > sphericity[~is_sphere].max()  # pi/6 ** (1/3) = 0.81 for a cube
    ev = cli("evaluate", "--store", tmp_path / "store", "-k", "1", "-k", "3", "-o", tmp_path / "eval")
    assert ev.exit_code == 0, ev.stderr
    raw = json.loads((tmp_path / "eval" / "retrieval.json").read_text())["results"][0]
    assert raw["precision@1"] >= 0.9 and raw["chance"] == pytest.approx(5 / 11)
    folder = next(p for p in (tmp_path / "out").iterdir() if p.name.startswith("case-"))
    by_folder = cli("match", "--store", tmp_path / "store", "--query", folder, "-k", "3", "--json")
    assert by_folder.exit_code == 0, by_folder.stderr
    hits = json.loads(by_folder.stdout)["matches"]
    assert len(hits) == 3 and folder.name not in [h["case_id"] for h in hits]  # a store case never matches itself
    exported = cli("features", "export", tmp_path / "store", tmp_path / "f.csv")
    assert exported.exit_code == 0
    ids, columns, values = read_csv(tmp_path / "f.csv")
    assert "radiomics.glcm.contrast" in columns and values.shape == (12, len(names))
    parquet = cli("features", "export", tmp_path / "store", tmp_path / "f.parquet")
    try:
        import pyarrow  # noqa: F401

        assert parquet.exit_code == 0
    except ImportError:
        assert parquet.exit_code == 2 and "pyarrow" in parquet.error_lines[0]


def test_match_nearest_stage_votes_with_the_store_labels(tmp_path):
    from voxpipe.stage import StageContext
    from voxpipe_plugins.match.nearest import NearestMatcher

    x, labels = gallery()
    make_store(x, labels).save(tmp_path / "store")
    stage = NearestMatcher("store", k=5, context=StageContext(config_dir=tmp_path))
    query = x[20] + np.float32(0.01)
    case = stage({"case_id": "case-new", "features": {"vec": query}, "history": []})
    out = case["outputs"]["match"]
    assert out["label"] == "class1" and out["neighbors"][0]["case_id"] == "case-0020"
    own = stage({"case_id": "case-0020", "features": {"vec": x[20]}, "history": []})
    assert "case-0020" not in [n["case_id"] for n in own["outputs"]["match"]["neighbors"]]
    with pytest.raises(UsageError, match="has 3 values, the store's has 16"):
        stage({"case_id": "c", "features": {"vec": np.ones(3)}, "history": []})


def shepp_logan_pair(angle_deg=12.0, shift=(9.0, -6.0)):
    """Shepp-Logan (shipped with scikit-image) and a rotated + shifted copy; returns the true moving->fixed matrix."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import EuclideanTransform, rescale, warp

    fixed = rescale(shepp_logan_phantom(), 0.64, anti_aliasing=True)  # 256 x 256
    centre = np.array(fixed.shape[::-1]) / 2 - 0.5
    about = EuclideanTransform(translation=-centre)
    rotate = EuclideanTransform(rotation=math.radians(angle_deg), translation=np.array(shift))
    forward = EuclideanTransform(np.linalg.inv(about.params) @ rotate.params @ about.params)  # fixed -> moving
    moving = warp(fixed, forward.inverse, order=1)
    return fixed, moving, np.linalg.inv(forward.params)


@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_keypoints_recover_a_known_rotation_and_shift(detector):
    from voxpipe_plugins.match.keypoints import match_images

    fixed, moving, truth = shepp_logan_pair()
    result = match_images(fixed, moving, detector=detector)
    assert result.inliers >= 10
    assert result.rotation_deg == pytest.approx(-12.0, abs=0.5)
    # every pixel of the image lands within 1 px of where the true transform puts it
    corners = np.array([[0, 0, 1], [255, 0, 1], [0, 255, 1], [255, 255, 1], [128, 128, 1]], float).T
    assert np.abs(result.matrix @ corners - truth @ corners)[:2].max() < 1.0


def test_keypoints_command_writes_transform_and_pictures(tmp_path, cli):
    from PIL import Image

    fixed, moving, truth = shepp_logan_pair(angle_deg=-8.0, shift=(5.0, 4.0))
    for name, image in (("a.png", fixed), ("b.png", moving)):
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / name)
    result = cli("keypoints", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "kp")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "kp" / "keypoints.json").read_text())
    assert data["rotation_deg"] == pytest.approx(8.0, abs=0.7)
    assert (tmp_path / "kp" / "matches.png").stat().st_size > 5000
    warped = np.asarray(Image.open(tmp_path / "kp" / "moving_on_fixed.png"), dtype=float) / 255
    inside = fixed > 0.05
    assert np.corrcoef(warped[inside], fixed[inside])[0, 1] > 0.9
    (tmp_path / "flat.png").write_bytes(b"not a png")
    bad = cli("keypoints", tmp_path / "flat.png", tmp_path / "b.png", "-o", tmp_path / "kp2")
    assert bad.exit_code == 2 and "cannot read" in bad.error_lines[0]
    written = (tmp_path / "kp" / "keypoints.json").read_bytes()
    again = cli("keypoints", tmp_path / "b.png", tmp_path / "a.png", "-o", tmp_path / "kp")
    assert again.exit_code == 2 and "--force" in again.error_lines[0] and (tmp_path / "kp" / "keypoints.json").read_bytes() == written
    forced = cli("keypoints", tmp_path / "b.png", tmp_path / "a.png", "-o", tmp_path / "kp", "--force")
    assert forced.exit_code == 0 and (tmp_path / "kp" / "keypoints.json").read_bytes() != written


def test_singleton_classes_are_left_out_of_retrieval_scores(tmp_path, cli):
    points = np.array([[0.0], [1.0], [5.0], [6.0], [50.0]])
    scores = leave_one_out(distances(points, points), ["a", "a", "b", "b", "alone"], ks=(1,))
    assert scores["queries"] == 4 and scores["singletons"] == 1
    assert scores["precision@1"] == 1.0 and scores["map"] == 1.0
    make_store(points.astype(np.float32), ["a", "a", "b", "b", "alone"]).save(tmp_path / "store")
    result = cli("evaluate", "--store", tmp_path / "store", "-k", "1", "--space", "raw")
    assert result.exit_code == 0 and "1 class(es) with one case" in result.stderr
    make_store(points[:2].astype(np.float32), ["x", "y"]).save(tmp_path / "s2")
    alone = cli("evaluate", "--store", tmp_path / "s2")
    assert alone.exit_code == 2 and "every label occurs once" in alone.error_lines[0]


def _two_set_store(path):
    """A store with two feature sets, so every command has to be told which (by --feature-set)."""
    x, labels = gallery(n_per_class=6, classes=2, dims=5, informative=5, seed=7)
    ids = [f"case-{i:04d}" for i in range(len(x))]
    names = {"a": [f"f{i}" for i in range(5)], "b": [f"g{i}" for i in range(5)]}
    stores.FeatureStore(ids, {"a": x, "b": x[:, ::-1].copy()}, names, [], dict(zip(ids, labels))).save(path)
    return ids


FEATURE_SET_COMMANDS = {
    "match": ["match", "{store}", "--query", "case-0000", "-k", "2"],
    "cluster": ["cluster", "{store}", "--clusters", "2"],
    "evaluate": ["evaluate", "{store}", "-k", "1"],
    "export": ["features", "export", "{store}", "-o", "-"],
}


@pytest.mark.parametrize("command", sorted(FEATURE_SET_COMMANDS))
@pytest.mark.parametrize("store_spelling", ["-i", "--input", "--store"])
def test_feature_set_is_chosen_with_feature_set_and_old_set_still_works_with_a_warning(tmp_path, cli, command, store_spelling):
    """`--set` means STAGE.FIELD=VALUE elsewhere; here it was the feature set. Now `--feature-set`; `--set` warns."""
    _two_set_store(tmp_path / "store")
    if command == "evaluate":  # its --store picks the retrieval mode (docs/cli.md): no -i there
        store_spelling = "--store"
    args = [store_spelling if a == "{store}" else a for a in FEATURE_SET_COMMANDS[command]]
    args.insert(args.index(store_spelling) + 1, str(tmp_path / "store"))
    unchosen = cli(*args)
    assert unchosen.exit_code == 2 and "--feature-set" in unchosen.error_lines[0]
    new = cli(*args, "--feature-set", "a")
    assert new.exit_code == 0, new.stderr
    assert "deprecated" not in new.stderr
    old = cli(*args, "--set", "a")
    assert old.exit_code == 0 and old.stdout == new.stdout
    warnings = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and "--feature-set" in warnings[0]
    unknown = cli(*args, "--feature-set", "nope")
    assert unknown.exit_code == 2 and "--feature-set" in unknown.error_lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["match", "-i", "{store}", "--query", "case-0000", "-k", "3", "--json"],
        ["cluster", "-i", "{store}", "--clusters", "2", "--json"],
        ["evaluate", "--store", "{store}", "-k", "1", "--json"],
        ["evaluate", "--store", "{store}", "-k", "1", "--space", "isomap", "--json"],
    ],
    ids=["match", "cluster", "evaluate-raw", "evaluate-isomap"],
)
def test_table_commands_print_valid_json(tmp_path, cli, args):
    _two_set_store(tmp_path / "store")
    result = cli(*[str(tmp_path / "store") if a == "{store}" else a for a in args], "--feature-set", "b")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert isinstance(data, dict) and data


def test_evaluate_space_defaults_to_raw_like_match_and_cluster(tmp_path, cli):
    _two_set_store(tmp_path / "store")
    result = cli("evaluate", "--store", tmp_path / "store", "--feature-set", "a", "-k", "1", "--json")
    assert [r["space"] for r in json.loads(result.stdout)["results"]] == ["raw"]


@pytest.mark.parametrize(
    "command",
    [
        ["cluster", "-i", "{store}", "--clusters", "2", "--feature-set", "a", "-o", "{out}"],
        ["evaluate", "--store", "{store}", "-k", "1", "--feature-set", "a", "-o", "{out}"],
        ["features", "export", "-i", "{store}", "--feature-set", "a", "-o", "{out}/table.csv"],
        ["features", "export", "{store}", "{out}/table.csv", "--feature-set", "a"],
    ],
    ids=["cluster", "evaluate", "export", "export-positional"],
)
def test_outputs_are_never_overwritten_without_force(tmp_path, cli, command):
    _two_set_store(tmp_path / "store")
    out = tmp_path / "out"
    args = [a.replace("{store}", str(tmp_path / "store")).replace("{out}", str(out)) for a in command]
    assert cli(*args).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for p in before:
        p.write_bytes(b"mine")
    again = cli(*args)
    assert again.exit_code == 2 and len(again.error_lines) == 1 and "--force" in again.error_lines[0]
    assert all(p.read_bytes() == b"mine" for p in before), "nothing replaced"
    forced = cli(*args, "--force")
    assert forced.exit_code == 0 and all(p.read_bytes() != b"mine" for p in before)


def test_collect_takes_inputs_as_options_or_arguments(tmp_path, cli):
    run = tmp_path / "run"
    write_case(run / "case-aaa", {"radiomics": np.ones(5, np.float32)})
    write_case(run / "case-bbb", {"radiomics": np.zeros(5, np.float32)})
    assert cli("features", "collect", "-i", run, "-o", tmp_path / "s1").exit_code == 0
    assert cli("features", "collect", run, "-o", tmp_path / "s2").exit_code == 0
    assert stores.load(tmp_path / "s1").case_ids == stores.load(tmp_path / "s2").case_ids == ["case-aaa", "case-bbb"]
    none = cli("features", "collect", "-o", tmp_path / "s3")
    assert none.exit_code == 2 and "-i/--input" in none.error_lines[0]


def test_labels_and_query_name_inputs_through_the_private_source_map(tmp_path, cli):
    """Users know files, not case ids: `--labels input,label` and `--query FILE` go through `--source-map`."""
    from voxpipe_plugins.samples.matching import write_matching_data

    data = tmp_path / "samples"
    write_matching_data(data, count=6)
    run = cli("run", REPO / "configs" / "radiomics.yaml", "-i", data / "shapes", "-o", tmp_path / "out", "--workers", "0", "--no-report",
              "--source-map", tmp_path / "map.tsv")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    collected = cli("features", "collect", tmp_path / "out", "-o", tmp_path / "store", "--labels", data / "labels.csv",
                    "--source-map", tmp_path / "map.tsv")  # fmt: skip
    assert collected.exit_code == 0, collected.stderr
    store = stores.load(tmp_path / "store")
    mapping = dict(line.split("\t") for line in (tmp_path / "map.tsv").read_text().splitlines()[1:])
    assert {store.labels[c] for c in store.case_ids} == {"sphere", "cube"}
    assert all(store.labels[c] in mapping[c] for c in store.case_ids)  # each label went to its own file's case
    query = data / "shapes" / "sphere01.nii.gz"
    for given in (str(query), "sphere01.nii.gz"):  # the path as given to run, or a unique file name
        hit = cli("match", "--store", tmp_path / "store", "--query", given, "--source-map", tmp_path / "map.tsv", "-k", "2", "--json")
        assert hit.exit_code == 0, hit.stderr
        answer = json.loads(hit.stdout)
        assert answer["query"].startswith("case-") and "sphere01" not in hit.stdout  # the output names case ids only
        assert [m["label"] for m in answer["matches"]] == ["sphere", "sphere"]
    unknown = cli("match", "--store", tmp_path / "store", "--query", "patient-smith.nii.gz", "--source-map", tmp_path / "map.tsv")
    assert unknown.exit_code == 2 and len(unknown.error_lines) == 1 and "smith" not in unknown.stderr
    (tmp_path / "bad.csv").write_text("input,label\npatient-smith.nii.gz,cube\n")
    bad = cli(
        "features",
        "collect",
        tmp_path / "out",
        "-o",
        tmp_path / "s2",
        "--labels",
        tmp_path / "bad.csv",
        "--source-map",
        tmp_path / "map.tsv",
    )
    assert bad.exit_code == 2 and "bad.csv:2" in bad.error_lines[0] and "smith" not in bad.stderr and not (tmp_path / "s2").exists()
    no_map = cli("features", "collect", tmp_path / "out", "-o", tmp_path / "s3", "--labels", data / "labels.csv")
    assert no_map.exit_code == 2 and "case_id" in no_map.error_lines[0]


def test_sample_matching_pairs_carry_the_motion_register_and_keypoints_recover(tmp_path, cli):
    from voxpipe_plugins.samples.matching import FOLLOWUP_DEGREES, FOLLOWUP_SHIFT_MM, SLICE_DEGREES, write_matching_data

    data = tmp_path / "samples"
    write_matching_data(data, count=2)
    reg = cli("register", data / "baseline.nii.gz", data / "followup.nii.gz", "-o", tmp_path / "reg", "--method", "mi")
    assert reg.exit_code == 0, reg.stderr
    transform = np.array(json.loads((tmp_path / "reg" / "transform.json").read_text())["fixed_to_moving"])
    motion = np.array(json.loads((data / "followup-motion.json").read_text())["baseline_to_followup_ras_mm"])
    assert np.degrees(np.arccos(np.clip((np.trace(transform[:3, :3]) - 1) / 2, -1, 1))) == pytest.approx(FOLLOWUP_DEGREES, abs=0.5)
    assert np.abs(np.abs(transform[:3, 3]) - np.abs(motion[:3, 3])).max() < 1.0 and np.linalg.norm(FOLLOWUP_SHIFT_MM) > 4
    kp = cli("keypoints", data / "slice-a.png", data / "slice-b.png", "-o", tmp_path / "kp", "--detector", "sift")
    assert kp.exit_code == 0, kp.stderr
    found = json.loads((tmp_path / "kp" / "keypoints.json").read_text())
    assert abs(abs(found["rotation_deg"]) - SLICE_DEGREES) < 1.0
