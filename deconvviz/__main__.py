"""``python -m deconvviz`` runs the command line."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="deconvviz")
