"""Feature vectors of a network at named places: conv layers and the classifier input.

The invariance and correspondence measures of Zeiler & Fergus (arXiv 1311.2901,
sections 5 and 5.1) compare whole feature vectors of one layer. A place is a
:class:`FeatureLayer`:

* a conv **layer L** (from 1, as :func:`~deconvviz.engine.net.layers.get_layer`
  numbers them): the output of its block (after its ReLU and max pool), the
  same tensor the deconvnet and the reports use, flattened to ``(C * h * w,)``;
* the **classifier input**: the input of the model's last ``nn.Linear`` (for the
  bundled network the 128 hidden units after ReLU and dropout, the paper's
  "layer 7" before the softmax layer).

:func:`extract_features` gets every asked place and the logits from one forward
pass per batch, with hooks that are removed on exit (also when the forward
raises), and leaves the model's train/eval mode as it found it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import DeconvvizError
from .net.execute import execute
from .net.graph import Graph
from .net.layers import conv_stack, get_layer
from .net.network import graph_of

__all__ = [
    "FeatureLayer",
    "parse_feature_layer",
    "resolve_feature_layers",
    "last_linear",
    "extract_features",
    "CLASSIFIER_NAMES",
]

CLASSIFIER_NAMES = ("classifier", "classifier input", "classifier-input", "classifier_input", "fc")


@dataclass(frozen=True)
class FeatureLayer:
    """A place whose feature vector is compared: ``kind`` ``"conv"`` (``index`` = layer
    number from 1, on a plain conv stack), ``"classifier"`` (the input of the last
    ``nn.Linear``) or ``"node"`` (``name``: a node of any network's traced graph, as
    ``deconvviz layers`` names it)."""

    kind: str
    index: int = 0
    name: str = ""

    def describe(self) -> str:
        """``"layer 2"``, ``"node layer2.1.relu_1"`` or ``"classifier input"``."""
        if self.kind == "node":
            return f"node {self.name}"
        return f"layer {self.index}" if self.kind == "conv" else "classifier input"

    @property
    def key(self) -> str:
        """``"layer2"``, the node name or ``"classifier_input"``: for HDF5 group names."""
        if self.kind == "node":
            return self.name
        return f"layer{self.index}" if self.kind == "conv" else "classifier_input"


LayerSpec = Union[int, str, FeatureLayer]


def parse_feature_layer(spec: LayerSpec) -> FeatureLayer:
    """``2``, ``"2"``, ``"classifier"`` (or ``"classifier input"``, ``"fc"``) -> a
    :class:`FeatureLayer` (not yet checked against a model)."""
    if isinstance(spec, FeatureLayer):
        return spec
    if isinstance(spec, bool):
        raise DeconvvizError(f"layer {spec!r} is not a layer")
    if isinstance(spec, int):
        return FeatureLayer("conv", spec)
    text = str(spec).strip().lower()
    if text.lstrip("-").isdigit():
        return FeatureLayer("conv", int(text))
    if text in CLASSIFIER_NAMES:
        return FeatureLayer("classifier")
    if not text:
        raise DeconvvizError(
            f"layer {spec!r} is not a layer: give a conv layer number, a node "
            "name (see 'deconvviz layers') or 'classifier' (the input of the "
            "last Linear)"
        )
    return FeatureLayer("node", name=str(spec).strip())


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` in module order (its classifier read-out)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise DeconvvizError(
            f"{type(model).__name__} has no nn.Linear, so it has no 'classifier input' layer"
        )
    return found[-1]


def resolve_feature_layers(
    model: nn.Module,
    specs: Sequence[LayerSpec],
    image_size: Tuple[int, int],
    graph: Optional[Graph] = None,
) -> List[FeatureLayer]:
    """Parse ``specs`` and check each against ``model`` (one-line error for a layer
    that does not exist); duplicates are dropped, the order kept. ``graph``: the
    model's traced graph where the caller holds it."""
    if isinstance(specs, (str, int, FeatureLayer)):
        specs = [specs]
    layers: List[FeatureLayer] = []
    for spec in specs:
        fl = parse_feature_layer(spec)
        if fl.kind != "classifier" and graph is None:
            graph = graph_of(model, image_size)
        if fl.kind == "conv":
            get_layer(model, fl.index, image_size, graph)
        elif fl.kind == "node":
            # one line, with the closest names
            graph.at_size(image_size).info(fl.name)
        else:
            last_linear(model)
        if fl not in layers:
            layers.append(fl)
    if not layers:
        raise DeconvvizError("no layer given")
    return layers


@contextlib.contextmanager
def _captured(
    model: nn.Module, layers: Sequence[FeatureLayer], graph: Optional[Graph]
) -> Iterator[Dict[FeatureLayer, torch.Tensor]]:
    """Hooks that store each layer's flattened feature vector ``(B, D)`` of the last
    forward pass; every handle is removed on exit."""
    store: Dict[FeatureLayer, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        for fl in layers:
            if fl.kind == "node":
                continue  # read from the traced graph, see extract_features
            if fl.kind == "conv":
                module = conv_stack(model)[get_layer(model, fl.index, graph=graph).end - 1]

                def hook(mod, inputs, output, fl=fl):
                    store[fl] = output.detach().flatten(1).clone()

                stack.callback(module.register_forward_hook(hook).remove)
            else:

                def pre_hook(mod, inputs, fl=fl):
                    store[fl] = inputs[0].detach().flatten(1).clone()

                stack.callback(last_linear(model).register_forward_pre_hook(pre_hook).remove)
        yield store


def extract_features(
    model: nn.Module, x: torch.Tensor, layers: Sequence[LayerSpec], batch_size: int = 256
) -> Tuple[Dict[FeatureLayer, torch.Tensor], torch.Tensor]:
    """Feature vectors and logits of model inputs ``x`` ``(B, C, H, W)``.

    Returns ``({FeatureLayer: (B, D_l) float64}, logits (B, K) float64)``, all on
    the CPU. The model runs in eval mode, without gradients, in batches of
    ``batch_size``; its mode is restored and no hook is left on it.
    """
    if x.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(x.shape)}")
    size = (int(x.shape[-2]), int(x.shape[-1]))
    specs = [layers] if isinstance(layers, (str, int, FeatureLayer)) else list(layers)
    # The traced graph, made once, where a layer is named by number or node.
    traced = {parse_feature_layer(s).kind for s in specs} - {"classifier"}
    graph = graph_of(model, size) if traced else None
    layers = resolve_feature_layers(model, specs, size, graph)
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (x.device, x.dtype)
    feats: Dict[FeatureLayer, List[torch.Tensor]] = {fl: [] for fl in layers}
    logits = []
    was_training = model.training
    model.eval()
    try:
        with _captured(model, layers, graph) as store, torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                store.clear()
                xb = x[s : s + batch_size].to(device=device, dtype=dtype)
                out = model(xb)
                logits.append(out.detach().to("cpu", torch.float64))
                nodes = [fl for fl in layers if fl.kind == "node"]
                if nodes:
                    got = execute(graph, xb, [fl.name for fl in nodes])
                    for fl in nodes:
                        store[fl] = got[fl.name].detach().flatten(1).clone()
                for fl in layers:
                    if fl not in store:
                        raise DeconvvizError(
                            f"the model's forward pass did not run {fl.describe()}'s module"
                        )
                    feats[fl].append(store[fl].to("cpu", torch.float64))
    finally:
        model.train(was_training)
    if not logits:
        raise DeconvvizError("no images given")
    return {fl: torch.cat(v) for fl, v in feats.items()}, torch.cat(logits)
