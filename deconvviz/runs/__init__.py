"""Orchestration of commands that combine the engine, the files and the drawings, one
module a command named ``<what>_run``: the report over a data set (:mod:`.report_run`,
``deconvviz.report(...)`` from Python, with its steps beside it: :mod:`.report_scan` the
scan, its statistics and saved state, :mod:`.report_layers` the projections and patches,
:mod:`.report_partial` the unfinished file and ``--resume``, :mod:`.report_render` the PNGs
and the web report), the comparison of two or more networks at one node
(:mod:`.compare_run`) and the research figures, single projection runs and occlusion runs
(:mod:`.figures_run`)."""
