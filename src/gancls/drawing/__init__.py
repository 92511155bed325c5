"""Pictures from a trained G: sample grids, interpolations, typed sentences, the demo page.

- ``generate``: ``gancls generate`` (the images scored by evaluate, and the grids).
- ``grids``: captioned grids, GIFs, interpolation; ``draw``: ``gancls sample``.
- ``demo``: the local Gradio page (``gancls demo``); ``demo_browser``: the page in headless Chromium.

Imports ``gancls.config``, ``gancls.files``, ``gancls.data`` and ``gancls.models`` only.
"""
