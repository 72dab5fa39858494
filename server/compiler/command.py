"""``specklab compile MODEL``: compile a model offline, in a one-off isolated worker.

Prints the placement table (the client's rendering of the report, so both CLIs read alike;
with ``--json`` the report itself) and optionally writes the integer weights. Exit status: 0
when the network fits the chip, 1 when it does not (with the explanation), 2 when the input
cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
from pydantic import ValidationError

from specklab.schemas.api import ErrorBody
from specklab.schemas.compile import CompileOptions, CompileReport
from specklab.schemas.render import format_table, report_table

from .errors import CompileError, InputError
from .pipeline import CompileResult
from .pool import compile_model

EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_UNREADABLE = 0, 1, 2


def _options(args: argparse.Namespace) -> CompileOptions:
    ordering: str | list[int] = "auto"
    if args.chip_layers_ordering not in (None, "auto"):
        ordering = [int(core) for core in args.chip_layers_ordering.split(",")]
    return CompileOptions(
        input_shape=tuple(int(v) for v in args.input_shape.split(",")),
        chip=args.chip,
        spike_threshold=args.spike_threshold,
        min_v_mem=None if args.min_v_mem.lower() == "none" else float(args.min_v_mem),
        add_spiking_output=not args.no_spiking_output,
        dvs_input=args.dvs_input,
        discretize=not args.no_discretize,
        chip_layers_ordering=ordering,
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        options = _options(args)
    except (ValueError, ValidationError) as exc:
        print(f"specklab compile: invalid options: {exc}", file=err)
        return EXIT_UNREADABLE
    try:
        result = compile_model(Path(args.model), options)
    except OSError as exc:
        return _unreadable(ErrorBody(code="unreadable", message=str(exc)), args.json, out, err)
    except InputError as exc:
        body = ErrorBody(code=exc.code, message=exc.message, detail=exc.detail)
        return _unreadable(body, args.json, out, err)
    except CompileError as exc:
        if args.json and exc.report is not None:
            print(exc.report.model_dump_json(indent=2), file=out)
        else:
            print(f"does not fit: {exc.message}", file=err)
            if exc.report is not None:
                print(explain(exc.report), file=out)
        return EXIT_DOES_NOT_FIT
    if args.weights is not None:
        save_weights(result, args.weights)
    report = result.report
    print(report.model_dump_json(indent=2) if args.json else report_table(report), file=out)
    return EXIT_FITS


def _unreadable(body: ErrorBody, as_json: bool, out: TextIO, err: TextIO) -> int:
    if as_json:
        print(body.model_dump_json(indent=2), file=out)
    else:
        print(f"cannot read the model ({body.code}): {body.message}", file=err)
    return EXIT_UNREADABLE


def save_weights(result: CompileResult, path: Path) -> None:
    """``layer{i}.weight`` (``[out, in, kh, kw]``) and ``layer{i}.bias`` per model layer."""
    config = result.config
    arrays: dict[str, np.ndarray] = {}
    for placement in config.layers:
        core = config.cnn_layers[placement.core]
        arrays[f"layer{placement.layer}.weight"] = core.weight_array()
        arrays[f"layer{placement.layer}.bias"] = np.asarray(core.biases, dtype=np.int16)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def explain(report: CompileReport) -> str:
    """The report, and when placement failed, each layer's memory against each core."""
    lines = [report_table(report)]
    placement = report.placement
    if placement is not None and not placement.ok:
        lines.append("memory per layer (entries) against each core; '.' fits, K/N/B too small:")
        headers = ["layer", "kernel", "neuron", "bias"] + [f"c{c.core}" for c in placement.cores]
        rows: list[list[object]] = []
        for fit in placement.layers:
            marks = ["".join(m[0].upper() for m in over) or "." for over in fit.exceeds]
            rows.append([fit.layer, fit.kernel_memory, fit.neuron_memory, fit.bias_memory, *marks])
        capacities = [f"{c.kernel // 1024}K/{c.neuron // 1024}K" for c in placement.cores]
        rows.append(["cores", "", "", "", *capacities])
        lines.append(format_table(headers, rows))
        if not placement.conflict:  # the table above lists suggestions only with a conflict
            lines.extend(f"suggestion: {s}" for s in placement.suggestions)
    return "\n".join(lines)
