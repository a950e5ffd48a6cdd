"""``python -m voxpipe`` runs the command-line interface."""

from voxpipe.cli import main

if __name__ == "__main__":
    main()
