"""Networks: the architecture registry (:mod:`.architectures`), checkpoints and the
bundled weights (:mod:`.checkpoint`, ``_bundled/``), training (:mod:`.train`, with
the filter-RMS clipping of :mod:`.constraints`) and
:func:`resolve_model` (:mod:`.zoo`), which turns what ``--model`` takes (a
checkpoint, ``torchvision:NAME``, ``package.module:function``) into a network.

May import :mod:`deconvviz.data` (training reads images) and the top-level
``errors`` and ``progress``; nothing else of the package.
"""

from .architectures import ARCHITECTURES, CifarCNN, build_model, register_architecture  # noqa: E402,F401
from .zoo import resolve_model, torchvision_models  # noqa: E402,F401

__all__ = [
    "ARCHITECTURES",
    "CifarCNN",
    "build_model",
    "register_architecture",
    "resolve_model",
    "torchvision_models",
]
