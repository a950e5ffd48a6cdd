"""CLI commands for feature stores and image matching, registered through the commands hook by :mod:`.plugin`.

``features collect|export``, ``match``, ``cluster``, ``register``, ``keypoints``, and the
retrieval mode of ``voxpipe evaluate`` (:func:`evaluate_retrieval`). This module is light
(click only) and imported only when one of them runs; each command imports its heavy
code when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from voxpipe.cli_conventions import (
    echo_json,
    feature_set_option,
    feature_sets,
    force_option,
    json_option,
    one_path,
    output_option,
    refuse_overwrite,
)
from voxpipe.defaults import DEFAULT_SPACE
from voxpipe.errors import UsageError
from voxpipe.source_map import case_for_input, read_source_map

SPACE = click.Choice(["raw", "isomap"])
METRIC = click.Choice(["euclidean", "cosine"])


def _space_options(function):
    """Options shared by the commands that work in a feature space."""
    for option in reversed(
        [
            feature_set_option("Feature set(s) to use (repeat to concatenate); default: the only one."),
            click.option(
                "--space", type=SPACE, default=DEFAULT_SPACE, show_default=True, help="Standardised features, or their Isomap embedding."
            ),
            click.option("--metric", type=METRIC, default="euclidean", show_default=True, help="Distance between vectors."),
            click.option("--no-standardize", is_flag=True, help="Use the features as stored (no z-scoring)."),
            click.option(
                "--neighbors", type=click.IntRange(2, 500), default=10, show_default=True, help="Isomap: k of the neighbour graph."
            ),
            click.option("--components", type=click.IntRange(1, 256), default=8, show_default=True, help="Isomap: embedding dimensions."),
        ]
    ):
        function = option(function)
    return function


def _source_map_option(purpose: str):
    """``--source-map TSV``: the private case id -> input map of ``voxpipe run --source-map``."""
    return click.option(
        "--source-map",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The case id -> input TSV written by `voxpipe run --source-map`; {purpose}.",
    )


def _store_option(function):
    """The feature store a command reads: ``-i/--input``, also spelled ``--store``."""
    return click.option(
        "-i",
        "--input",
        "--store",
        "store_path",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Feature store folder.",
    )(function)


def _fit(store, sets, space, no_standardize, neighbors, components):
    from voxpipe_plugins.match.space import fit_space

    return fit_space(store.matrix(sets), space, not no_standardize, neighbors, components)


def _load_store(path: Path, labels: Path | None = None):
    from voxpipe_plugins.match import store as stores

    store = stores.load(path)
    if labels is not None:
        given = stores.read_labels(labels)
        store.labels = {c: given[c] for c in store.case_ids if c in given}
    return store


@click.group("features")
def features_group() -> None:
    """Feature stores: collect run outputs into one, export them as tables."""


@features_group.command("collect")
@click.argument("run_outputs", nargs=-1, type=click.Path(path_type=Path), metavar="[RUN_OUTPUT]...")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A `voxpipe run` output folder (repeat for several; or give them as arguments).",
)
@output_option("Store folder to write.", required=True, dest="store_path")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV with columns case_id,label (classes for retrieval evaluation and plots); with --source-map, input,label.",
)
@_source_map_option("lets --labels name inputs (column `input`) instead of case ids")
@force_option("Replace an existing store.")
def collect_command(
    run_outputs: tuple[Path, ...], inputs: tuple[Path, ...], store_path: Path, labels: Path | None, source_map: Path | None, force: bool
) -> None:
    """Gather features.npz of every case under RUN_OUTPUT... (`voxpipe run` folders with a `write.features`
    stage) into one feature store. Vectors of one set must have one length: a case that differs is named
    and nothing is written.

    \b
    Example:
      voxpipe run configs/radiomics.yaml -i scans/ -o runs/radiomics
      voxpipe features collect -i runs/radiomics -o stores/radiomics --labels classes.csv
      voxpipe features collect -i runs/radiomics -o stores/radiomics --labels inputs.csv --source-map private/map.tsv
    """
    from voxpipe_plugins.match import store as stores

    run_outputs = tuple(run_outputs) + tuple(inputs)
    if not run_outputs:
        raise UsageError("missing RUN_OUTPUT: give one or more `voxpipe run` output folders with -i/--input")

    mapping = read_source_map(source_map) if source_map else None
    given = stores.read_labels(labels, mapping) if labels else None
    store = stores.collect(list(run_outputs), given)
    if given and len(given) > len(store.labels):
        click.echo(f"warning: {len(given) - len(store.labels)} of {len(given)} labels name cases that are not in the runs", err=True)
    hashes = sorted({str(p.get("config_hash")) for p in store.provenance})
    if len(hashes) > 1:
        click.echo(
            f"warning: the cases come from {len(hashes)} different configs ({', '.join(h[:12] for h in hashes[:4])}); "
            "features are comparable only if those configs extract them the same way",
            err=True,
        )
    store.save(store_path, force=force)
    sizes = ", ".join(f"{s} ({store.matrices[s].shape[1]})" for s in store.sets)
    click.echo(f"collected {len(store.case_ids)} cases, feature sets {sizes}, {len(store.labels)} labelled -> {store_path}", err=True)


@features_group.command("export")
@click.argument("store_arg", metavar="[STORE", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.argument("output_arg", metavar="OUT]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-i", "--input", "--store", "store_option", type=click.Path(file_okay=False, path_type=Path), help="Feature store folder (or STORE)."
)
@output_option("Table to write: .csv, .parquet, or - for CSV on stdout (or OUT).", folder=False, dest="output_option")
@feature_set_option("Feature set(s) to export; default: the only one.")
@force_option()
def export_command(
    store_arg: Path | None,
    output_arg: Path | None,
    store_option: Path | None,
    output_option: Path | None,
    sets: tuple[str, ...],
    deprecated_sets: tuple[str, ...],
    force: bool,
) -> None:
    """Write the store STORE (-i) as a table OUT (-o), one row per case: case_id, label, then `<set>.<feature>` columns.

    OUT ending in .csv writes CSV, .parquet writes Parquet (needs pyarrow), `-` prints CSV.

    \b
    Example:
      voxpipe features export -i stores/radiomics -o features.csv
    """
    from voxpipe_plugins.match import export

    store_path = one_path(store_arg, store_option, "STORE", "-i/--input")
    output = one_path(output_arg, output_option, "OUT", "-o/--output")
    sets = feature_sets(sets, deprecated_sets)
    if str(output) != "-":
        refuse_overwrite([output], force)
    store = _load_store(store_path)
    if str(output) != "-":
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"-o {output}: cannot create its folder ({exc.strerror}); choose another") from None
    if str(output) == "-":
        click.echo(export.write_csv(store, None, sets), nl=False)
        return
    suffix = output.suffix.lower()
    if suffix == ".csv":
        export.write_csv(store, output, sets)
    elif suffix in (".parquet", ".pq"):
        export.write_parquet(store, output, sets)
    else:
        raise UsageError(f"{output}: choose a .csv or .parquet file name (or - for CSV on stdout)")
    click.echo(f"wrote {output} ({len(store.case_ids)} rows)", err=True)


def _case_of_input(store, query: str, source_map: Path) -> str:
    """The store's case id for an input file named in the private source map (the name itself is never printed)."""
    if query in store.case_ids:
        return query
    cid = case_for_input(read_source_map(source_map), query)
    if cid is None:
        raise UsageError(f"--query: that input is not in --source-map {source_map} (or its file name is not unique there)")
    if cid not in store.case_ids:
        raise UsageError(f"--query: its case {cid} is not in the store (did its run fail, or is it another store's?)")
    return cid


