"""Config problems carry a kind that code branches on; the text a user reads is unchanged."""

from __future__ import annotations

import pytest

from voxpipe.errors import PROBLEM_KINDS, ConfigError, Problem


def test_problems_and_plain_text_give_the_same_lines():
    error = ConfigError([Problem("unknown_stage", "a.yaml: stage 2: unknown stage `x.y`"), "a.yaml: stage 3: bad"])
    assert str(error) == "a.yaml: stage 2: unknown stage `x.y`\na.yaml: stage 3: bad"
    assert error.problems == ["a.yaml: stage 2: unknown stage `x.y`", "a.yaml: stage 3: bad"]
    assert [p.kind for p in error.details] == ["unknown_stage", "invalid"]
    assert str(error.details[0]) == error.problems[0]
    assert error.of_kind("unknown_stage") == [error.details[0]] and error.of_kind("plugins_differ") == []


@pytest.mark.parametrize("kind", ["unknown stage", "Unknown_Stage", "", "missing"])
def test_a_misspelt_kind_is_refused(kind):
    assert kind not in PROBLEM_KINDS
    with pytest.raises(ValueError, match="unknown problem kind"):
        Problem(kind, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "problems, expected",
    [
        # the missing stage is found by its kind, wherever it is and whatever its wording
        (
            [Problem("invalid", "c.yaml: version: unsupported"), Problem("unknown_stage", "c.yaml: stage 2 (crashtest.act): not here")],
            "plugin not installed: c.yaml: stage 2 (crashtest.act): not here",
        ),
        (
            [Problem("unknown_stage", "c.yaml: stage 4: Stufe `q.r` unbekannt")],
            "plugin not installed: c.yaml: stage 4: Stufe `q.r` unbekannt",
        ),
        # a problem whose text merely mentions "unknown stage" is not one
        (
            [Problem("invalid", "c.yaml: field `name`: 'unknown stage' is not allowed"), Problem("unknown_stage", "c.yaml: stage 3: gone")],
            "plugin not installed: c.yaml: stage 3: gone",
        ),
        (["c.yaml: stage 1: only text"], "plugin not installed: c.yaml: stage 1: only text"),
        ([], "plugin not installed: "),
    ],
)
def test_dask_probe_names_the_missing_stage_by_kind(monkeypatch, tmp_path, problems, expected):
    from voxpipe import dask_executor, registry, worker

    def refuse(recipe, reg):
        raise ConfigError(problems)

    monkeypatch.setattr(worker, "validate_recipe", refuse)
    monkeypatch.setattr(registry.Registry, "load", classmethod(lambda cls, selection: None))
    recipe = worker.RunRecipe.__new__(worker.RunRecipe)
    object.__setattr__(recipe, "env", {})
    assert dask_executor.probe_worker(recipe) == expected
