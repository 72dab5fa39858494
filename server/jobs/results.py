"""A job's per-sample rows turned into its summary and its columnar download."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np

from .evaluate import NONE

#: Columns of the per-sample ``.npz`` (docs/jobs.md); 2-D ones have a row per sample.
COLUMNS = ("index", "label", "prediction", "latency_us", "counts", "spikes", "synops", "time_s")


def columns(chunks: Iterable[list[dict[str, Any]]], layers: int) -> dict[str, np.ndarray]:
    """Rows, given chunk by chunk in sample order, as arrays, one per column. A chunk's rows
    become arrays before the next is read: a large job's rows as Python objects would take
    gigabytes."""
    parts = [_chunk_columns(rows, layers) for rows in chunks]
    if not parts:
        parts = [_chunk_columns([], layers)]
    width = max(part["counts"].shape[1] for part in parts)
    for part in parts:
        part["counts"] = np.pad(part["counts"], ((0, 0), (0, width - part["counts"].shape[1])))
    table = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return {"index": np.arange(len(table["label"]), dtype=np.int64), **table}


def _chunk_columns(rows: list[dict[str, Any]], layers: int) -> dict[str, np.ndarray]:
    width = max((len(row["counts"]) for row in rows), default=0)
    counts = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        counts[i, : len(row["counts"])] = row["counts"]
    return {
        "label": np.array([row["label"] for row in rows], np.int64),
        "prediction": np.array([row["prediction"] for row in rows], np.int64),
        "latency_us": np.array([row["latency_us"] for row in rows], np.int64),
        "counts": counts,
        "spikes": np.array([row["spikes"] for row in rows], np.int64).reshape(len(rows), layers),
        "synops": np.array([row["synops"] for row in rows], np.int64).reshape(len(rows), layers),
        "time_s": np.array([row["time_s"] for row in rows], np.float64),
    }


def npz_bytes(table: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **table)
    return buffer.getvalue()


def summarize(table: dict[str, np.ndarray], classes: int) -> dict[str, Any]:
    """Accuracy, confusion, per-class accuracy and means (``JobSummary`` without the job)."""
    labels, predictions = table["label"], table["prediction"]
    answered = predictions != NONE
    if len(labels):
        classes = max(classes, int(labels.max()) + 1, int(predictions.max()) + 1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels[answered], predictions[answered]), 1)
    no_output = np.bincount(labels[~answered], minlength=classes)
    per_label = np.bincount(labels, minlength=classes)
    per_class = [
        float(confusion[k, k] / per_label[k]) if per_label[k] else None for k in range(classes)
    ]
    latencies = table["latency_us"][table["latency_us"] != NONE]
    samples = max(len(labels), 1)
    return {
        "accuracy": float(np.sum(labels == predictions) / samples),
        "confusion": confusion.tolist(),
        "per_class_accuracy": per_class,
        "no_output": no_output[:classes].tolist(),
        "mean_spikes_per_layer": (table["spikes"].sum(axis=0) / samples).tolist(),
        "mean_synops_per_layer": (table["synops"].sum(axis=0) / samples).tolist(),
        "mean_latency_us": float(latencies.mean()) if len(latencies) else None,
        "sample_time_s": float(table["time_s"].sum()),
    }
