"""Generative model definitions and their MLflow pyfunc wrapper."""