def _query_vector(store, query: str, sets) -> tuple[object, int | None]:
    """A case id in the store (left out of its own results), or a features.npz / case folder."""
    from voxpipe_plugins.match import store as stores

    if query in store.case_ids:
        i = store.index(query)
        return store.matrix(sets)[i], i
    path = Path(query)
    if not path.exists():
        raise UsageError(
            f"--query {query}: not a case id of the store nor a file; give a case id, a case folder / features.npz, "
            "or an input file with --source-map"
        )
    folder = path.parent if path.is_file() else path
    cid, vectors, _ = stores.read_case(folder)
    import numpy as np

    parts = []
    for s in store.choose(sets):
        if s not in vectors:
            raise UsageError(f"--query {query}: no feature set `{s}` in it")
        if vectors[s].size != store.matrices[s].shape[1]:
            raise UsageError(
                f"--query {query}: feature set `{s}` has {vectors[s].size} values, the store's has "
                f"{store.matrices[s].shape[1]}; extract it with the store's config"
            )
        parts.append(vectors[s])
    own = store.case_ids.index(cid) if cid in store.case_ids else None
    return np.concatenate(parts), own


@click.command("match")
@_store_option
@click.option(
    "--query",
    required=True,
    metavar="CASE_ID|FILE",
    help="A case id in the store, a case folder / features.npz, or (with --source-map) an input file given to `voxpipe run`.",
)
@click.option("-k", "k", type=click.IntRange(1, 10000), default=5, show_default=True, help="Number of matches.")
@_source_map_option("lets --query name an input file instead of its case id")
@_space_options
@json_option()
def match_command(
    store_path, query, k, source_map, sets, deprecated_sets, space, metric, no_standardize, neighbors, components, as_json
) -> None:
    """The K gallery cases most similar to a query, with distances (and labels when the store has them).

    \b
    Example:
      voxpipe match -i stores/radiomics --query case-1f0c2a9d4e7b -k 5 --space isomap
      voxpipe match -i stores/radiomics --query scans/sphere01.nii.gz --source-map private/map.tsv
    """
    from voxpipe_plugins.match.space import distances, top_k

    sets = feature_sets(sets, deprecated_sets)
    store = _load_store(store_path)
    if source_map is not None:
        query = _case_of_input(store, query, source_map)
    vector, own = _query_vector(store, query, sets)
    fitted, coords = _fit(store, sets, space, no_standardize, neighbors, components)
    dist = distances(fitted.transform(vector), coords, metric)[0]
    hits = [
        {"rank": r, "case_id": store.case_ids[i], "distance": round(d, 6), "label": store.labels.get(store.case_ids[i])}
        for r, (i, d) in enumerate(top_k(dist, k, exclude=own), start=1)
    ]
    if as_json:
        click.echo(json.dumps({"query": query, "space": space, "metric": metric, "matches": hits}, indent=2))
        return
    click.echo(f"query {query}  ({space} space, {metric}, {len(store.case_ids)} cases)")
    for hit in hits:
        label = f"  {hit['label']}" if hit["label"] is not None else ""
        click.echo(f"{hit['rank']:>4}  {hit['case_id']}  {hit['distance']:.4f}{label}")


