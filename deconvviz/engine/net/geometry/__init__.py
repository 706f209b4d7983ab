"""Geometry on a traced network, in one place: receptive fields, cones, windows, patches.

* :mod:`.fields`: the receptive field of every output position of every node (its
  exact box, and its affine field where one exists): :func:`~.fields.receptive_fields`;
* :mod:`.frames`: the window of each node's output a seed's cone keeps
  (:class:`~.frames.Frame`, :func:`~.frames.seed_frames`);
* :mod:`.patches`: receptive-field boxes, windows and image patches of output
  positions (:func:`~.patches.receptive_box`, :func:`~.patches.extract_patches`).

Their public names are importable from here too.
"""

from .fields import (
    Geometry,
    adaptive_geometry,
    concat_geometry,
    hull_geometry,
    input_geometry,
    receptive_fields,
    union_geometry,
    window_geometry,
)
from .frames import Frame, seed_frames, union_frame, window_frame
from .patches import (
    Field,
    boxes_for,
    cut_windows,
    extract_patches,
    receptive_box,
    window_origins,
    windows_for,
)

__all__ = [
    "Geometry",
    "Frame",
    "Field",
    "window_frame",
    "union_frame",
    "seed_frames",
    "input_geometry",
    "window_geometry",
    "adaptive_geometry",
    "union_geometry",
    "concat_geometry",
    "hull_geometry",
    "receptive_fields",
    "receptive_box",
    "boxes_for",
    "window_origins",
    "windows_for",
    "cut_windows",
    "extract_patches",
]
