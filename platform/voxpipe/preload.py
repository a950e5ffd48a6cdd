"""What the fork server imports once, so that every worker forked from it starts warm.

Importing this module *is* the preload: the fork server (:mod:`voxpipe.executors`) names
it as its only preload entry. Two things keep it short (measured on the 2-core benchmark
machine, median of 5: 3.6 s for the plain imports, ~1.6 s with both):

* heavy libraries that MONAI imports eagerly but a pipeline rarely calls are deferred to
  their first use (:mod:`voxpipe.deferred_imports`; ~0.7 s);
* the cyclic garbage collector is off while torch and MONAI import, following the recipe
  in the :mod:`gc` documentation for a process that forks without exec. Their imports
  leave ~400,000 objects and none is garbage, yet the collector would walk them
  again and again (~0.6 s). :func:`gc.freeze` then moves everything imported into the
  permanent generation, so the collections a worker runs never traverse (or write to, and
  so copy) the pages it shares with the fork server; the collector is then switched back on.
"""

from __future__ import annotations

import gc

MODULES = ("numpy", "torch", "monai.transforms", "scipy.ndimage", "voxpipe.worker", "voxpipe.pipeline")

DEFERRED = {
    # module MONAI imports -> the names MONAI takes from it (optional_import(..., name=...))
    "scipy.signal": ("hilbert", "iirnotch"),  # with scipy.stats: the largest
    "scipy.sparse.linalg": ("spsolve", "cg"),
    "scipy.sparse.csgraph": ("dijkstra",),
    "scipy.optimize": ("linear_sum_assignment",),
    "scipy.spatial": ("KDTree",),
    "skimage.morphology": ("disk", "opening"),
    "skimage.segmentation": ("watershed",),
    "matplotlib": (),
    "matplotlib.pyplot": (),
    "sklearn": (),  # its __init__ alone imports scipy.stats
    "sklearn.metrics": ("silhouette_score",),
    "sklearn.linear_model": ("LogisticRegression",),
}


OUR_DISTRIBUTION = "voxpipe"


def builtin_plugins() -> list[str]:
    """The modules of VoxPipe's own plugins (their stage specs and parameter models).

    Only these: they are ours and import nothing heavy. "Ours" is decided by the
    distribution that declares the entry point (``voxpipe``), not by a module-name prefix,
    so the core names no plugin package. Third-party plugins load in each worker, as in
    every other process, so that their import-time code never runs in the fork server.
    """
    from importlib.metadata import entry_points

    from voxpipe.hookspecs import ENTRY_POINT_GROUP

    return [e.value.partition(":")[0].strip() for e in entry_points(group=ENTRY_POINT_GROUP) if _distribution(e) == OUR_DISTRIBUTION]


def _distribution(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    name = (dist.metadata["Name"] or dist.name) if dist is not None else ""
    return name.lower().replace("_", "-")


def import_frozen(modules, deferred=None) -> None:
    """Import ``modules`` with the collector off (deferring ``deferred`` first), then freeze what they created."""
    import importlib

    from voxpipe.deferred_imports import defer

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if deferred:
            defer(deferred)
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def preload() -> None:
    import_frozen((*MODULES, *builtin_plugins()), DEFERRED)


preload()
