"""Example VoxPipe plugin: the ``example.invert`` stage (intensity inversion).

Importing this package is cheap on purpose: the hook lives in :mod:`.plugin` (pydantic
only) and the torch code in :mod:`.invert`, imported when a pipeline builds the stage.
"""

__version__ = "0.1.0"
