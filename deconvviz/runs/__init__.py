"""Orchestration of commands that combine the engine, the files and the drawings: the
report over a data set (:mod:`.report`: scan, statistics, projections, the HDF5 file,
PNGs and the web report; ``deconvviz.report(...)`` from Python) and the comparison of
two or more networks at one node (:mod:`.compare`)."""
