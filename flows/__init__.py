"""Prefect flows that orchestrate the gancls DVC pipeline."""
