"""``specklab job``: evaluate a model over a labelled dataset, list, show and cancel jobs
(``specklab evaluate`` is the short form of ``job evaluate``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import emit
from .parsing import Verb, positive, whole
from .running import runner

if TYPE_CHECKING:
    from specklab.schemas.jobs import JobPublic, JobSummary

    from .._client import Client


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_evaluate))
    parser.add_argument("model", type=positive, help="the model's id")
    parser.add_argument(
        "dataset",
        help="a dataset id, or a file to upload first (.npz, .h5, or a .zip/.tar of AEDAT4 "
        "recordings with a labels.csv)",
    )
    parser.add_argument(
        "--duration-us", type=positive, help="each sample's length (default: its events)"
    )
    parser.add_argument(
        "--readout", choices=("spike_count", "first_spike", "readout"), default="spike_count"
    )
    parser.add_argument("--no-reset", action="store_true", help="keep state between samples")
    parser.add_argument("--monitor", type=_layers, help="layers to count, e.g. 0,-1 (default all)")
    parser.add_argument("--slow-clock-hz", type=float, help="slow clock for leaks and readout")
    parser.add_argument(
        "--chunk-size", type=positive, help="samples per chunk (default: automatic)"
    )
    parser.add_argument(
        "--device",
        dest="devices",
        action="append",
        metavar="ID",
        help="a device you have booked; repeat it to spread the job over several (default: "
        "the lab's evaluation workers, in parallel)",
    )


def _layers(text: str) -> list[int]:
    return [whole(part) for part in text.split(",") if part]


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
        "devices": args.devices,
    }
    given = {key: value for key, value in options.items() if value is not None}
    summary = client.evaluate(args.model, dataset, progress=not args.json, **given)
    emit(args, summary, lambda: summary_table(summary))


def summary_table(summary: JobSummary) -> str:
    from specklab.schemas.render import format_table

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


def _job_rows(jobs: list[JobPublic]) -> str:
    from specklab.schemas.render import format_table

    headers = ("id", "owner", "model", "dataset", "state", "done", "eta")
    rows = [
        (
            j.id,
            j.owner,
            j.model_id,
            j.dataset_id,
            j.state.value,
            f"{j.samples_done}/{j.samples}",
            "-" if j.eta_s is None else f"{j.eta_s:.0f} s",
        )
        for j in jobs
    ]
    return format_table(headers, rows)


def _list(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=runner(_jobs))


def _jobs(client: Client, args: argparse.Namespace) -> None:
    jobs = client.jobs()
    emit(args, jobs, lambda: _job_rows(jobs))


def _one(handler: Any) -> Verb:
    def declare(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job_id", type=positive, metavar="JOB")
        parser.set_defaults(handler=runner(handler))

    return declare


def _show(client: Client, args: argparse.Namespace) -> None:
    job = client.job(args.job_id)
    emit(args, job, lambda: _job_rows([job]))


def _cancel(client: Client, args: argparse.Namespace) -> None:
    job = client.cancel_job(args.job_id)
    emit(args, job, lambda: _job_rows([job]))


VERBS: dict[str, tuple[str, Verb]] = {
    "list": ("your evaluation jobs (all of them for admins)", _list),
    "show": ("a job's state, progress and ETA", _one(_show)),
    "evaluate": ("run a model over a labelled dataset and print the summary", _evaluate_args),
    "cancel": ("cancel a job; its workers are freed at once", _one(_cancel)),
}
