"""Every file format in one place: the HDF5 layouts of reports (:mod:`.report`),
projections (:mod:`.projection`), figure data (:mod:`.figure`) and occlusion maps
(:mod:`.occlusion`), all stamped and checked by :mod:`.h5`, and atomic writes
(:mod:`.atomic`). May import :mod:`deconvviz.models`, :mod:`deconvviz.data` and
``errors``; never ``engine``, ``render``, ``cli`` or ``report``.
"""
