"""Every file format in one place, one module a layout named ``<what>_h5``: reports
(:mod:`.report_h5`, written by :mod:`.report_write`, read by :mod:`.report_read`) with their
feature statistics (:mod:`.statistics_h5`), comparisons (:mod:`.compare_h5`), projections
(:mod:`.projection_h5`), figure data (:mod:`.figure_h5`) and occlusion maps
(:mod:`.occlusion_h5`), all stamped and checked by :mod:`.h5`, and atomic writes
(:mod:`.atomic`). May import :mod:`deconvviz.models`, :mod:`deconvviz.data` and
``errors``; never ``engine``, ``render``, ``cli`` or ``runs``.
"""
