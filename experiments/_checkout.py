"""What every script here does before it imports deconvviz, in one place: put the checkout
(and this folder, for the scripts that build on a sibling) on ``sys.path``, so the scripts
run from a clone without installing it, and name the default data and output folders.
Each script imports it first: ``from _checkout import DATA, OUT``."""

import sys
from pathlib import Path

__all__ = ["HERE", "REPO", "DATA", "OUT"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: The CIFAR-10 copy beside the clone (an ImageFolder tree) that the figures default to.
DATA = str(REPO.parent / "shared" / "datasets" / "cifar10")
#: Where the figures go by default (``outputs/`` is ignored by git).
OUT = str(REPO / "outputs" / "figures")
