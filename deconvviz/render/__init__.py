"""Pictures: the display normalisation and image grids (:mod:`.display`), the report's
PNGs (:mod:`.report_png`), the research figures' tiles and tables (:mod:`.figures`)
and the occlusion figure (:mod:`.occlusion`). Pure functions of arrays and stored
files: may import :mod:`deconvviz.store`, :mod:`deconvviz.data` and ``errors``;
never ``models``, ``engine``, ``cli`` or ``report``.
"""
