"""Orchestration of commands that combine the engine, the files and the drawings:
feature statistics of a report's scan (:mod:`.statistics`) and the comparison of two
networks (:mod:`.compare`)."""
