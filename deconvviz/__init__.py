"""deconvviz: see what the features of a convolutional network respond to.

The deconvolutional network of Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks" (ECCV 2014, arXiv 1311.2901), for a CIFAR-10 CNN::

    import deconvviz
    model = deconvviz.load_model()                  # the bundled CIFAR-10 network
    # or load_model("torchvision:resnet18", weights="DEFAULT"), load_model("pkg.mod:make")
    data = deconvviz.load_data("builtin", model)    # (image, label) pairs
    images = torch.stack([data[i][0] for i in range(9)])
    proj = deconvviz.project(model, images, layer=2, feature=9)   # (9, 3, 32, 32)
    rep = deconvviz.report(model, "builtin", layers=[2], top=9, out="outputs/rep")
    rep.features_for("disc")                        # what detects discs, strongest first
    rep.feature(2, 9)                               # shown inline in a notebook

Layers count from 1, features (channels) from 0.
"""

__version__ = "0.1.0"

from .api import load_data, load_model, model_normalization  # noqa: E402
from .engine.deconvnet import Projection, deconvolve, project  # noqa: E402
from .engine.layers import list_layers  # noqa: E402
from .engine.receptive import receptive_box  # noqa: E402
from .engine.recording import record  # noqa: E402
from .errors import DeconvvizError  # noqa: E402
from .render.display import to_display  # noqa: E402

__all__ = ["__version__", "load_model", "load_data", "project", "deconvolve", "Projection",
           "list_layers", "receptive_box", "record", "to_display", "model_normalization",
           "DeconvvizError", "report", "Report"]


def __getattr__(name):
    # ``report`` (the module, callable as the verb) and ``Report`` load the report and
    # drawing machinery only when first used, so ``import deconvviz`` stays light.
    if name == "report":
        import importlib
        return importlib.import_module(".report", __name__)
    if name == "Report":
        from .explore import Report
        return Report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _notebook_display() -> None:
    """In IPython / Jupyter, show a :class:`Projection` as its tile grid."""
    import sys
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") \
        else None
    if shell is None:
        return

    def html(projection):
        from .render.notebook import projection_html
        return projection_html(projection)
    shell.display_formatter.formatters["text/html"].for_type(Projection, html)


_notebook_display()
