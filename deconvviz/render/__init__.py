"""Pictures: the display normalisation and image grids (:mod:`.display`), the report's
PNGs (:mod:`.report_png`), the research figures' tiles and tables (:mod:`.figures`),
the occlusion figure (:mod:`.occlusion`) and the invariance, correspondence and
filter figures (:mod:`.paper`). Pure functions of arrays and stored
files: may import :mod:`deconvviz.store`, :mod:`deconvviz.data` and ``errors``;
never ``models``, ``engine``, ``cli`` or ``report``.
"""
