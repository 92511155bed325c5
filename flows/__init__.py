"""Prefect flows that orchestrate the gancls DVC pipeline."""

import os

# Read before Prefect is imported (its settings are fixed then). Without PREFECT_API_URL a flow starts
# Prefect's temporary server; on 2 busy cores that takes longer than Prefect's 20 s (seen: a sweep flow
# beside a training run failed "Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
