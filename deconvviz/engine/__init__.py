"""The paper's machinery (Zeiler & Fergus, arXiv 1311.2901), on tensors and modules only.

Two wings, imports running one way (``deconv`` -> ``net``):

* :mod:`.net`: the traced network, made once at the boundary and handed down:
  tracing (:mod:`.net.trace`), the op kinds (:mod:`.net.ops`), the torch functions,
  methods and modules each covers (:mod:`.net.targets`), each node's op and parameters
  (:mod:`.net.classify`, a module call's :mod:`.net.module_calls`),
  each node's shape (:mod:`.net.nodes`), running nodes (:mod:`.net.run`), the
  graph with torchvision's node names and block numbers (:mod:`.net.graph`, its cones
  :mod:`.net.maps`, :mod:`.net.network`; plain stacks' blocks in :mod:`.net.stack`, listed by
  :mod:`.net.layers`), and every receptive field, cone, window and patch
  (:mod:`.net.geometry`);
* :mod:`.deconv`: the deconvnet on it: the recorded forward pass over whole
  images or seeds' cones (:mod:`.deconv.record`), the reverse walk
  (:mod:`.deconv.reverse`, its state :mod:`.deconv.walk`) with one transpose per op
  (:mod:`.deconv.transposes`), the seeds and their one check
  (:mod:`.deconv.projection`), the public ``project``/``deconvolve``
  (:mod:`.deconv.deconvnet`), reports' seeds (:mod:`.deconv.seeds`) and the
  hook recorder ``record`` (:mod:`.deconv.hooks`).

Beside them, one file each: the streaming top-k search (:mod:`.topk`) and its
distributed merge (:mod:`.distributed`), occlusion (:mod:`.occlusion`), the
measures of the figures (:mod:`.analysis`), feature vectors at named places
(:mod:`.features`), invariance (:mod:`.invariance`), correspondence
(:mod:`.correspondence`) and filter diagnostics (:mod:`.filters`). It knows
nothing of files, pixels on disk or the shell: it may import
:mod:`deconvviz.models`, :mod:`deconvviz.data` and the top-level ``errors`` and
``progress``, never ``store``, ``render``, ``cli`` or ``report``.
"""
