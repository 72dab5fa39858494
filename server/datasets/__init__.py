"""Labelled event datasets for evaluation jobs: ``formats`` (read by the evaluation workers,
so nothing heavier is imported here) and ``service``."""
