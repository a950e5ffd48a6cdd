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
    assert {
        "demo",
        "ct-body-mask",
        "ct-lungs",
        "ct-bone",
        "brain-tissue",
        "ct-denoise-window",
        "mr-denoise-normalise",
        "unet-train",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_resolved_config_validates_again_with_the_same_hash(registry, path, tmp_path):
    """The resolved config (every default written out: the manifest's copy, and what batch
    workers receive) must itself be a valid config that hashes the same."""
    import yaml

    validated = load_config(path, registry)
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump({**validated.resolved(), "name": validated.config.name}, sort_keys=False))
    again = load_config(copy, registry)
    assert again.resolved()["stages"] == validated.resolved()["stages"]
    if not any(stage.spec.content_files for stage in validated.stages):  # weights are found relative to the config
        assert again.hash == validated.hash
