"""Registers `write.features` (feature files per case) and `match.nearest` (k most similar store cases).

The commands that work on a whole store (features collect/export, match, cluster, register,
keypoints) are in :mod:`voxpipe_plugins.match.commands`, registered here through the
commands hook; `voxpipe evaluate --store` (retrieval) calls into it too. Light on
purpose: NumPy and scikit-learn are imported when a stage is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams


class WriteFeaturesParams(StageParams):
    sets: list[CaseKey] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"shown": {"type": "list[str] | None"}},
        description="Feature sets to write; unset: every set in the case.",
    )


class NearestParams(StageParams):
    store: str = Field(
        min_length=1, max_length=4096, description="Feature store folder (`voxpipe features collect`), relative to the config."
    )
    k: int = Field(5, ge=1, le=1000, description="Number of neighbours.")
    sets: list[CaseKey] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"shown": {"type": "list[str] | None"}},
        description="Feature sets to match on (concatenated); unset: the store's only set.",
    )
    space: Literal["raw", "isomap"] = Field("raw", description="Standardised features, or their Isomap embedding.")
    metric: Literal["euclidean", "cosine"] = Field("euclidean", description="Distance between vectors.")
    standardize: bool = Field(True, description="z-score every feature with the store's mean and standard deviation.")
    neighbors: int = Field(10, ge=2, le=500, description="Isomap: neighbours in the k-NN graph.")
    components: int = Field(8, ge=1, le=256, description="Isomap: embedding dimensions.")
    name: CaseKey = Field("match", description="Key in `case['outputs']`.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="write.features",
            kind=StageKind.WRITER,
            summary="Write the case's feature vectors: features.npz (float32 per set) + features.json (names, stage, versions).",
            description=(
                "features.json lists each set's element names and the history record of the stage that made it, the "
                "library versions and the head predictions (case['outputs']) when present. `voxpipe features collect` "
                "gathers these files from run outputs into a feature store."
            ),
            params=WriteFeaturesParams,
            factory="voxpipe_plugins.match.writer:FeatureWriter",
            reads=("features",),
        )
    )
    register(
        StageSpec(
            id="match.nearest",
            kind=StageKind.MATCHER,
            summary="Find the k most similar cases of a feature store (raw or Isomap space); k-NN label vote when it has labels.",
            description=(
                "The store is loaded and the space fitted when the pipeline is built. Writes case['outputs'][name] = "
                "{neighbors: [{case_id, distance, label}], label, votes}. A case that is itself in the store is left out "
                "of its own neighbours."
            ),
            params=NearestParams,
            factory="voxpipe_plugins.match.nearest:NearestMatcher",
            reads=("features",),
            writes=("outputs",),
        )
    )


_COMMANDS = (
    ("features", "Feature stores: collect run outputs into one (features collect), export them as tables.", "features_group"),
    ("match", "The K store cases most similar to a query, with distances and labels.", "match_command"),
    ("cluster", "Cluster a feature store's cases (k-means or agglomerative), with the silhouette score.", "cluster_command"),
    ("register", "Rigidly register two NIfTI volumes (mutual information, cross-correlation or phase).", "register_command"),
    ("keypoints", "Match two 2D images by ORB or SIFT keypoints and fit a transform with RANSAC.", "keypoints_command"),
)


@hookimpl
def voxpipe_register_commands(register):
    for name, summary, attribute in _COMMANDS:
        register(CommandSpec(name=name, summary=summary, factory=f"voxpipe_plugins.match.commands:{attribute}"))
