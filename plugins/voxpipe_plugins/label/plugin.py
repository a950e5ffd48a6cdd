"""Registers the `label.*` post-processing stages: largest_component, fill_holes, open, close, components.

Light on purpose (pydantic + voxpipe only); the implementations (scipy) are imported when
a pipeline is built. Sizes are in mm (and mm³) and converted with the voxel spacing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams


class LabelParams(StageParams):
    key: CaseKey = Field("label", description="Case key of the label map to process.")
    output_key: CaseKey | None = Field(
        None, json_schema_extra={"shown": {"type": "str | None"}}, description="Case key for the result; unset: replace `key`."
    )
    labels: list[int] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Label values to process, each on its own; unset: every non-zero value. Other values are kept as they are.",
    )


class LargestComponentParams(LabelParams):
    count: int = Field(1, ge=1, le=1000, description="Keep this many largest connected components per label (2 for a pair of lungs).")
    connectivity: int = Field(1, ge=1, le=3, description="Neighbours that connect: 1 faces, 2 faces+edges, 3 (3D) also corners.")


class FillHolesParams(LabelParams):
    mode: Literal["slice", "volume"] = Field(
        "slice",
        description="`slice`: fill holes in each axial slice (the axis nearest superior-inferior, from the affine): fills "
        "a body outline that is open at the volume's top and bottom; `volume`: fill enclosed cavities in 3D.",
    )


class MorphologyParams(LabelParams):
    radius_mm: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Radius of the structuring ball in mm (pixels for 2D photos); per axis it "
        "spans floor(radius / spacing) voxels, an ellipsoid on anisotropic voxels.",
    )


class ComponentsParams(LabelParams):
    min_size: float = Field(0.0, ge=0, description="Drop components smaller than this (see `size_unit`).")
    size_unit: Literal["mm3", "voxels"] = Field("mm3", description="Unit of `min_size`: mm³ (mm² for 2D) or voxels.")
    connectivity: int = Field(1, ge=1, le=3, description="Neighbours that connect: 1 faces, 2 faces+edges, 3 (3D) also corners.")
    max_components: int = Field(255, ge=1, le=65535, description="Keep at most this many, the largest first.")
    relabel: bool = Field(
        True,
        description="true: number the kept components 1..N, largest first; false: keep each voxel's original "
        "label value and name (a size filter: drop specks smaller than `min_size`).",
    )
    name: str = Field(
        "component", min_length=1, max_length=48, description="relabel: label names are `<name>_1`, `<name>_2`, ... (1 is the largest)."
    )


def _spec(id, summary, params, factory, description):
    return StageSpec(
        id=id,
        kind=StageKind.TRANSFORM,
        summary=summary,
        params=params,
        factory=factory,
        reads=("{key}",),
        writes=("{output_key}",),
        description=description,
    )


@hookimpl
def voxpipe_register_stages(register):
    register(
        _spec(
            "label.largest_component",
            "Keep the largest connected component(s) of each label.",
            LargestComponentParams,
            "voxpipe_plugins.label.ops:LargestComponent",
            "Smaller components of each processed label value become background. An empty map gives a warning, not an error.",
        )
    )
    register(
        _spec(
            "label.fill_holes",
            "Fill holes in each label (per axial slice or in 3D).",
            FillHolesParams,
            "voxpipe_plugins.label.ops:FillHoles",
            "Enclosed background becomes the label; voxels of other labels are never overwritten.",
        )
    )
    register(
        _spec(
            "label.open",
            "Morphological opening with a ball of radius in mm (ellipsoidal in voxels).",
            MorphologyParams,
            "voxpipe_plugins.label.ops:Opening",
            "Erosion then dilation (exact, via Euclidean distance transforms in mm): removes specks and thin bridges.",
        )
    )
    register(
        _spec(
            "label.close",
            "Morphological closing with a ball of radius in mm (ellipsoidal in voxels).",
            MorphologyParams,
            "voxpipe_plugins.label.ops:Closing",
            "Dilation then erosion: fills gaps narrower than the ball; only background voxels are claimed.",
        )
    )
    register(
        _spec(
            "label.components",
            "Connected-component labelling with a minimum size in mm³ or voxels; 1 = largest.",
            ComponentsParams,
            "voxpipe_plugins.label.ops:Components",
            "The selected labels are merged into one foreground, split into connected components and renumbered by size.",
        )
    )
