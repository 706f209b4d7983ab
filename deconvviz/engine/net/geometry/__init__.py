"""Geometry on a traced network, in one place: receptive fields, cones, windows, patches.

* :mod:`.fields`: the receptive field of every output position of every node (its
  exact box, and its affine field where one exists): :func:`~.fields.receptive_fields`;
* :mod:`.frames`: the window of each node's output a seed's cone keeps
  (:class:`~.frames.Frame`, :func:`~.frames.seed_frames`);
* :mod:`.patches`: receptive-field boxes, windows and image patches of output
  positions (:func:`~.patches.receptive_box`, :func:`~.patches.extract_patches`).

The boxes, windows and patches that other wings read are importable from here as well.
"""

from .patches import extract_patches, receptive_box, windows_for

__all__ = ["extract_patches", "receptive_box", "windows_for"]