CLUSTER_FILES = ("clusters.csv", "clusters.json", "embedding.png")


@click.command("cluster")
@_store_option
@click.option(
    "--method",
    type=click.Choice(["kmeans", "agglomerative"]),
    default="kmeans",
    show_default=True,
    help="k-means (compact, similar-sized groups) or agglomerative (hierarchical; see --linkage).",
)
@click.option("--clusters", "n_clusters", type=click.IntRange(2, 1000), help="Number of clusters; default: the best silhouette in 2..10.")
@click.option(
    "--linkage",
    type=click.Choice(["ward", "average", "complete", "single"]),
    default="ward",
    show_default=True,
    help="Agglomerative: how cluster distances are measured.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="case_id,label CSV (overrides the store's labels) for the adjusted Rand index.",
)
@output_option("Write clusters.csv, clusters.json and embedding.png (2D Isomap, coloured by cluster and label) here.", dest="output_dir")
@force_option()
@_space_options
@click.option("--seed", type=int, default=0, show_default=True, help="k-means initialisation seed.")
@json_option("Print the result as JSON on stdout (sizes, silhouette, and each case's cluster) instead of the summary line.")
def cluster_command(
    store_path,
    method,
    n_clusters,
    linkage,
    labels,
    output_dir,
    force,
    sets,
    deprecated_sets,
    space,
    metric,
    no_standardize,
    neighbors,
    components,
    seed,
    as_json=False,
) -> None:
    """Cluster the store's cases (k-means or agglomerative) and report the silhouette score.

    \b
    Example:
      voxpipe cluster -i stores/radiomics --method agglomerative --clusters 3 -o clusters/
    """
    from voxpipe.atomic import atomic_path, write_json
    from voxpipe_plugins.match.cluster import cluster
    from voxpipe_plugins.match.plot import scatter

    if metric != "euclidean":
        raise UsageError("clustering uses Euclidean distances; drop --metric")
    sets = feature_sets(sets, deprecated_sets)
    if output_dir is not None:
        refuse_overwrite([output_dir / name for name in CLUSTER_FILES], force)
    store = _load_store(store_path, labels)
    _, coords = _fit(store, sets, space, no_standardize, neighbors, components)
    label_list = store.label_list() if store.labels else None
    result = cluster(coords, method, n_clusters, linkage, label_list, seed)
    line = f"{method}: {result['clusters']} clusters of sizes {result['sizes']}, silhouette {result['silhouette']:.3f}"
    if "adjusted_rand" in result:
        line += f", adjusted Rand {result['adjusted_rand']:.3f} against {result['labelled']} labels"
    if as_json:
        summary = {k: v for k, v in result.items() if k != "assignment"}
        assignment = dict(zip(store.case_ids, (int(a) for a in result["assignment"])))
        echo_json({"method": method, "space": space, "sets": store.choose(sets), **summary, "assignment": assignment})
    else:
        click.echo(line)
    if output_dir is None:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir / "clusters.csv") as tmp:
        rows = ["case_id,cluster,label"] + [f"{c},{a},{store.labels.get(c, '')}" for c, a in zip(store.case_ids, result["assignment"])]
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = {k: v for k, v in result.items() if k != "assignment"}
    summary.update({"space": space, "sets": store.choose(sets), "cases": len(store.case_ids)})
    write_json(output_dir / "clusters.json", summary)
    _, plane = _fit(store, sets, "isomap", no_standardize, neighbors, 2) if len(store.case_ids) >= 3 else (None, coords)
    panels = {"cluster": result["assignment"]}
    if label_list:
        panels["label"] = label_list
    scatter(plane, panels, output_dir / "embedding.png", title=f"Isomap of {', '.join(store.choose(sets))} ({len(store.case_ids)} cases)")
    click.echo(f"wrote clusters.csv, clusters.json, embedding.png in {output_dir}", err=True)


