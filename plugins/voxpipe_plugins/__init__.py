"""VoxPipe's built-in plugins, one subpackage per family.

Each subpackage has a light ``plugin`` module (registered through the ``voxpipe``
entry-point group in pyproject.toml) that declares stage specs, and implementation
modules that are imported only when a stage is built.
"""
