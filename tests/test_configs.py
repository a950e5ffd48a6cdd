"""Every shipped config validates as it is (they are documentation users copy)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from voxpipe.config import load_config

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(registry, path):
    validated = load_config(path, registry)
    assert validated.stages[0].spec.kind.value == "loader"


def test_there_are_recipes():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "ct-body-mask", "ct-lungs", "ct-bone", "brain-tissue", "ct-denoise-window", "mr-denoise-normalise", "unet-train"} <= names
