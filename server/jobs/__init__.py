"""Evaluation jobs: a compiled model run over a labelled dataset, in chunks, on the lab's
virtual devkits (``docs/jobs.md``).

Nothing is imported here: the evaluation workers import ``pool`` and ``evaluate`` only, and
start faster without the server's web and database modules.
"""
