"""The plugin hooks: the whole contract between VoxPipe and its plugins.

Hooks are few and registration-shaped, as in datasette and llm: a plugin is handed a
``register`` callable and registers stage specs with it. New kinds of things to
register can be added as new hooks without breaking existing plugins.

A plugin is a module (or object) named by an entry point in the ``voxpipe`` group::

    [project.entry-points.voxpipe]
    my_plugin = "my_package.plugin"

and implements hooks with the :data:`hookimpl` marker::

    from voxpipe.hookspecs import hookimpl

    @hookimpl
    def voxpipe_register_stages(register):
        register(StageSpec(...))
"""

from __future__ import annotations

from typing import Callable

import pluggy

from voxpipe.stage import StageSpec, TrainerSpec

PROJECT_NAME = "voxpipe"
ENTRY_POINT_GROUP = "voxpipe"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def voxpipe_register_stages(register: Callable[[StageSpec], None]) -> None:
    """Register the plugin's stages.

    Called once per plugin when the registry is loaded (``voxpipe plugins``, ``validate``,
    ``run`` and the Python API), before any config is validated. It must be cheap: declare
    :class:`~voxpipe.stage.StageSpec` objects and call ``register(spec)`` for each; do not
    import torch, MONAI or other heavy libraries here (point ``factory`` at a
    ``"module:attribute"`` string instead).

    Args:
        register: call it with each :class:`~voxpipe.stage.StageSpec`. A malformed spec makes
            the registry skip the whole plugin and report why.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def voxpipe_register_trainers(register: Callable[[TrainerSpec], None]) -> None:
    """Register trainers that ``voxpipe train`` can run, one per task name.

    Called once per plugin when the registry loads, like :func:`voxpipe_register_stages`, and
    under the same rules: cheap, no heavy imports, a malformed spec skips the plugin.

    Args:
        register: call it with each :class:`~voxpipe.stage.TrainerSpec`.

    Returns:
        Nothing; the return value is ignored.
    """
