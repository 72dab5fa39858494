"""The chip's layer limits (docs/chip.md §3), checked on the converted network.

Every violation is a :class:`Problem` naming the model layer, the value and the limit; the
limits themselves come from ``server/chips.py``. Memory is the placement's business.
"""

from __future__ import annotations

from specklab.schemas.compile import Problem
from specklab.server.chips import Chip

from .convert import ChipLayer, Destination, DvsInput, Network


def _problem(code: str, message: str, rule: str, layer: ChipLayer | None = None) -> Problem:
    return Problem(
        severity="error",
        code=code,
        message=f"model layer {layer.index}: {message}" if layer is not None else message,
        rule=rule,
        layer=layer.index if layer is not None else None,
        node=layer.sources[0].ref() if layer is not None else None,
    )


def check_network(network: Network, chip: Chip) -> list[Problem]:
    problems: list[Problem] = []
    if len(network.layers) > chip.num_cores:
        problems.append(
            _problem(
                "too_many_layers",
                f"the network has {len(network.layers)} layers; {chip.name} has "
                f"{chip.num_cores} cores",
                f"one core per layer, at most {chip.num_cores}",
            )
        )
    for layer in network.layers:
        problems.extend(check_layer(layer, chip))
    if network.dvs is not None:
        problems.extend(check_dvs(network.dvs, chip))
    return problems


def check_layer(layer: ChipLayer, chip: Chip) -> list[Problem]:
    limits = chip.limits
    problems: list[Problem] = []
    kh, kw = layer.kernel_size
    linear = (
        f" (a Linear reading a {kh}x{kw} map becomes a {kh}x{kw} convolution)"
        if layer.kind == "linear"
        else ""
    )
    if kh != kw:
        problems.append(
            _problem(
                "kernel_not_square",
                f"kernel {kh}x{kw} is not square{linear}",
                "kernels are square",
                layer,
            )
        )
    if max(kh, kw) > limits.max_kernel_size:
        size = limits.max_kernel_size
        problems.append(
            _problem(
                "kernel_too_large",
                f"kernel {kh}x{kw} is larger than {size}x{size}{linear}",
                f"kernel size <= {size}",
                layer,
            )
        )
    if any(s not in limits.strides for s in layer.stride):
        problems.append(
            _problem(
                "stride",
                f"stride {layer.stride} is not in {set(limits.strides)}",
                f"stride in {set(limits.strides)}",
                layer,
            )
        )
    if any(not 0 <= p <= limits.max_padding for p in layer.padding):
        problems.append(
            _problem(
                "padding",
                f"padding {layer.padding} is outside 0..{limits.max_padding}",
                f"padding 0..{limits.max_padding}",
                layer,
            )
        )
    c_in, h_in, w_in = layer.input_shape
    c_out, h_out, w_out = layer.output_shape
    if max(h_in, w_in) > limits.max_input_size:
        problems.append(
            _problem(
                "input_too_large",
                f"input {h_in}x{w_in} is larger than {limits.max_input_size}x"
                f"{limits.max_input_size}",
                f"input <= {limits.max_input_size}x{limits.max_input_size}",
                layer,
            )
        )
    if max(h_out, w_out) > limits.max_output_size:
        problems.append(
            _problem(
                "output_too_large",
                f"convolution output {h_out}x{w_out} is larger than {limits.max_output_size}x"
                f"{limits.max_output_size}",
                f"conv output <= {limits.max_output_size}x{limits.max_output_size}",
                layer,
            )
        )
    for what, count in (("input", c_in), ("output", c_out)):
        if count > limits.max_channels:
            problems.append(
                _problem(
                    "too_many_channels",
                    f"{count} {what} channels, more than {limits.max_channels}",
                    f"channels <= {limits.max_channels}",
                    layer,
                )
            )
    problems.extend(_fan_out(layer.destinations, limits.max_destinations, layer))
    for destination in layer.destinations:
        problem = _pooling(destination.pooling, chip, f"to model layer {destination.layer}")
        if problem is not None:
            problems.append(_problem("pooling", problem, _pooling_rule(chip), layer))
    return problems


def _pooling_rule(chip: Chip) -> str:
    return f"sum pooling {' / '.join(map(str, chip.limits.poolings))}, square, stride = kernel"


def _pooling(pooling: tuple[int, int], chip: Chip, where: str) -> str | None:
    py, px = pooling
    if py != px:
        return f"pooling {py}x{px} {where} is not square"
    if py not in chip.limits.poolings:
        return f"pooling {py} {where} is not one of {chip.limits.poolings}"
    return None


def _fan_out(destinations: list[Destination], limit: int, layer: ChipLayer | None) -> list[Problem]:
    if len(destinations) <= limit:
        return []
    targets = ", ".join(str(d.layer) for d in destinations)
    return [
        _problem(
            "fan_out",
            f"sends to {len(destinations)} destinations (model layers {targets}), more than "
            f"{limit}",
            f"fan-out <= {limit}",
            layer,
        )
    ]


def check_dvs(dvs: DvsInput, chip: Chip) -> list[Problem]:
    problems: list[Problem] = []
    for problem in _fan_out(dvs.destinations, chip.limits.max_destinations, None):
        problems.append(problem.model_copy(update={"message": f"the DVS layer {problem.message}"}))
    # The DVS layer pools x and y separately (unlike a core's destinations): no square rule.
    for axis, size in zip("yx", dvs.pooling, strict=True):
        if size not in chip.limits.poolings:
            problems.append(
                _problem(
                    "dvs_pooling",
                    f"{axis} pooling {size} after the DVS input is not one of "
                    f"{chip.limits.poolings}",
                    f"DVS sum pooling {' / '.join(map(str, chip.limits.poolings))} per axis",
                )
            )
    sensor_h, sensor_w = chip.dvs_size
    limit_x, limit_y = sensor_w // dvs.pooling[1] - 1, sensor_h // dvs.pooling[0] - 1
    if dvs.cut[0] > limit_x or dvs.cut[1] > limit_y:
        problems.append(
            _problem(
                "dvs_crop",
                f"the DVS crop window reaches ({dvs.cut[0]}, {dvs.cut[1]}) in pooled "
                f"coordinates, beyond the pooled sensor ({limit_x}, {limit_y})",
                f"the model's input fits the {sensor_w}x{sensor_h} sensor after pooling and crop",
            )
        )
    return problems
