"""Prefect flows that compose privgen's stages, the pipeline config and the CLI."""
