"""samna.graph and the host-side buffer nodes: events flow only while their graph runs."""

from __future__ import annotations

import itertools
from typing import Any

from ._double import STATE


class Node:
    def __init__(self) -> None:
        self._links: list[tuple[Any, EventFilterGraph]] = []

    def _connect(self, downstream: Any, graph: EventFilterGraph) -> None:
        self._links.append((downstream, graph))

    def _send(self, events: list[Any]) -> None:
        for downstream, graph in self._links:
            if graph.running:
                downstream.receive(events)


class EventFilterGraph:
    def __init__(self) -> None:
        STATE.record("EventFilterGraph")
        self.running = False

    def sequential(self, nodes: list[Any]) -> list[Any]:
        STATE.record("graph.sequential", [type(node).__name__ for node in nodes])
        for upstream, downstream in itertools.pairwise(nodes):
            upstream._connect(downstream, self)
        return nodes

    def start(self) -> bool:
        STATE.record("graph.start")
        self.running = True
        return True

    def stop(self) -> None:
        STATE.record("graph.stop")
        self.running = False


class BasicSourceNode(Node):
    """Host -> device. Subclassed per chip with the event types that chip accepts."""

    INPUT_TYPES: tuple[type, ...] = ()

    def write(self, events: list[Any]) -> None:
        events = list(events)
        STATE.record("source.write", events)
        for event in events:
            if not isinstance(event, self.INPUT_TYPES):
                raise TypeError(f"{type(self).__name__} cannot take {type(event)!r}")
        self._send(events)


class BasicSinkNode(Node):
    """Device -> host: buffers what arrives until get_events()."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer: list[Any] = []
        self._handles: list[Any] = []

    def receive(self, events: list[Any]) -> None:
        self._buffer.extend(events)

    def get_events(self) -> list[Any]:
        STATE.record("sink.get_events")
        for handle in self._handles:
            handle.check_alive()
        if STATE.live is not None and self._handles:
            self._buffer.extend(STATE.live())
        events, self._buffer = self._buffer, []
        return events
