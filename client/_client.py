"""The blocking client: :class:`Client` and the objects it hands out."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.client import ClientConnection, connect

from specklab.schemas.booking import BookingPublic
from specklab.schemas.deploy import Deployment
from specklab.schemas.jobs import JobState, JobSummary
from specklab.schemas.stream import StreamMode

from ._core import (
    DEFAULT_TIMEOUT,
    Call,
    Op,
    Watch,
    closed_error,
    translated_transport_errors,
)
from ._errors import Conflict, SpecklabError, StreamError, TransportError
from ._operations import JOB_POLL_S, JobProgress, Operations, device_id, lease_interval
from ._stream import (
    CLOSED,
    EXHAUSTED,
    BatchOutput,
    Emit,
    InputOptions,
    Pull,
    Receive,
    Send,
    Session,
    Step,
    StreamOp,
)
from ._websocket import closed_error as stream_closed_error
from ._websocket import connect_error, connect_options

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(op: Callable[Concatenate[Operations, P], Op[T]]) -> Callable[..., T]:
    """An operation as a blocking method of :class:`Client`."""

    @functools.wraps(op)
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self._core, *args, **kwargs))

    return method


class Client:
    """A blocking client of a specklab daemon.

    ``url`` and ``token`` default to ``SPECKLAB_URL`` (else http://127.0.0.1:8765) and
    ``SPECKLAB_TOKEN``. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._core = Operations(url, token, timeout)
        self._http = httpx.Client()
        self._closed = False
        self._streams: set[EventStream] = set()

    @property
    def url(self) -> str:
        return self._core.url

    def __repr__(self) -> str:
        return f"<Client {self.url}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every stream this client opened and its connections. Idempotent."""
        for stream in list(self._streams):
            stream.close()
        self._http.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error("Client")

    def _run(self, op: Op[T]) -> T:
        self._check_open()
        try:
            call = next(op)
            while True:
                with translated_transport_errors(self.url):
                    if call.sink is not None:
                        response = self._download(call)
                    elif call.watch is not None:
                        response = self._send_watched(call.request, call.watch)
                    else:
                        response = self._http.send(call.request)
                call = op.send(response)
        except StopIteration as done:
            return done.value
        finally:
            op.close()

    def _send_watched(self, request: httpx.Request, watch: Watch) -> httpx.Response:
        done = threading.Event()

        def poll() -> None:
            while not done.wait(watch.interval):
                # Only what is shown meanwhile: the call reports its own failures.
                with contextlib.suppress(httpx.HTTPError):
                    watch.seen(self._http.send(watch.request()))

        thread = threading.Thread(target=poll, name="specklab-watch", daemon=True)
        thread.start()
        try:
            return self._http.send(request)
        finally:
            done.set()
            thread.join()

    def _download(self, call: Call) -> httpx.Response:
        response = self._http.send(call.request, stream=True)
        try:
            if response.is_success:
                for chunk in response.iter_bytes():
                    call.write(chunk)
            else:
                response.read()
        finally:
            response.close()
        return response

    health = _blocking(Operations.health)
    version = _blocking(Operations.version)
    me = _blocking(Operations.me)
    users = _blocking(Operations.users)
    create_user = _blocking(Operations.create_user)
    tokens = _blocking(Operations.tokens)
    create_token = _blocking(Operations.create_token)
    revoke_token = _blocking(Operations.revoke_token)
    device_list = _blocking(Operations.device_list)
    devices = _blocking(Operations.devices)
    device = _blocking(Operations.device)
    device_types = _blocking(Operations.device_types)
    supported_devices = _blocking(Operations.supported_devices)
    create_booking = _blocking(Operations.create_booking)
    bookings = _blocking(Operations.bookings)
    booking = _blocking(Operations.booking)
    cancel = _blocking(Operations.cancel)
    extend = _blocking(Operations.extend)
    heartbeat = _blocking(Operations.heartbeat)
    preempt = _blocking(Operations.preempt)
    upload = _blocking(Operations.upload)
    compile = _blocking(Operations.compile)
    models = _blocking(Operations.models)
    model = _blocking(Operations.model)
    delete_model = _blocking(Operations.delete_model)
    model_config = _blocking(Operations.model_config)
    upload_dataset = _blocking(Operations.upload_dataset)
    datasets = _blocking(Operations.datasets)
    delete_dataset = _blocking(Operations.delete_dataset)
    submit_job = _blocking(Operations.submit_job)
    jobs = _blocking(Operations.jobs)
    job = _blocking(Operations.job)
    cancel_job = _blocking(Operations.cancel_job)
    job_summary = _blocking(Operations.job_summary)
    job_samples = _blocking(Operations.job_samples)

    def evaluate(
        self, model: Any, dataset: Any, *, progress: bool = False, **options: Any
    ) -> JobSummary:
        """Run ``model`` over ``dataset`` as a job and wait for its summary (``options``:
        ``JobOptions`` fields); the job is cancelled if the wait is interrupted."""
        job = self.submit_job(model, dataset, **options)
        shown = JobProgress(job, progress)
        try:
            while job.state in (JobState.QUEUED, JobState.RUNNING):
                time.sleep(JOB_POLL_S)
                job = self.job(job)
                shown.show(job)
        except BaseException:
            self.cancel_job(job)
            raise
        finally:
            shown.close()
        return self.job_summary(job)

    deployment = _blocking(Operations.deployment)
    undeploy = _blocking(Operations.undeploy)
    reset_states = _blocking(Operations.reset_states)
    record = _blocking(Operations.record)
    record_dvs = _blocking(Operations.record_dvs)
    recordings = _blocking(Operations.recordings)
    recording = _blocking(Operations.recording)
    delete_recording = _blocking(Operations.delete_recording)
    recording_events = _blocking(Operations.recording_events)
    download_recording = _blocking(Operations.download_recording)
    replay = _blocking(Operations.replay)

    def book(
        self,
        target: Any,
        *,
        minutes: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        wait: bool = False,
    ) -> Booking:
        """Book a device (``speck2fdevkit:0``) or any device of a type (``speck2fdevkit``).

        The booking is made at once (:class:`~specklab.client.BookingConflict` if the slot is
        taken; for a type whose devices are all busy, unless ``wait`` takes the next free slot).
        Use the result as a context manager: entering waits for the start, then keeps the lease
        alive with heartbeats from a background thread; leaving releases the booking.
        """
        booking = self.create_booking(target, minutes=minutes, start=start, end=end, wait=wait)
        return Booking(self, booking, release=True)

    def lease(self, booking: Any, *, release: bool = False) -> Booking:
        """Keep the lease of an existing booking (made with ``specklab book``, say) alive."""
        return Booking(self, self.booking(booking), release=release)

    def deploy(self, model: Any, device: Any, **options: Any) -> HardwareModel:
        """Put a compiled model on a booked device, as the guide's ``hw_model.to(device=...)``.

        ``options``: ``chip_layers_ordering`` ("auto"), ``monitor_layers`` ([-1]),
        ``config_patch``, ``slow_clock_hz``.
        """
        return HardwareModel(self, self._run(self._core.deploy(model, device, **options)))

    def stream(self, device: Any, *, mode: StreamMode | str = "continuous") -> EventStream:
        """An event stream to a device's deployed network (``forward`` or ``continuous``)."""
        mode = StreamMode(mode)
        path = f"/v1/devices/{device_id(device)}/stream"
        return self._open(path, {"mode": mode.value}, Session(mode))

    def dvs_stream(self, device: Any, *, raw: bool = True) -> EventStream:
        """The sensor's live events, on a booked device: iterate the stream for arrays.

        ``raw``: DVS events as the sensor sends them; otherwise the DVS layer's output
        (pooled, cropped, mirrored as deployed) as spikes of core 13.
        """
        path = f"/v1/devices/{device_id(device)}/dvs"
        return self._open(path, {"raw": "true" if raw else "false"}, Session(None))

    def _open(self, path: str, params: dict[str, str], session: Session) -> EventStream:
        self._check_open()
        url = self._core.websocket_url(path, **params)
        try:
            # Entered as the context manager websockets wants; EventStream.close() exits it.
            connection = connect(url, **connect_options(self._core.headers)).__enter__()
        except Exception as exc:
            raise connect_error(exc, url) from exc
        stream = EventStream(connection, session, on_close=self._streams.discard)
        self._streams.add(stream)
        try:
            stream._run(session.greet())
        except BaseException:
            stream.close()
            raise
        return stream


class EventStream:
    """A blocking event stream (one WebSocket). Iterate it for output arrays."""

    def __init__(
        self,
        connection: ClientConnection,
        session: Session,
        *,
        on_close: Callable[[EventStream], None],
    ) -> None:
        self._connection = connection
        self._session = session
        self._on_close = on_close
        self._send_lock = threading.Lock()
        self._closed = False

    @property
    def info(self) -> dict[str, Any]:
        """The daemon's greeting: mode, model layer -> core, input layers, dvs_input ..."""
        return dict(self._session.info)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._connection.close()
            self._on_close(self)

    def _execute(self, step: Send | Receive) -> Any:
        if self._closed:
            raise closed_error("stream")
        try:
            if isinstance(step, Send):
                with self._send_lock:
                    for message in step.messages:
                        self._connection.send(message)
                return None
            return self._connection.recv(timeout=step.timeout, decode=False)
        except TimeoutError:
            return None
        except ConnectionClosedOK:
            if isinstance(step, Send):
                raise TransportError("the daemon closed the stream") from None
            return CLOSED
        except ConnectionClosed as exc:
            raise stream_closed_error(exc, self._session.failure) from exc

    def _drive(self, op: StreamOp[Any], source: Iterator[Any] | None = None) -> Iterator[Any]:
        reply: Any = None
        try:
            while True:
                step: Step = op.send(reply)
                if isinstance(step, Emit):
                    reply = None
                    yield step.value
                elif isinstance(step, Pull):
                    reply = next(source, EXHAUSTED) if source is not None else EXHAUSTED
                else:
                    reply = self._execute(step)
        except StopIteration as done:
            return done.value
        except StreamError as error:
            if error.fatal:
                self.close()
            raise
        finally:
            op.close()

    def _run(self, op: StreamOp[T], source: Iterator[Any] | None = None) -> T:
        driver = self._drive(op, source)
        try:
            next(driver)
        except StopIteration as done:
            return done.value
        raise AssertionError("a stream operation emitted outside an iteration")

    def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        """Send one batch (forward mode) and return every output it caused."""
        return self._run(self._session.forward(events, InputOptions(dt, layer, kind)))

    def forward_many(
        self,
        batches: Iterable[Any],
        *,
        window: int = 2,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> Iterator[BatchOutput]:
        """Forward batches with up to ``window`` in flight; yields their outputs in order."""
        op = self._session.forward_many(InputOptions(dt, layer, kind), window)
        return self._drive(op, iter(batches))

    def send(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> None:
        """Send one batch (continuous mode); outputs come out of the iteration."""
        self.send_from([events], dt=dt, layer=layer, kind=kind)

    def send_from(
        self,
        batches: Iterable[Any],
        *,
        background: bool = False,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> Any:
        """Send every batch of an iterable (continuous mode); returns how many were sent.

        With ``background=True`` a thread sends while you iterate the outputs; the return value
        is then a :class:`concurrent.futures.Future` of the count.
        """
        op = self._session.send_all(InputOptions(dt, layer, kind))
        if not background:
            return self._run(op, iter(batches))
        future: Future[int] = Future()

        def send() -> None:
            try:
                future.set_result(self._run(op, iter(batches)))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=send, name="specklab-send", daemon=True).start()
        return future

    def outputs(self, *, idle: float | None = None) -> Iterator[np.ndarray]:
        """Output arrays as they arrive; ends after ``idle`` quiet seconds or when the stream
        closes."""
        return self._drive(self._session.outputs(idle))

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.outputs()

    def control(self, op: str, **args: Any) -> None:
        self._run(self._session.control(op, **args))

    def reset_states(self) -> None:
        self.control("reset_states")

    def start_sensor(self) -> None:
        self.control("start_sensor")

    def stop_sensor(self) -> None:
        self.control("stop_sensor")

    def stats(self, *, timeout: float = 10.0) -> dict[str, int | float]:
        """The daemon's counters of this stream (frames, events, drops, errors ...)."""
        return self._run(self._session.stats(timeout))


class HardwareModel:
    """A model deployed on a device. Call it like the guide's ``hw_model``:
    ``events_out = hw_model(events_in)``.

    Inputs: a structured event array, a list of spike objects (``layer, x, y, feature,
    timestamp``) or a raster ``[T, C, H, W]`` with ``dt`` (microseconds per step). The output
    is the monitored layers' spikes as a structured array (see :func:`to_spikes`,
    :func:`to_raster`). A forward-mode stream is opened on first use and kept.
    """

    def __init__(self, client: Client, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment
        self._stream: EventStream | None = None

    @property
    def device(self) -> str:
        return self.deployment.device_id

    def __repr__(self) -> str:
        return f"<HardwareModel {self.deployment.model_id} on {self.device}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the model's stream (the deployment stays on the device)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _forward_stream(self) -> EventStream:
        if self._stream is None or self._stream._closed:
            self._stream = self.client.stream(self.device, mode=StreamMode.FORWARD)
        return self._stream

    def __call__(
        self, events: Any, *, dt: float | None = None, layer: int | None = None
    ) -> np.ndarray:
        return self.forward(events, dt=dt, layer=layer).spikes

    def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        """Run one batch; all its outputs (spikes, DVS, readout) and the daemon's counts."""
        return self._forward_stream().forward(events, dt=dt, layer=layer, kind=kind)

    def forward_many(self, batches: Iterable[Any], **options: Any) -> Iterator[BatchOutput]:
        """Run batches in order, pipelined; see :meth:`EventStream.forward_many`."""
        return self._forward_stream().forward_many(batches, **options)

    def reset_states(self) -> None:
        """Set every neuron back to its initial state (in order with the batches sent)."""
        if self._stream is not None and not self._stream._closed:
            self._stream.reset_states()
        else:
            self.client.reset_states(self.device)

    def stream(self, *, mode: StreamMode | str = "continuous") -> EventStream:
        return self.client.stream(self.device, mode=mode)

    def undeploy(self) -> None:
        self.close()
        self.client.undeploy(self.device)


class Booking:
    """A booking; as a context manager it holds the device's lease (see :meth:`Client.book`)."""

    def __init__(self, client: Client, booking: BookingPublic, *, release: bool) -> None:
        self.client = client
        self.booking = booking
        self._release = release
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Wait until the booking starts, take the lease and keep it alive in the background."""
        if self._thread is not None:
            return
        wait = (self.booking.starts_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        lease = self.client.heartbeat(self.booking)
        self._thread = threading.Thread(
            target=self._beat, args=(lease_interval(lease),), name="specklab-lease", daemon=True
        )
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.client.heartbeat(self.booking)
            except TransportError:
                continue  # the lease has slack for a missed beat or two
            except SpecklabError as exc:
                self.lost = exc
                return

    def stop(self) -> None:
        """Stop the heartbeats and, for bookings made by ``book``, release the device."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._release and not self.client._closed:
            try:
                self.booking = self.client.cancel(self.booking)
            except Conflict as exc:
                if exc.code != "booking_over":  # it ran out, or was preempted, in the block
                    raise
                self.booking = self.client.booking(self.booking)

    def refresh(self) -> BookingPublic:
        self.booking = self.client.booking(self.booking)
        return self.booking

    def extend(self, minutes: int) -> BookingPublic:
        self.booking = self.client.extend(self.booking, minutes=minutes)
        return self.booking
