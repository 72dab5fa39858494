"""Plain-text tables for terminals: the CLI's listings and the compile report (shown by the
client and by the daemon's ``specklab compile``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .compile import CompileReport, CoreCapacity, LayerReport


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple | list):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def shape(values: Sequence[int]) -> str:
    """``(32, 4, 4)`` as ``32x4x4``."""
    return "x".join(str(v) for v in values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart, under an upper-case header line."""
    text = [[cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [[h.upper() for h in headers], *text]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


HEADERS = (
    "layer",
    "kind",
    "core",
    "input",
    "neurons",
    "kernel",
    "stride",
    "pool",
    "to",
    "kernel mem",
    "neuron mem",
    "sources",
)


def _memory(used: int, capacity: int | None) -> str:
    return f"{used}/{capacity}" if capacity is not None else str(used)


def _row(layer: LayerReport, cores: dict[int, CoreCapacity]) -> list[object]:
    core = cores.get(layer.core) if layer.core is not None else None
    pools = [shape(p) for p in layer.pooling if p != (1, 1)]
    return [
        layer.index,
        layer.kind,
        layer.core,
        shape(layer.input_shape),
        shape(layer.output_shape),
        shape(layer.kernel_size),
        shape(layer.stride),
        pools,
        layer.destinations or "out",
        _memory(layer.kernel_memory, core.kernel if core else None),
        _memory(layer.neuron_memory, core.neuron if core else None),
        ", ".join(source.describe() for source in layer.sources),
    ]


def report_table(report: CompileReport) -> str:
    """A summary line, one row per model layer, then the problems found."""
    placement = report.placement
    verdict = "fits" if report.ok else "does NOT fit"
    how = f", {placement.strategy} placement" if placement else ""
    lines = [
        f"{report.format} model, input {shape(report.input_shape)}: {verdict} on {report.chip}{how}"
    ]
    cores = {c.core: c for c in placement.cores} if placement else {}
    if report.dvs is not None:
        dvs = report.dvs
        lines.append(
            f"DVS layer: pooling {shape(dvs.pooling)}, crop {dvs.origin}..{dvs.cut}, "
            f"merge {dvs.merge_polarities} -> layers {dvs.destinations}"
        )
    if report.layers:
        lines.append(format_table(HEADERS, [_row(layer, cores) for layer in report.layers]))
    if report.readout is not None:
        readout = report.readout
        lines.append(
            f"readout: {readout.num_classes} classes from layer {readout.layer} "
            f"(class k on feature {readout.channel_stride}k)"
        )
    if placement is not None and placement.conflict:
        lines.append(
            f"layers {placement.conflict} fit only cores {placement.conflict_cores}: "
            "too few cores for them"
        )
        lines.extend(f"suggestion: {s}" for s in placement.suggestions)
    for problem in report.problems:
        where = f" (layer {problem.layer})" if problem.layer is not None else ""
        if problem.node is not None:
            where += f" at {problem.node.describe()}"
        lines.append(f"{problem.severity} {problem.code}{where}: {problem.message}")
    return "\n".join(lines)
