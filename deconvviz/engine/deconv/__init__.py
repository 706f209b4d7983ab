"""The deconvnet on the traced network: recording, the reverse walk, seeds, project/deconvolve."""
