"""The samna driver: a real Speck devkit behind the :class:`~.base.Device` interface.

It gets the samna module from the manager (imported lazily, off the event loop) and never
imports it itself. Every samna call that talks to the board is wrapped so that a failure
becomes :class:`DeviceIOError`, which the manager treats as the device being gone.

Timing of a batch (``forward``), following docs/chip.md §8:

1. the inputs are shifted to start at 0 (the devkit forwards an event once its stopwatch reaches
   the event's timestamp; past events go at once);
2. the stopwatch is stopped and reset, the output buffer drained, **all** events written, and only
   then the stopwatch started, so that early events do not arrive as a burst;
3. the output buffer is polled every ``poll_s`` until the stopwatch passed the last input and then
   no event came for ``quiet_s`` (the end), or until ``timeout`` after the last input (the bound:
   the result is then marked incomplete, e.g. with a live sensor that never goes quiet);
4. output timestamps are shifted back into the inputs' time base.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import DVS_LAYER
from specklab.schemas.inputs import Checked

from . import shared as ev
from .base import DeviceDescription, DeviceHealth, DeviceOutput
from .errors import (
    ConfigRejected,
    DeviceError,
    DeviceIOError,
    DeviceStateError,
    DeviceTimeout,
    InvalidArgument,
)
from .samna_config import build_configuration, chip_module
from .samna_events import Decoded, from_samna, neuron_address, to_samna
from .worker import call_with_timeout

log = logging.getLogger("specklab.devices.samna")

T = TypeVar("T")

#: samna's buffer node class names per chip: (host -> chip source, chip -> host sink).
GRAPH_NODES: dict[str, tuple[str, str]] = {
    "speck2f": (
        "BasicSourceNode_speck2f_event_input_event",
        "BasicSinkNode_speck2f_event_output_event",
    ),
    "speck2e": (
        "BasicSourceNode_speck2e_event_speck2e_input_event",
        "BasicSinkNode_speck2e_event_output_event",
    ),
}


class SamnaDevkit:
    def __init__(
        self,
        samna: ModuleType,
        info: Any,
        description: DeviceDescription,
        *,
        apply_timeout_s: float = 30.0,
        soft_reset_settle_s: float = 1.0,
        quiet_s: float = 0.1,
        poll_s: float = 0.005,
        neuron_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if description.chip is None:
            raise DeviceStateError(f"{description.id} cannot take a network")
        self._samna = samna
        self._info = info
        self._description = description
        self._chip = chip_module(samna, description.chip)
        self._apply_timeout_s = apply_timeout_s
        self._soft_reset_settle_s = soft_reset_settle_s
        self._quiet_s = quiet_s
        self._poll_s = poll_s
        self._neuron_timeout_s = neuron_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._handle: Any = None
        self._graph: Any = None
        self._source: Any = None
        self._sink: Any = None
        self._stopwatch: Any = None
        self._io: Any = None
        self._config: ChipConfig | None = None
        self._sensor = False
        #: Output events read while waiting for something else (a neuron value).
        self._pending: list[Any] = []
        self._counters: Counter[str] = Counter()

    @property
    def description(self) -> DeviceDescription:
        return self._description

    # ----- life cycle -----

    def open(self) -> None:
        if self._handle is not None:
            return
        samna = self._samna
        handle = self._io_call("open_device", samna.device.open_device, self._info)
        if handle is None:
            raise DeviceIOError(f"samna could not open {self._description.id}")
        self._handle = handle
        try:
            source_name, sink_name = GRAPH_NODES[self._description.chip or ""]
            model = self._io_call("get_model", handle.get_model)
            self._source = getattr(samna, source_name)()
            self._sink = getattr(samna, sink_name)()
            self._graph = samna.graph.EventFilterGraph()
            self._io_call("graph", self._graph.sequential, [self._source, model.get_sink_node()])
            self._io_call("graph", self._graph.sequential, [model.get_source_node(), self._sink])
            self._io_call("graph start", self._graph.start)
            self._stopwatch = self._io_call("get_stop_watch", handle.get_stop_watch)
            # Some chip versions only timestamp events once this is set.
            self._io_call("enable timestamps", self._stopwatch.set_enable_value, True)
            self._io = self._io_call("get_io_module", handle.get_io_module)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        graph, handle = self._graph, self._handle
        self._graph = self._source = self._sink = self._stopwatch = self._io = None
        self._handle = None
        self._config = None
        self._pending = []
        if graph is not None:
            _quietly("graph stop", graph.stop)
        if handle is not None:
            _quietly("close_device", self._samna.device.close_device, handle)

    # ----- configuration -----

    def apply(self, config: ChipConfig) -> None:
        self._require_open()
        ev.check_chip(self._description, config)
        self._write_config(config)
        self._config = config

    def clear(self) -> None:
        self._require_open()
        self._write_config(ChipConfig(chip=self._description.chip))
        self._config = None

    def reset_states(self) -> None:
        # Only re-writing the configuration really resets neuron states (docs/chip.md §8).
        self._require_open()
        if self._config is not None:
            self._write_config(self._config)

    def set_sensor(self, enabled: bool) -> None:
        self._require_open()
        self._sensor = enabled
        if self._config is not None:
            self._write_config(self._config)

    def _write_config(self, config: ChipConfig) -> None:
        samna_config = build_configuration(self._samna, config, sensor_enabled=self._sensor)
        ok, message = self._chip.validate_configuration(samna_config)
        if not ok:
            raise ConfigRejected(f"samna's validator refused the configuration: {message}")
        model = self._io_call("get_model", self._handle.get_model)
        try:
            self._apply_with_timeout(model, samna_config)
        except DeviceTimeout:
            log.warning("apply_configuration timed out; soft-resetting the board and retrying")
            self._counters["soft_resets"] += 1
            self._io_call("reset_board_soft", self._handle.reset_board_soft, True)
            self._sleep(self._soft_reset_settle_s)
            try:
                self._apply_with_timeout(model, samna_config)
            except DeviceTimeout as exc:
                raise DeviceTimeout(f"{exc.message}, also after a soft reset") from None
        self._set_slow_clock(config.slow_clock_hz)
        self._pending = []
        self._get_events()

    def _apply_with_timeout(self, model: Any, samna_config: Any) -> None:
        try:
            call_with_timeout(
                model.apply_configuration,
                samna_config,
                timeout=self._apply_timeout_s,
                what="apply_configuration",
            )
        except DeviceError:
            raise
        except Exception as exc:
            raise DeviceIOError(f"apply_configuration failed: {exc}") from exc

    def _set_slow_clock(self, hz: float | None) -> None:
        if hz is None:
            self._io_call("set_slow_clk", self._io.set_slow_clk, False)
            return
        self._io_call("set_slow_clk_rate", self._io.set_slow_clk_rate, round(hz))
        self._io_call("set_slow_clk", self._io.set_slow_clk, True)

    # ----- events -----

    def write(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        checked: Checked | None = None,
    ) -> None:
        """``checked`` changes nothing here, as for :meth:`forward`."""
        self._require_open()
        spikes = ev.input_spikes(self._config, spikes)
        dvs = ev.input_dvs(self._config, dvs)
        if len(spikes) or len(dvs):
            self._io_call("write", self._source.write, to_samna(self._chip, spikes, dvs))

    def forward(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        timeout: float,
        checked: Checked | None = None,
    ) -> DeviceOutput:
        """``checked`` changes nothing here: the driver does not check inputs again."""
        self._require_open()
        spikes = ev.input_spikes(self._config, spikes)
        dvs = ev.input_dvs(self._config, dvs)
        origin = ev.batch_origin(spikes, dvs)
        last_us = ev.batch_end(spikes, dvs) - origin
        inputs = to_samna(self._chip, spikes, dvs, shift=origin)
        self._io_call("stopwatch stop", self._stopwatch.stop)
        self._io_call("stopwatch reset", self._stopwatch.reset)
        self._pending = []
        self._counters["discarded_before_forward"] += len(self._get_events())
        if inputs:
            self._io_call("write", self._source.write, inputs)
        self._io_call("stopwatch start", self._stopwatch.start)
        due = self._clock() + last_us / 1e6
        collected: list[Any] = []
        last_new = due
        while True:
            got = self._get_events()
            now = self._clock()
            if got:
                collected.extend(got)
                last_new = max(now, due)
            if now >= due and now - last_new >= self._quiet_s:
                complete = True
                break
            if now >= due + timeout:
                complete = False
                self._counters["forwards_cut_at_bound"] += 1
                break
            self._sleep(self._poll_s)
        return self._output(self._decode(collected), shift=origin, complete=complete)

    def read(self, timeout: float) -> DeviceOutput:
        self._require_open()
        deadline = self._clock() + timeout
        collected, self._pending = self._pending, []
        while True:
            collected.extend(self._get_events())
            if collected or self._clock() >= deadline:
                break
            self._sleep(self._poll_s)
        return self._output(self._decode(collected))

    def start_stopwatch(self) -> None:
        self._require_open()
        self._io_call("stopwatch start", self._stopwatch.start)

    def stop_stopwatch(self) -> None:
        self._require_open()
        self._io_call("stopwatch stop", self._stopwatch.stop)

    def reset_stopwatch(self) -> None:
        self._require_open()
        self._io_call("stopwatch reset", self._stopwatch.reset)

    def read_states(self, core: int) -> np.ndarray:
        self._require_open()
        if self._config is None:
            raise DeviceStateError("apply a configuration before reading neurons")
        layer = self._config.cnn_layers.get(core)
        if layer is None:
            raise InvalidArgument(f"core {core} is not used by the applied configuration")
        shape = layer.neuron_shape
        # The vendor's packing can give two neurons one address (a width with more bits than
        # the height): each address is asked once and its value fills every such neuron.
        neurons: dict[int, list[tuple[int, int, int]]] = {}
        for feature, y, x in np.ndindex(shape):
            neurons.setdefault(neuron_address(shape, feature, y, x), []).append((feature, y, x))
        requests = []
        for address in neurons:
            request = self._chip.event.ReadNeuronValue()
            request.layer, request.address = core, address
            requests.append(request)
        self._io_call("write", self._source.write, requests)
        states = np.zeros(shape, dtype=np.int32)
        missing = set(neurons)
        deadline = self._clock() + self._neuron_timeout_s
        while missing:
            got = self._get_events()
            for event in got:
                if (
                    type(event) is self._chip.event.NeuronValue
                    and event.layer == core
                    and event.address in missing
                ):
                    missing.discard(event.address)
                    for position in neurons[event.address]:
                        states[position] = event.neuron_state
                    deadline = self._clock() + self._neuron_timeout_s
                else:
                    self._pending.append(event)
            if missing and self._clock() >= deadline:
                raise DeviceTimeout(
                    f"{len(missing)} of core {core}'s {len(neurons)} neuron addresses gave no "
                    f"value within {self._neuron_timeout_s:g} s"
                )
            if missing:
                self._sleep(self._poll_s)
        return states

    def health(self) -> DeviceHealth:
        return DeviceHealth(
            ok=True,
            detail=ev.summary(self._handle is not None, self._config, self._sensor),
            counters=dict(self._counters),
        )

    # ----- helpers -----

    def _require_open(self) -> None:
        if self._handle is None:
            raise DeviceStateError(f"{self._description.id} is not open")

    def _get_events(self) -> list[Any]:
        return list(self._io_call("read", self._sink.get_events))

    def _decode(self, events: list[Any]) -> Decoded:
        decoded = from_samna(self._chip, events)
        self._counters.update(decoded.ignored)
        return decoded

    def _output(self, decoded: Decoded, *, shift: int = 0, complete: bool = True) -> DeviceOutput:
        """Decoded events (fresh arrays, changed in place): model layers filled in, timestamps
        moved by ``shift`` back into the inputs' time base."""
        self._counters["events_out"] += len(decoded.spikes) + len(decoded.dvs)
        if self._config is not None:
            self._config.spikes_to_layers(decoded.spikes)
        else:
            decoded.spikes["layer"] = DVS_LAYER  # without a network, only it can emit
        if shift:
            for events in (decoded.spikes, decoded.dvs, decoded.readout):
                events["t"] += np.uint64(shift)
        return DeviceOutput(
            spikes=decoded.spikes, dvs=decoded.dvs, readout=decoded.readout, complete=complete
        )

    def _io_call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except DeviceError:
            raise
        except Exception as exc:
            raise DeviceIOError(
                f"samna {what} failed on {self._description.id}: {type(exc).__name__}: {exc}"
            ) from exc


def _quietly(what: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("samna %s failed while closing: %s", what, exc)
