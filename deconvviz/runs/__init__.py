"""Orchestration of commands that combine reports, the engine, the files and the
drawings: the comparison of two or more networks at one node (:mod:`.compare`)."""
