"""The objects the clients hand out (a booking, a deployed model, an event stream), written once.

Their state and logic live here, as operations (:mod:`._core`) and stream operations
(:mod:`._stream`); :mod:`._client` and :mod:`._async_client` only run them, blocking or
awaiting, and own what is I/O: sleeping, the heartbeat thread or task, the WebSocket.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from specklab.schemas.booking import BookingPublic
from specklab.schemas.deploy import Deployment

from ._core import Op
from ._errors import Conflict, SpecklabError, TransportError
from ._operations import Operations, lease_interval
from ._stream import BatchOutput, InputOptions, StreamOp, StreamState


class BookingHandle:
    """A booking and what holding its lease takes (see :meth:`Client.book`)."""

    def __init__(self, operations: Operations, booking: BookingPublic, *, release: bool) -> None:
        self.booking = booking
        self._operations = operations
        self._release = release
        #: Why the heartbeats stopped early (the booking was ended or preempted), if they did.
        self.lost: SpecklabError | None = None

    @property
    def id(self) -> int:
        return self.booking.id

    @property
    def device_id(self) -> str:
        return self.booking.device_id

    def __repr__(self) -> str:
        b = self.booking
        return f"<Booking {b.id} {b.device_id} {b.starts_at:%H:%M}-{b.ends_at:%H:%M} {b.status}>"

    def _take_lease(self) -> Op[float]:
        """The first heartbeat; returns the seconds between the next ones."""
        lease = yield from self._operations.heartbeat(self.booking)
        return lease_interval(lease)

    def _beat(self) -> Op[bool]:
        """One heartbeat; False once the booking is lost and the beats should stop."""
        try:
            yield from self._operations.heartbeat(self.booking)
        except TransportError:
            return True  # the lease has slack for a missed beat or two
        except SpecklabError as exc:
            self.lost = exc
            return False
        return True

    def _end(self) -> Op[None]:
        """Release the device, for bookings made by ``book``."""
        if not self._release:
            return
        try:
            self.booking = yield from self._operations.cancel(self.booking)
        except Conflict as exc:
            if exc.code != "booking_over":  # it ran out, or was preempted, in the block
                raise
            self.booking = yield from self._operations.booking(self.booking)

    def _refresh(self) -> Op[BookingPublic]:
        self.booking = yield from self._operations.booking(self.booking)
        return self.booking

    def _extend(self, minutes: int) -> Op[BookingPublic]:
        self.booking = yield from self._operations.extend(self.booking, minutes=minutes)
        return self.booking


class StreamHandle:
    """An event stream's state and the operations of its calls."""

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._closed = False

    @property
    def info(self) -> dict[str, Any]:
        """The daemon's greeting: mode, model layer -> core, input layers, dvs_input ..."""
        return dict(self._state.info)

    def _forward(
        self, events: Any, dt: float | None, layer: int | None, kind: Any
    ) -> StreamOp[BatchOutput]:
        return self._state.forward(events, InputOptions(dt, layer, kind))

    def _forward_many(
        self, window: int, dt: float | None, layer: int | None, kind: Any
    ) -> StreamOp[None]:
        return self._state.forward_many(InputOptions(dt, layer, kind), window)

    def _send_all(self, dt: float | None, layer: int | None, kind: Any) -> StreamOp[int]:
        return self._state.send_all(InputOptions(dt, layer, kind))

    def _outputs(self, idle: float | None) -> StreamOp[None]:
        return self._state.outputs(idle)

    def _control(self, op: str, **args: Any) -> StreamOp[None]:
        return self._state.control(op, **args)

    def _stats(self, timeout: float) -> StreamOp[dict[str, int | float]]:
        return self._state.stats(timeout)


class _Stream(Protocol):
    _closed: bool


S = TypeVar("S", bound=_Stream)


class ModelHandle(Generic[S]):
    """A deployment and the forward-mode stream its calls use, opened on first use."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self._stream: S | None = None

    @property
    def device(self) -> str:
        return self.deployment.device_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.deployment.model_id} on {self.device}>"

    def _open_stream(self) -> S | None:
        """The model's stream if it is open."""
        if self._stream is not None and not self._stream._closed:
            return self._stream
        return None
