"""Orchestration of commands that combine the engine, the files and the drawings, one
module a command named ``<what>_run``: the report over a data set (:mod:`.report_run`:
scan, statistics, projections, the HDF5 file, PNGs and the web report;
``deconvviz.report(...)`` from Python), the comparison of two or more networks at one node
(:mod:`.compare_run`) and the research figures, single projection runs and occlusion runs
(:mod:`.figures_run`)."""
