"""Tracing a model with torch.fx exactly as torchvision's feature extraction does.

torchvision's ``NodePathTracer`` with its defaults (``math`` and
``torchvision.ops`` wrapped, every ``torchvision.ops`` module a leaf), so node
names equal ``get_graph_node_names``'s (its naming is repeated here: torchvision is
imported only by networks that use it); then torchvision's sequence modules
(``Conv2dNormActivation``) are opened up into their steps. :func:`eval_mode`
puts a model in eval mode and restores every submodule's own flag.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from torch import fx, nn

from ...errors import DeconvvizError
from ...models.timm_models import fx_leaf_modules

__all__ = ["trace", "eval_mode", "one_line", "torchvision_class", "is_torchvision"]


def torchvision_class(path: str) -> Optional[type]:
    """The class ``torchvision.<path>`` (``"ops.FrozenBatchNorm2d"``) where torchvision is
    imported, else None: no network holds one of its modules before, and importing it
    costs over a second of CPU (it imports ``torch._dynamo``)."""
    obj = sys.modules.get("torchvision")
    for part in path.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    return obj if isinstance(obj, type) else None


def is_torchvision(m: object, path: str) -> bool:
    """Whether ``m`` is an instance of ``torchvision.<path>`` (:func:`torchvision_class`)."""
    cls = torchvision_class(path)
    return cls is not None and isinstance(m, cls)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's own train/eval flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        model.train(flags[0][1])
        for m, training in flags:
            if m.training != training:
                m.training = training


def _leaf_modules() -> List[type]:
    # torchvision's feature extraction treats its own ops' modules as leaves.
    ops = sys.modules.get("torchvision.ops")
    return [
        c
        for c in (vars(ops).values() if ops is not None else ())
        if isinstance(c, type) and issubclass(c, nn.Module)
    ]


class _NodePathTracer(fx.Tracer):
    """torchvision's ``NodePathTracer`` (``models/feature_extraction.py``), the same names:
    a node is named by its module path and op, a repeat within its module gets ``_1``,
    ``_2``, ... (tests check the names against ``get_graph_node_names``). Ours, so that
    a network without torchvision modules is traced without importing torchvision."""

    def __init__(self, leaf_modules: Sequence[type], **kwargs):
        super().__init__(**kwargs)
        self.leaf_modules = tuple(leaf_modules)
        self.current_module_qualname = ""
        self.node_to_qualname: Dict[fx.Node, str] = {}

    def is_leaf_module(self, m: nn.Module, module_qualname: str) -> bool:
        return isinstance(m, self.leaf_modules) or super().is_leaf_module(m, module_qualname)

    def call_module(self, m, forward, args, kwargs):
        old = self.current_module_qualname
        try:
            qualname = self.path_of_module(m)
            self.current_module_qualname = qualname
            if not self.is_leaf_module(m, qualname):
                return forward(*args, **kwargs)
            return self.create_proxy("call_module", qualname, args, kwargs)
        finally:
            self.current_module_qualname = old

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *_):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr)
        self.node_to_qualname[proxy.node] = self._qualname(proxy.node)
        return proxy

    def _qualname(self, node: fx.Node) -> str:
        name = self.current_module_qualname
        if node.op != "call_module":
            name = f"{name}.{node}" if name else str(node)
        if re.match(r".+_[0-9]+$", name) is not None:
            name = name.rsplit("_", 1)[0]  # torch.fx's global suffix; ours is per module
        for existing in reversed(self.node_to_qualname.values()):
            if re.match(rf"{name}(_[0-9]+)?$", existing) is not None:
                postfix = existing.replace(name, "")
                name += f"_{int(postfix[1:]) + 1 if postfix else 1}"
                break
        return name


def one_line(text: str) -> str:
    """The first line of an error message, squeezed, at most 200 characters."""
    first = " ".join(str(text).strip().split("\n")[0].split())
    return first if len(first) <= 200 else first[:197] + "..."


def trace(
    model: nn.Module, leaf_modules: Optional[Sequence[type]] = None
) -> Tuple[fx.Graph, Dict[fx.Node, str], Set[str]]:
    """``(fx graph, {fx node: torchvision node name}, torchvision's names)`` of ``model``.

    Traced in eval mode; the model is left as found. Nodes opened up inside
    sequence modules are named by their module path and are not among the names.
    ``leaf_modules``: module classes kept whole besides ``torchvision.ops``'s;
    by default timm's classes that torch.fx cannot trace
    (:func:`deconvviz.models.timm_models.fx_leaf_modules`). A tensor the network
    reads from a module (a buffer such as timm's ``BatchNormAct2d.running_mean``)
    is named by its path.
    """
    if leaf_modules is None:
        leaf_modules = fx_leaf_modules(model)
    ops = sys.modules.get("torchvision.ops")
    tracer = _NodePathTracer(
        _leaf_modules() + list(leaf_modules),
        autowrap_modules=(math,) if ops is None else (math, ops),
    )
    try:
        with eval_mode(model):
            fx_graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, RuntimeError, ...
        raise DeconvvizError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: "
            f"{one_line(exc)}): its forward has data-dependent control flow or other Python "
            "that torch.fx cannot follow; pass a traceable sub-module instead (e.g. "
            "model.features)"
        ) from None
    names = {
        n: tracer.node_to_qualname[n]
        for n in fx_graph.nodes
        if n.op != "output" and n in tracer.node_to_qualname
    }
    visible = set(names.values())
    # torch.fx makes buffers' get_attr nodes without the tracer's create_proxy
    names.update(
        {n: str(n.target) for n in fx_graph.nodes if n.op == "get_attr" and n not in names}
    )
    _expand_sequences(model, fx_graph, names)
    return fx_graph, names, visible


def _expand_sequences(model: nn.Module, fx_graph: fx.Graph, names: Dict[fx.Node, str]) -> None:
    """Open up leaf modules that are plain sequences (torchvision's ``Conv2dNormActivation``).

    torchvision's tracer keeps every ``torchvision.ops`` module whole, so
    MobileNet's conv + batch norm + ReLU6 is one node ``features.1.conv.0``. The
    deconvnet needs each step: the sequence becomes a chain of nodes, the last
    keeping the visible name and the others named by their module path
    (``features.1.conv.0.0``), marked hidden (not in torchvision's list).
    """
    for node in list(fx_graph.nodes):
        if not _is_sequence(model, node):
            continue
        seq = model.get_submodule(node.target)
        prev = node.args[0]
        with fx_graph.inserting_before(node):
            for i, _ in enumerate(seq):
                prev = fx_graph.call_module(f"{node.target}.{i}", (prev,))
                names[prev] = f"{node.target}.{i}"
        visible = names.pop(node)
        node.replace_all_uses_with(prev)
        fx_graph.erase_node(node)
        names[prev] = visible
    # Sequences inside sequences open up on the next pass.
    if any(_is_sequence(model, node) for node in fx_graph.nodes):
        _expand_sequences(model, fx_graph, names)


def _is_sequence(model: nn.Module, node: fx.Node) -> bool:
    return (
        node.op == "call_module"
        and len(node.args) == 1
        and not node.kwargs
        and isinstance(model.get_submodule(node.target), nn.Sequential)
        and len(model.get_submodule(node.target)) > 0
    )
