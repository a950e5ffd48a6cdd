"""Demo inputs for ``voxpipe sample-data``: real images that ship with the dependencies, and synthetic ones."""
