"""The compile pipeline, in process: bytes -> layer graph -> chip layers -> quantized, checked,
placed -> ChipConfig + CompileReport.

:func:`compile_graph` is for graphs already in memory (tests, trusted code);
:func:`compile_upload` reads an upload and is what the isolated worker runs. The daemon and
the CLI never call it directly: they go through :class:`~.pool.CompilerPool` (the CLI by
:func:`~.pool.compile_model`).
"""

from __future__ import annotations

from functools import cached_property

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions, CompileReport, Problem
from specklab.server.chips import CHIPS

from .archive import ArchiveLimits, check_archive, check_upload_size, detect_format
from .build import config_json, dvs_report, layer_report, readout_report
from .checks import check_network
from .convert import convert
from .errors import HardwareLimit, ModelError, PlacementFailed
from .graph import LayerGraph
from .placement import place
from .quantize import Quantized, quantize
from .readout import widen_for_readout


class CompileResult:
    """The compiled network: the chip configuration and the report.

    ``config_json`` is the configuration as the compiler wrote it (what to store or send);
    ``config`` validates it into a :class:`ChipConfig` on first use (validating every weight
    costs about as much as the rest of a compile, and a stored model needs it only to deploy).
    """

    def __init__(self, config_json: bytes, report: CompileReport) -> None:
        self.config_json = config_json
        self.report = report

    @cached_property
    def config(self) -> ChipConfig:
        return ChipConfig.model_validate_json(self.config_json)


def import_model(data: bytes, limits: ArchiveLimits) -> LayerGraph:
    """Read an upload (format detected by content). Loads user data: worker process only."""
    check_upload_size(len(data), limits)
    fmt = detect_format(data)
    check_archive(data, fmt, limits)
    if fmt == "nir":
        from .nirgraph import load_nir

        return load_nir(data, limits.max_unpacked_bytes)
    if fmt == "torchscript":
        from .torchscript import load_torchscript

        return load_torchscript(data)
    from .torchexport import load_export

    return load_export(data, limits)


def compile_upload(data: bytes, options: CompileOptions, limits: ArchiveLimits) -> CompileResult:
    """Import and compile an upload (what the worker runs)."""
    return compile_graph(import_model(data, limits), options)


def _empty_report(graph: LayerGraph, options: CompileOptions) -> CompileReport:
    return CompileReport(
        ok=False,
        chip=options.chip,
        format=graph.format,
        input_shape=options.input_shape,
        nodes=[node.ref() for node in graph.nodes],
    )


def compile_graph(graph: LayerGraph, options: CompileOptions) -> CompileResult:
    """Compile an imported graph; raises a :class:`ModelError` (with its report) when the
    network cannot run on the chip."""
    chip = CHIPS[options.chip]
    report = _empty_report(graph, options)
    try:
        network = convert(graph, options)
        if options.readout is not None:
            network = widen_for_readout(network, chip)
        problems: list[Problem] = list(network.warnings)
        quantized: list[Quantized] = []
        for layer in network.layers:
            q, warnings = quantize(layer, options.discretize)
            quantized.append(q)
            problems.extend(warnings)
    except ModelError as exc:
        exc.report = report.model_copy(update={"problems": exc.problems})
        raise
    hardware = check_network(network, chip)
    placement, placement_problems = place(network.layers, chip, options.chip_layers_ordering)
    problems.extend(hardware + placement_problems)
    report = report.model_copy(
        update={
            "ok": not hardware and placement.ok,
            "layers": [
                layer_report(layer, q, fit, placement.mapping.get(layer.index))
                for layer, q, fit in zip(network.layers, quantized, placement.layers, strict=True)
            ],
            "inputs": [] if network.dvs is not None else network.inputs,
            "outputs": network.outputs,
            "dvs": dvs_report(network.dvs) if network.dvs is not None else None,
            "readout": readout_report(network) if options.readout is not None else None,
            "placement": placement,
            "problems": problems,
        }
    )
    errors = report.errors
    if errors:
        cls = HardwareLimit if hardware else PlacementFailed
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise cls(errors[0].message + more, problems=errors, report=report)
    config = config_json(network, quantized, placement.mapping, options, chip)
    return CompileResult(config, report)