def evaluate_retrieval(
    store_path: Path,
    labels: Path | None,
    ks: tuple[int, ...],
    output_dir: Path | None,
    sets=(),
    space: str = "raw",
    metric: str = "euclidean",
    as_json: bool = False,
) -> int:
    """``voxpipe evaluate --store``: leave-one-out precision@k and mAP over the labelled cases, raw and chosen space."""
    from voxpipe.atomic import write_json
    from voxpipe_plugins.match.retrieval import leave_one_out
    from voxpipe_plugins.match.space import distances, fit_space

    store = _load_store(store_path, labels)
    labelled = [i for i, c in enumerate(store.case_ids) if c in store.labels]
    if len(labelled) < 2:
        raise UsageError(
            f"retrieval evaluation needs labels for at least 2 cases ({len(labelled)} labelled); "
            "give --labels case_id,label CSV or collect with --labels"
        )
    x = store.matrix(sets)[labelled]
    names = [store.labels[store.case_ids[i]] for i in labelled]
    ks = tuple(sorted(set(ks or (1, 5))))
    singletons = sorted(label for label in set(names) if names.count(label) == 1)
    if len(singletons) == len(set(names)):
        raise UsageError("every label occurs once: retrieval needs at least one class with two or more cases")
    if singletons:
        click.echo(f"warning: {len(singletons)} class(es) with one case ({', '.join(singletons[:5])}) are left out as queries", err=True)
    rows = []
    for kind in dict.fromkeys(["raw", space]):
        _, coords = fit_space(x, kind, True, 10, 8)
        scores = leave_one_out(distances(coords, coords, metric), names, ks)
        rows.append({"space": kind, "metric": metric, **{k: v for k, v in scores.items() if k != "per_case"}})
    header = ["space", "queries"] + [f"precision@{k}" for k in ks] + ["map", "chance"]
    if as_json:
        echo_json({"sets": store.choose(sets), "classes": sorted(set(names)), "results": rows})
    else:
        click.echo("| " + " | ".join(header) + " |")
        click.echo("|" + "---|" * len(header))
        for row in rows:
            cells = [row["space"], str(row["queries"])] + [f"{row[h]:.3f}" for h in header[2:]]
            click.echo("| " + " | ".join(cells) + " |")
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "retrieval.json", {"sets": store.choose(sets), "classes": sorted(set(names)), "results": rows})
        click.echo(f"wrote {output_dir / 'retrieval.json'}", err=True)
    return 0


