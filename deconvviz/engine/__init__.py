"""The paper's machinery (Zeiler & Fergus, arXiv 1311.2901), on tensors and modules only.

Finding layers (:mod:`.layers`), receptive fields and patches (:mod:`.receptive`),
recording activations and max-pooling switches (:mod:`.recording`), the reverse
pass of the deconvnet (:mod:`.deconvnet`, inside receptive-field windows in
:mod:`.windowed`, recorded on receptive-field crops in :mod:`.cropped`) and its batched seeds (:mod:`.seeds`), the streaming top-k
search (:mod:`.topk`) and its distributed merge (:mod:`.distributed`), occlusion
(:mod:`.occlusion`), the measures of the figures (:mod:`.analysis`), feature
vectors at named places (:mod:`.features`), invariance (:mod:`.invariance`),
correspondence (:mod:`.correspondence`) and filter diagnostics (:mod:`.filters`).
Any traceable CNN: its torch.fx graph with torchvision's node names, shapes and
receptive fields (:mod:`.graph`, ops in :mod:`.graph_ops`, fields in
:mod:`.graph_geometry`), the deconvnet walking that graph back
(:mod:`.deconvnet`, one transpose per op in :mod:`.graph_reverse`), and the
choice between the two engines (:mod:`.network`). It knows nothing of files,
pixels on disk or the shell: it may import :mod:`deconvviz.models`,
:mod:`deconvviz.data` and the top-level ``errors`` and ``progress``, never
``store``, ``render``, ``cli`` or ``report``.
"""
