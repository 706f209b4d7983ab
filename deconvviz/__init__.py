"""deconvviz: see what the features of a convolutional network respond to.

The deconvolutional network of Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks" (ECCV 2014, arXiv 1311.2901), for a CIFAR-10 CNN::

    import deconvviz
    model = deconvviz.load_model()                  # the bundled CIFAR-10 network
    # or load_model("torchvision:resnet18", weights="DEFAULT"), load_model("timm:resnet50"),
    # load_model("pkg.mod:make")
    data = deconvviz.load_data("builtin", model)    # (image, label) pairs
    images = torch.stack([data[i][0] for i in range(9)])
    proj = deconvviz.project(model, images, layer=2, feature=9)   # (9, 3, 32, 32)

Layers count from 1, features (channels) from 0.
"""

__version__ = "0.1.0"

from .api import load_data, load_model, model_normalization  # noqa: E402
from .engine.deconv.deconvnet import Projection, deconvolve, project  # noqa: E402
from .engine.net.layers import list_layers  # noqa: E402
from .engine.net.geometry import receptive_box  # noqa: E402
from .engine.deconv.hooks import record  # noqa: E402
from .errors import DeconvvizError  # noqa: E402
from .render.display import to_display  # noqa: E402

__all__ = ["__version__", "load_model", "load_data", "project", "deconvolve", "Projection",
           "list_layers", "receptive_box", "record", "to_display", "model_normalization",
           "DeconvvizError"]
