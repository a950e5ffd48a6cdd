"""``python -m voxpipe`` runs the command-line interface, as the installed command does."""

from voxpipe.entry import run

if __name__ == "__main__":
    run()
