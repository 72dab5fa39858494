"""samna.device: enumeration, open/close, and the devkit handle with its model."""

from __future__ import annotations

import sys
from typing import Any

from ._double import STATE, DeviceInfo
from .graph import BasicSinkNode, EventFilterGraph, Node

__all__ = ["DeviceInfo", "close_device", "get_all_devices", "get_unopened_devices", "open_device"]


def get_all_devices() -> list[DeviceInfo]:
    STATE.record("get_all_devices")
    if STATE.enumeration_error is not None:
        raise STATE.enumeration_error
    return list(STATE.devices)


def get_unopened_devices() -> list[DeviceInfo]:
    STATE.record("get_unopened_devices")
    opened = {id(h.info) for h in STATE.handles if not h.closed}
    return [info for info in STATE.devices if id(info) not in opened]


def open_device(info: DeviceInfo) -> DeviceHandle | None:
    STATE.record("open_device", info)
    if info not in STATE.devices:
        return None
    handle = DeviceHandle(info)
    STATE.handles.append(handle)
    return handle


def close_device(handle: DeviceHandle) -> None:
    STATE.record("close_device", handle.info)
    handle.closed = True


class DeviceHandle:
    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self.dead = False
        self.closed = False
        self.model = Model(self)
        self.stop_watch = StopWatch(self)
        self.io = IoModule(self)

    def check_alive(self) -> None:
        if self.dead:
            raise RuntimeError(f"device {self.info.serial_number} disconnected")

    def get_model(self) -> Model:
        STATE.record("get_model")
        self.check_alive()
        return self.model

    def get_stop_watch(self) -> StopWatch:
        STATE.record("get_stop_watch")
        self.check_alive()
        return self.stop_watch

    def get_io_module(self) -> IoModule:
        STATE.record("get_io_module")
        self.check_alive()
        return self.io

    def reset_board_soft(self, full: bool) -> None:
        STATE.record("reset_board_soft", full)
        self.check_alive()


class StopWatch:
    def __init__(self, handle: DeviceHandle) -> None:
        self._handle = handle
        self.running = False

    def set_enable_value(self, value: bool) -> None:
        STATE.record("stopwatch.set_enable_value", value)
        self._handle.check_alive()

    def start(self) -> None:
        STATE.record("stopwatch.start")
        self._handle.check_alive()
        self.running = True
        self._handle.model.flush()

    def stop(self) -> None:
        STATE.record("stopwatch.stop")
        self._handle.check_alive()
        self.running = False

    def reset(self) -> None:
        STATE.record("stopwatch.reset")
        self._handle.check_alive()


class IoModule:
    def __init__(self, handle: DeviceHandle) -> None:
        self._handle = handle

    def set_slow_clk(self, enable: bool) -> None:
        STATE.record("io.set_slow_clk", enable)
        self._handle.check_alive()

    def set_slow_clk_rate(self, hz: int) -> None:
        if not isinstance(hz, int):
            raise TypeError(f"set_slow_clk_rate takes an int, got {hz!r}")
        STATE.record("io.set_slow_clk_rate", hz)
        self._handle.check_alive()


class _ModelInput(Node):
    """The chip's input: events wait here until the stopwatch runs (like the devkit's FIFO)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self._model = model

    def receive(self, events: list[Any]) -> None:
        self._model.receive(events)


class _ModelOutput(Node):
    def __init__(self, model: Model) -> None:
        super().__init__()
        self._model = model

    def _connect(self, downstream: Any, graph: EventFilterGraph) -> None:
        super()._connect(downstream, graph)
        if isinstance(downstream, BasicSinkNode):
            downstream._handles.append(self._model.handle)


class Model:
    def __init__(self, handle: DeviceHandle) -> None:
        self.handle = handle
        self._input = _ModelInput(self)
        self._output = _ModelOutput(self)
        self._queued: list[Any] = []

    def get_sink_node(self) -> _ModelInput:
        STATE.record("model.get_sink_node")
        return self._input

    def get_source_node(self) -> _ModelOutput:
        STATE.record("model.get_source_node")
        return self._output

    def apply_configuration(self, config: Any) -> None:
        STATE.record("apply_configuration", config)
        self.handle.check_alive()
        if STATE.apply_hangs > 0:
            STATE.apply_hangs -= 1
            STATE.release.wait()

    def receive(self, events: list[Any]) -> None:
        self.handle.check_alive()
        self._queued.extend(events)
        if self.handle.stop_watch.running:
            self.flush()

    def flush(self) -> None:
        events, self._queued = self._queued, []
        outputs: list[Any] = []
        network_input = []
        for event in events:
            if type(event).__name__ == "ReadNeuronValue":
                event_module = sys.modules[type(event).__module__]  # the chip's event module
                state = STATE.neuron_states.get((event.layer, event.address), 0)
                outputs.append(
                    event_module.NeuronValue(
                        layer=event.layer, address=event.address, neuron_state=state
                    )
                )
            else:
                network_input.append(event)
        if STATE.responder is not None and network_input:
            outputs.extend(STATE.responder(network_input))
        if outputs:
            self._output._send(outputs)
