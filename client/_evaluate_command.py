"""``specklab evaluate MODEL DATASET``: run a job, show its progress, print its summary.

Kept apart from ``_commands`` (registered by ``cli.build_parser``) so the command grammar
can change there without touching this one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._commands import _common_options, _emit, _runner

if TYPE_CHECKING:
    from specklab.schemas.jobs import JobSummary

    from ._client import Client


def register_evaluate(commands: argparse._SubParsersAction) -> None:
    help = "evaluate a model over a labelled dataset (a dataset id, or a .npz/.h5 to upload)"
    parser = commands.add_parser(
        "evaluate", parents=[_common_options(nested=False)], help=help, description=help
    )
    parser.set_defaults(handler=_runner(_evaluate))
    parser.add_argument("model", type=int, help="the model's id")
    parser.add_argument("dataset", help="a dataset id, or a file to upload first")
    parser.add_argument(
        "--duration-us", type=int, help="each sample's length (default: its events)"
    )
    parser.add_argument(
        "--readout", choices=("spike_count", "first_spike", "readout"), default="spike_count"
    )
    parser.add_argument("--no-reset", action="store_true", help="keep state between samples")
    parser.add_argument("--monitor", type=_layers, help="layers to count, e.g. 0,-1 (default all)")
    parser.add_argument("--slow-clock-hz", type=float, help="slow clock for leaks and readout")
    parser.add_argument("--chunk-size", type=int, help="samples per chunk (default: automatic)")


def _layers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _evaluate(client: Client, args: argparse.Namespace) -> None:
    dataset: Any = args.dataset
    if not dataset.isdigit():
        dataset = client.upload_dataset(Path(dataset))
    options = {
        "duration_us": args.duration_us,
        "readout": args.readout,
        "reset": not args.no_reset,
        "monitor_layers": args.monitor,
        "slow_clock_hz": args.slow_clock_hz,
        "chunk_size": args.chunk_size,
    }
    given = {key: value for key, value in options.items() if value is not None}
    summary = client.evaluate(args.model, dataset, progress=not args.json, **given)
    _emit(args, summary, lambda: summary_table(summary))


def summary_table(summary: JobSummary) -> str:
    from ._tables import format_table

    job = summary.job
    lines = [
        f"job {job.id}: model {job.model_id} on dataset {job.dataset_id}, {job.samples} samples",
        f"accuracy {summary.accuracy:.2%}  (wall time {summary.wall_time_s:.1f} s)",
        "",
        format_table(
            ("class", "accuracy", "no output"),
            [
                (k, "-" if acc is None else f"{acc:.2%}", summary.no_output[k])
                for k, acc in enumerate(summary.per_class_accuracy)
            ],
        ),
        "",
        format_table(
            ("layer", "spikes/sample", "synops/sample"),
            [
                (layer, f"{spikes:.1f}", f"{synops:.1f}")
                for layer, spikes, synops in zip(
                    summary.layers,
                    summary.mean_spikes_per_layer,
                    summary.mean_synops_per_layer,
                    strict=True,
                )
            ],
        ),
    ]
    return "\n".join(lines)