def _read_volume(path: Path, role: str):
    """A 3D NIfTI volume and its affine; errors name the role (FIXED/MOVING), not the file: names may name patients."""
    if not path.is_file() or not path.name.lower().endswith((".nii", ".nii.gz")):
        raise UsageError(f"{role}: give an existing NIfTI file (.nii or .nii.gz); convert DICOM with `voxpipe convert`")
    from voxpipe_plugins.common.tensors import affine_of, to_numpy
    from voxpipe_plugins.io_nifti.reader import read_nifti

    try:
        image = read_nifti(path)
    except Exception as exc:  # noqa: BLE001 - a file that cannot be read is the user's to fix
        raise UsageError(f"{role}: cannot read it as NIfTI ({type(exc).__name__})") from None
    array = to_numpy(image)
    if array.shape[0] != 1 or array.ndim != 4:
        raise UsageError(f"{role}: registration needs a single 3D volume, got shape {array.shape[1:]} with {array.shape[0]} channels")
    return array[0], affine_of(image)


REGISTER_FILES = ("transform.json", "moving_resampled.nii.gz")


@click.command("register")
@click.argument("fixed", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("moving", type=click.Path(dir_okay=False, path_type=Path))
@output_option("Writes transform.json and moving_resampled.nii.gz (the moving image on the fixed grid).", required=True, dest="output_dir")
@force_option()
@click.option(
    "--method",
    type=click.Choice(["mi", "ncc", "phase"]),
    default="mi",
    show_default=True,
    help="mutual information (any contrast), normalised cross-correlation (same contrast), or phase correlation (shift only, same grid).",
)
def register_command(fixed: Path, moving: Path, output_dir: Path, method: str, force: bool = False) -> None:
    """Rigidly register MOVING to FIXED (NIfTI volumes): rotation and shift in RAS millimetres.

    transform.json holds the 4x4 fixed->moving matrix (x_moving = T x_fixed) and its inverse.

    \b
    Example:
      voxpipe register baseline.nii.gz followup.nii.gz -o reg/ --method mi
    """
    import numpy as np

    from voxpipe.atomic import write_json
    from voxpipe_plugins.io_nifti.writer import write_nifti
    from voxpipe_plugins.match.register import register, resample

    refuse_overwrite([output_dir / name for name in REGISTER_FILES], force)
    f, f_affine = _read_volume(fixed, "FIXED")
    m, m_affine = _read_volume(moving, "MOVING")
    result = register(f, f_affine, m, m_affine, method)
    output_dir.mkdir(parents=True, exist_ok=True)
    resampled = resample(m.astype(np.float32), m_affine, result.matrix, f.shape, f_affine)
    write_nifti(resampled[None].astype(np.float32), output_dir / "moving_resampled.nii.gz", affine=f_affine, meta={})
    write_json(output_dir / "transform.json", result.as_dict())
    angles = ", ".join(f"{a:.2f}" for a in result.angles_deg)
    shift = ", ".join(f"{t:.2f}" for t in result.translation_mm)
    click.echo(f"{method}: rotation ({angles}) deg, shift ({shift}) mm; similarity {result.metric_before:.4f} -> {result.metric_after:.4f}")
    click.echo(f"wrote transform.json, moving_resampled.nii.gz in {output_dir}", err=True)


def _read_picture(path: Path, role: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("F"), dtype=np.float64)
    except (OSError, UnidentifiedImageError):
        raise UsageError(f"{role}: cannot read it as an image (PNG, JPEG, TIFF, BMP)") from None


KEYPOINT_FILES = ("keypoints.json", "matches.png", "moving_on_fixed.png")


@click.command("keypoints")
@click.argument("fixed", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("moving", type=click.Path(dir_okay=False, path_type=Path))
@output_option("Writes keypoints.json, matches.png and moving_on_fixed.png.", required=True, dest="output_dir")
@force_option()
@click.option(
    "--detector",
    type=click.Choice(["orb", "sift"]),
    default="orb",
    show_default=True,
    help="ORB (fast, binary descriptors) or SIFT (slower, more robust to scale and contrast).",
)
@click.option("--model", type=click.Choice(["rigid", "similarity"]), default="rigid", show_default=True, help="Transform fitted by RANSAC.")
@click.option(
    "--keypoints", "n_keypoints", type=click.IntRange(10, 20000), default=800, show_default=True, help="Keypoints per image (at most)."
)
@click.option("--ratio", type=click.FloatRange(0.1, 1.0), default=0.8, show_default=True, help="Lowe's ratio test for descriptor matches.")
@click.option("--residual", type=click.FloatRange(0.1, 100), default=2.0, show_default=True, help="RANSAC inlier distance (pixels).")
def keypoints_command(fixed, moving, output_dir, force, detector, model, n_keypoints, ratio, residual) -> None:
    """Match two 2D images, FIXED and MOVING, by keypoints (ORB or SIFT) and fit a rigid or similarity transform with RANSAC.

    \b
    Example:
      voxpipe keypoints slice-a.png slice-b.png -o kp/ --detector sift
    """
    import numpy as np

    from voxpipe.atomic import atomic_path, write_json
    from voxpipe_plugins.match.keypoints import (
        match_images,
        plot_matches,
        warp_onto_fixed,
    )

    refuse_overwrite([output_dir / name for name in KEYPOINT_FILES], force)
    a, b = _read_picture(fixed, "FIXED"), _read_picture(moving, "MOVING")
    result = match_images(a, b, detector, model, n_keypoints, ratio, residual)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "keypoints.json", {"detector": detector, "model": model, **result.as_dict()})
    plot_matches(a, b, result, output_dir / "matches.png")
    from PIL import Image

    warped = warp_onto_fixed(b, result, a.shape)
    with atomic_path(output_dir / "moving_on_fixed.png") as tmp:
        Image.fromarray(np.clip(warped * 255 + 0.5, 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    click.echo(
        f"{detector}: {result.inliers} inliers of {result.matches} matches; rotation {result.rotation_deg:.2f} deg, "
        f"shift ({result.translation_px[0]:.1f}, {result.translation_px[1]:.1f}) px, scale {result.scale:.3f}"
    )
