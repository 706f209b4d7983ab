"""Pictures: the display normalisation and image grids (:mod:`.display`), the report's
PNGs (:mod:`.report_png`), the parts every research figure is made of: tiles, tables and
captions (:mod:`.figure_parts`), the drawings named ``<what>_figure``: a projection run
(:mod:`.projection_figure`), occlusion (:mod:`.occlusion_figure`) and a comparison of
networks (:mod:`.compare_figure`), the invariance, correspondence and filter figures
(:mod:`.paper`), the notebook display (:mod:`.notebook`) and the web report (:mod:`.web`).
Pure functions of arrays and stored files: may import :mod:`deconvviz.store`,
:mod:`deconvviz.data` and ``errors``; never ``models``, ``engine``, ``cli`` or ``runs``.
"""
