"""The data: the embedded sample, raw CUB + Reed embeddings read through one entry, validation, the prepared file.

- ``synthetic``: the generated sample with CUB's exact on-disk layout (``gancls make-sample``).
- ``cub``: CUB-200-2011's own files (images, classes, splits); ``layouts`` and ``cub_icml``: Reed's
  embeddings in StackGAN's pickles, aelnouby's HDF5 or his Torch7 files; ``raw.open_raw``: the one entry.
- ``fetch``: downloads with checksums (``gancls fetch``).
- ``expectations`` and ``validate``: the Great Expectations suites (``gancls validate``).
- ``prepare``: raw data to the HDF5 the model reads (``gancls prepare``); ``prepared``: its reader.

Imports ``gancls.config``, ``gancls.files`` and ``gancls.models`` only; nothing heavy at start.
"""
