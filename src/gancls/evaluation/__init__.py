"""Scoring: text match against the real ceiling, FID/KID/IS (torchmetrics), diversity, the run report.

- ``scorer``: the attribute classifier behind text match (``gancls train-scorer``).
- ``evaluate``: ``gancls real-features`` and ``gancls evaluate``; ``diversity``; ``report``: reports/report.md.

Imports ``gancls.config``, ``gancls.files``, ``gancls.data`` and ``gancls.models`` only.
"""
