"""Images: the data-source resolver, the decode cache and the built-in image set
(:mod:`.sources`). Imports nothing of the package but ``errors`` and ``progress``.
"""
