"""The deconvnet's vocabulary of ops: every op kind, what one output position of each reads
(for a seed's cone), and :class:`OpSpec`, one traced node's op in normal form.

Which functions, tensor methods and modules each kind covers is :mod:`.targets`; naming the op
of a traced node is :mod:`.classify`; running a node is :mod:`.run`'s; each op's way back is
:mod:`~deconvviz.engine.deconv.transposes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch import fx, nn

__all__ = [
    "OpSpec",
    "OPS",
    "SPATIAL_WINDOW_OPS",
    "REACH",
    "WHOLE_IMAGE_OPS",
    "split_sizes",
]

#: Every op kind with a deconvnet rule (plus the bookkeeping kinds ``input``,
#: ``constant`` and ``unsupported``).
OPS = (
    "input",
    "constant",
    "conv",
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "norm",
    "maxpool",
    "adaptive_maxpool",
    "avgpool",
    "adaptive_avgpool",
    "batchnorm",
    "add",
    "scale",
    "cat",
    "reshape",
    "permute",
    "narrow",
    "split",
    "mean",
    "linear",
    "dropout",
    "identity",
    "unsupported",
)

#: Ops whose output position sees a kernel-sized window of its input.
SPATIAL_WINDOW_OPS = ("conv", "maxpool", "avgpool")

#: What one output position of an op reads of its inputs, for the seed's cone
#: (:func:`~deconvviz.engine.net.geometry.frames.seed_frames`): ``"pointwise"`` the same
#: position of every input, ``"window"`` a kernel window, ``"adaptive"`` a window
#: where the input size is a multiple of the output's; an op not listed reads
#: everything, so a seed above it takes the whole image. A new elementwise op is
#: ``"pointwise"`` here and a transpose in ``deconv.transposes.TRANSPOSES``.
REACH = {
    "relu": "pointwise",
    "relu6": "pointwise",
    "nonlinear": "pointwise",
    "gate": "pointwise",
    "norm": "pointwise",
    "batchnorm": "pointwise",
    "add": "pointwise",
    "scale": "pointwise",
    "cat": "pointwise",
    "dropout": "pointwise",
    "identity": "pointwise",
    "conv": "window",
    "maxpool": "window",
    "avgpool": "window",
    "adaptive_maxpool": "adaptive",
    "adaptive_avgpool": "adaptive",
}

#: Ops whose recorded state may depend on the whole image, not only on the seed's cone: a
#: gate's value (a global average inside it) and a normalisation's per-image statistics
#: (not a LayerNorm over each position's channels:
#: :meth:`~deconvviz.engine.net.graph.Graph.holds_whole_image`). The reverse pass holds that
#: state, so its window still follows the gradient's support (``REACH``); a cone recording
#: takes it from a whole-image pass.
WHOLE_IMAGE_OPS = ("gate", "norm")


@dataclass(frozen=True)
class OpSpec:
    """One node's op in normal form.

    ``op``: a kind of :data:`OPS`; ``what``: the module class or function the
    network used (``"Conv2d"``, ``"F.relu"``, ``"Tensor.view"``), for messages;
    ``inputs``: the fx nodes (or ``None`` for a constant operand) that the op's
    transpose sends signal to, in its own order; ``params``: the op's parameters
    (kernel, stride, padding, ... as (h, w) pairs; see
    :func:`~deconvviz.engine.net.classify.classify`);
    ``module``: the called module, if any; ``reason``: why an op is unsupported.
    """

    op: str
    what: str
    inputs: Tuple[Optional[fx.Node], ...] = ()
    params: Dict[str, Any] = field(default_factory=dict)
    module: Optional[nn.Module] = None
    reason: str = ""


def split_sizes(n: int, how: Tuple[str, Any]) -> List[int]:
    """The sizes ``torch.chunk`` (``("chunk", k)``) or ``torch.split`` (``("split", size or
    sections)``) cut a dimension of ``n`` into."""
    kind, v = how
    if kind == "chunk":
        step = -(-n // int(v))
    elif isinstance(v, int):
        step = v
    else:
        return [int(s) for s in v]
    return [min(step, n - a) for a in range(0, n, step)]
