"""deconvviz: see what the features of a convolutional network respond to.

The deconvolutional network of Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks" (ECCV 2014, arXiv 1311.2901), for any traceable CNN::

    import deconvviz
    model = deconvviz.load_model()                  # the bundled CIFAR-10 network
    # or load_model("torchvision:resnet18", weights="DEFAULT"), load_model("timm:resnet50"),
    # load_model("pkg.mod:make")
    data = deconvviz.load_data("builtin", model)    # (image, label) pairs
    images = torch.stack([data[i][0] for i in range(9)])
    proj = deconvviz.project(model, images, layer=2, feature=9)   # (9, 3, 32, 32)
    rep = deconvviz.report(model, "builtin", layers=[2], top=9, out="outputs/rep")
    rep.features_for("disc")                        # what detects discs, strongest first
    rep.feature(2, 9)                               # shown inline in a notebook

Layers are node names (torchvision's, listed by ``deconvviz layers``) or, for a plain
conv stack, block numbers from 1; features (channels) count from 0.
"""

__version__ = "0.1.0"

from .errors import DeconvvizError  # noqa: E402

__all__ = [
    "__version__",
    "load_model",
    "load_data",
    "project",
    "deconvolve",
    "Projection",
    "list_layers",
    "receptive_box",
    "record",
    "to_display",
    "model_normalization",
    "DeconvvizError",
    "report",
    "Report",
]

# The API is imported on first use (PEP 562), so that the command line's help, and
# anything else that needs no tensors, starts without importing torch.
_LAZY = {
    "load_model": "api",
    "load_data": "api",
    "model_normalization": "api",
    "project": "engine.deconv.deconvnet",
    "deconvolve": "engine.deconv.deconvnet",
    "Projection": "engine.deconv.deconvnet",
    "list_layers": "engine.net.layers",
    "receptive_box": "engine.net.geometry.patches",
    "record": "engine.deconv.hooks",
    "to_display": "render.display",
    "report": "runs.report_run",
    "Report": "explore",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def _notebook_display() -> None:
    """In IPython / Jupyter, show a :class:`Projection` as its tile grid. Registered by
    the class's module and name, so neither torch nor the engine is imported until a
    projection is made (and displayed)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = (
        ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    )
    if shell is None:
        return

    def html(projection):
        from .render.notebook import projection_html

        return projection_html(projection)

    # By name, so that torch is imported only when a projection exists; the name is where
    # the class is defined (tests/test_notebook.py guards it).
    shell.display_formatter.formatters["text/html"].for_type_by_name(
        f"{__name__}.engine.deconv.projection", "Projection", html
    )


_notebook_display()
