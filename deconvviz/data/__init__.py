"""Images, one module per job: the source abstraction (:mod:`.source`), the
built-in generated image set (:mod:`.builtin`), the official CIFAR-10 batches
(:mod:`.cifar`), image folders and files with the decode cache (:mod:`.folders`)
and the resolver behind every ``--data`` (:mod:`.resolve`); resize and crop
(:mod:`.preprocess`) and parallel decoding (:mod:`.decode`). Imports nothing of
the package but ``errors`` and ``progress``.
"""
