"""Networks: the architecture registry (:mod:`.architectures`), checkpoints and the
bundled weights (:mod:`.checkpoint`, ``_bundled/``) and training (:mod:`.train`).

May import :mod:`deconvviz.data` (training reads images) and the top-level
``errors`` and ``progress``; nothing else of the package.
"""

from .architectures import ARCHITECTURES, CifarCNN, build_model, register_architecture  # noqa: E402,F401

__all__ = ["ARCHITECTURES", "CifarCNN", "build_model", "register_architecture"]
