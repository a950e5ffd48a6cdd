"""The plugin hooks: the whole contract between VoxPipe and its plugins.

Hooks are few and registration-shaped, as in datasette and llm: a plugin is handed a
``register`` callable and registers stage specs with it. New kinds of things to
register can be added as new hooks without breaking existing plugins.

A plugin is a module (or object) named by an entry point in the ``voxpipe`` group::

    [project.entry-points.voxpipe]
    my_plugin = "my_package.plugin"

and implements hooks with the :data:`hookimpl` marker (plugin authors import it, and the spec
types, from :mod:`voxpipe.plugin`)::

    from voxpipe.plugin import hookimpl

    @hookimpl
    def voxpipe_register_stages(register):
        register(StageSpec(...))

The entry point names a module (``my_package.plugin``), not a function in it: the hooks are
the module's ``@hookimpl`` functions. There are four hooks: stages, trainers, commands and input sources.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from voxpipe.commands_spec import CommandSpec
from voxpipe.input_sources import InputSourceSpec
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


@hookspec
def voxpipe_register_commands(register: Callable[[CommandSpec], None]) -> None:
    """Register ``voxpipe <name>`` commands, one :class:`~voxpipe.commands_spec.CommandSpec` each.

    Called once per plugin when the registry loads, under the same rules as
    :func:`voxpipe_register_stages`: cheap, no heavy imports (the spec's ``factory`` is a
    ``"module:attribute"`` string naming a click command, imported only when the command
    runs or its ``--help`` is shown; ``summary`` is what ``voxpipe --help`` lists). A name
    that another plugin also registers, or that a core command has (run, validate, plugins,
    train), is reported naming both and left out. Blocking the plugin removes its commands.

    Args:
        register: call it with each :class:`~voxpipe.commands_spec.CommandSpec`.

    Returns:
        Nothing; the return value is ignored (a hook that returns specs instead of calling
        ``register`` is warned about).
    """


@hookspec
def voxpipe_register_input_sources(register: Callable[[InputSourceSpec], None]) -> None:
    """Register URL schemes that ``-i`` accepts (``dicomweb+https://``), one :class:`~voxpipe.input_sources.InputSourceSpec` each.

    Called when an input URL is first resolved (not when ``voxpipe --help`` or ``validate``
    run), under the same rules as :func:`voxpipe_register_stages`: cheap, no heavy imports
    (the spec's ``opener`` is a ``"module:function"`` string, imported only when an input of
    that scheme is used). The opener copies the input into a private temporary folder as
    ordinary files; discovery and loading then run as on a local folder. A scheme two plugins
    register is left out and using it is an error naming both.

    Args:
        register: call it with each :class:`~voxpipe.input_sources.InputSourceSpec`.

    Returns:
        Nothing; the return value is ignored.
    """
