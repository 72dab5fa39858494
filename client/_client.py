"""The blocking client: :class:`Client` and the objects it hands out."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from datetime import datetime
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
from ._errors import SpecklabError, StreamError, TransportError, WaitTimeout
from ._handles import BookingHandle, ModelHandle, StreamHandle
from ._operations import JOB_POLL_S, JobProgress, Operations, device_id
from ._stream import (
    CLOSED,
    EXHAUSTED,
    BatchOutput,
    Emit,
    Pull,
    Receive,
    Send,
    Step,
    StreamOp,
    StreamState,
)
from ._waiting import StartWait
from ._websocket import LAST_FRAMES_S, connect_error, connect_options
from ._websocket import closed_error as stream_closed_error

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    op: Callable[Concatenate[Operations, P], Op[T]],
) -> Callable[Concatenate[Client, P], T]:
    """An operation as a blocking method of :class:`Client`."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self._core, *args, **kwargs))

    functools.update_wrapper(method, op)
    return method


def _deploying(
    op: Callable[Concatenate[Operations, P], Op[Deployment]],
) -> Callable[Concatenate[Client, P], HardwareModel]:
    """Deploying as a method of :class:`Client`: the deployment comes as a HardwareModel."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> HardwareModel:
        return HardwareModel(self, self._run(op(self._core, *args, **kwargs)))

    functools.update_wrapper(method, op)
    return method


class Client:
    """A blocking client of a specklab daemon.

    ``url`` and ``token`` default to ``SPECKLAB_URL`` (else http://127.0.0.1:8765) and
    ``SPECKLAB_TOKEN``. Use it as a context manager, or call :meth:`close`.
    ``transport``: the httpx transport (or a whole ``httpx.Client``) that REST calls go
    through, e.g. to reach an in-process app; streams always open a WebSocket to ``url``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | httpx.Client | None = None,
    ) -> None:
        self._core = Operations(url, token, timeout)
        # A given httpx client stays its caller's: close() leaves it open.
        self._owns_http = not isinstance(transport, httpx.Client)
        self._http = (
            transport if isinstance(transport, httpx.Client) else httpx.Client(transport=transport)
        )
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
        if self._owns_http:
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
                try:
                    with translated_transport_errors(self.url):
                        if call.sink is not None:
                            response = self._download(call)
                        elif call.watch is not None:
                            response = self._send_watched(call.request, call.watch)
                        else:
                            response = self._http.send(call.request)
                except TransportError as exc:
                    call = op.throw(exc)  # the operation may carry on (a missed heartbeat)
                else:
                    call = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result
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
    lab_status = _blocking(Operations.lab_status)
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
    chip_config = _blocking(Operations.chip_config)
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
        ``JobOptions`` fields; ``devices=[...]``: booked devices to run on, by id, listing
        entry or booking); the job is cancelled if the wait is interrupted."""
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
    neuron_states = _blocking(Operations.neuron_states)
    record = _blocking(Operations.record)
    record_dvs = _blocking(Operations.record_dvs)
    recordings = _blocking(Operations.recordings)
    recording = _blocking(Operations.recording)
    delete_recording = _blocking(Operations.delete_recording)
    recording_events = _blocking(Operations.recording_events)
    download_recording = _blocking(Operations.download_recording)
    replay = _blocking(Operations.replay)
    audit = _blocking(Operations.audit)

    def book(
        self,
        target: Any,
        *,
        minutes: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        wait: bool = False,
        timeout: float | None = None,
        progress: bool = False,
    ) -> Booking:
        """Book a device (``speck2fdevkit:0``) or any device of a type (``speck2fdevkit``).

        The booking is made at once (:class:`~specklab.client.BookingConflict` if the slot is
        taken; for a type whose devices are all busy, unless ``wait`` takes the next free slot).
        Use the result as a context manager: entering waits for the start (a booking that
        waits for a type starts as soon as one of its devices frees; at most ``timeout``
        seconds, then :class:`~specklab.client.WaitTimeout` and the booking is cancelled;
        ``progress`` shows a countdown on stderr), then keeps the lease alive with heartbeats
        from a background thread; leaving releases the booking.
        """
        booking = self.create_booking(target, minutes=minutes, start=start, end=end, wait=wait)
        return Booking(self, booking, release=True, timeout=timeout, progress=progress)

    def lease(self, booking: Any, *, release: bool = False) -> Booking:
        """Keep the lease of an existing booking (made with ``specklab book``, say) alive."""
        return Booking(self, self.booking(booking), release=release)

    deploy = _deploying(Operations.deploy)

    def stream(self, device: Any, *, mode: StreamMode | str = "continuous") -> EventStream:
        """An event stream to a device's deployed network (``forward`` or ``continuous``)."""
        mode = StreamMode(mode)
        path = f"/v1/devices/{device_id(device)}/stream"
        return self._open(path, {"mode": mode.value}, StreamState(mode))

    def dvs_stream(self, device: Any, *, raw: bool = True) -> EventStream:
        """The sensor's live events, on a booked device: iterate the stream for arrays.

        ``raw``: DVS events as the sensor sends them; otherwise the DVS layer's output
        (pooled, cropped, mirrored as deployed) as spikes of core 13.
        """
        path = f"/v1/devices/{device_id(device)}/dvs"
        return self._open(path, {"raw": "true" if raw else "false"}, StreamState(None))

    def _open(self, path: str, params: dict[str, str], state: StreamState) -> EventStream:
        self._check_open()
        url = self._core.websocket_url(path, **params)
        try:
            # Entered as the context manager websockets wants; EventStream.close() exits it.
            connection = connect(url, **connect_options(self._core.headers)).__enter__()
        except Exception as exc:
            raise connect_error(exc, url) from exc
        stream = EventStream(connection, state, on_close=self._streams.discard)
        self._streams.add(stream)
        try:
            stream._run(state.greet())
        except BaseException:
            stream.close()
            raise
        return stream


class EventStream(StreamHandle):
    """A blocking event stream (one WebSocket). Iterate it for output arrays."""

    def __init__(
        self,
        connection: ClientConnection,
        state: StreamState,
        *,
        on_close: Callable[[EventStream], None],
    ) -> None:
        super().__init__(state)
        self._connection = connection
        self._on_close = on_close
        self._send_lock = threading.Lock()

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
            self._read_last_frames()
            raise stream_closed_error(exc, self._state.failure) from exc

    def _read_last_frames(self) -> None:
        """The frames the daemon sent before it closed (its fatal frame says why), when a
        send found the stream closed before they were read."""
        with contextlib.suppress(ConnectionClosed, SpecklabError, TimeoutError):
            while self._state.failure is None:
                self._state.receive(self._connection.recv(timeout=LAST_FRAMES_S, decode=False))

    def _drive(
        self, op: StreamOp[Any], source: Iterator[Any] | None = None
    ) -> Generator[Any, None, Any]:
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
            result: T = done.value
            return result
        raise AssertionError("a stream operation emitted outside an iteration")

    def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        """Send one batch (forward mode) and return every output it caused."""
        return self._run(self._forward(events, dt, layer, kind))

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
        return self._drive(self._forward_many(window, dt, layer, kind), iter(batches))

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
        op = self._send_all(dt, layer, kind)
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
        return self._drive(self._outputs(idle))

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.outputs()

    def control(self, op: str, **args: Any) -> None:
        self._run(self._control(op, **args))

    def reset_states(self) -> None:
        self.control("reset_states")

    def start_sensor(self) -> None:
        self.control("start_sensor")

    def stop_sensor(self) -> None:
        self.control("stop_sensor")

    def stats(self, *, timeout: float = 10.0) -> dict[str, int | float]:
        """The daemon's counters of this stream (frames, events, drops, errors ...)."""
        return self._run(self._stats(timeout))


class HardwareModel(ModelHandle[EventStream]):
    """A model deployed on a device. Call it like the guide's ``hw_model``:
    ``events_out = hw_model(events_in)``.

    Inputs: a structured event array, a list of spike objects (``layer, x, y, feature,
    timestamp``) or a raster ``[T, C, H, W]`` with ``dt`` (microseconds per step). The output
    is the monitored layers' spikes as a structured array (see :func:`to_spikes`,
    :func:`to_raster`). A forward-mode stream is opened on first use and kept.
    """

    def __init__(self, client: Client, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.client = client

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
        stream = self._open_stream()
        if stream is None:
            stream = self._stream = self.client.stream(self.device, mode=StreamMode.FORWARD)
        return stream

    def __call__(
        self, events: Any, *, dt: float | None = None, layer: int | None = None
    ) -> np.ndarray:
        return self.forward(events, dt=dt, layer=layer).spikes

    def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        """Run one batch; all its outputs (spikes, DVS, readout) and the daemon's counts."""
        return self._forward_stream().forward(events, dt=dt, layer=layer, kind=kind)

    def forward_many(
        self,
        batches: Iterable[Any],
        *,
        window: int = 2,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> Iterator[BatchOutput]:
        """Run batches in order, pipelined; see :meth:`EventStream.forward_many`."""
        stream = self._forward_stream()
        return stream.forward_many(batches, window=window, dt=dt, layer=layer, kind=kind)

    def reset_states(self) -> None:
        """Set every neuron back to its initial state (in order with the batches sent)."""
        stream = self._open_stream()
        if stream is not None:
            stream.reset_states()
        else:
            self.client.reset_states(self.device)

    def membrane(self, layer: int) -> np.ndarray:
        """Model layer ``layer``'s membrane potentials now, int32 ``[feature, y, x]``."""
        return self.client.neuron_states(self.device, layer).array()

    def stream(self, *, mode: StreamMode | str = "continuous") -> EventStream:
        return self.client.stream(self.device, mode=mode)

    def undeploy(self) -> None:
        self.close()
        self.client.undeploy(self.device)


class Booking(BookingHandle):
    """A booking; as a context manager it holds the device's lease (see :meth:`Client.book`)."""

    def __init__(
        self,
        client: Client,
        booking: BookingPublic,
        *,
        release: bool,
        timeout: float | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(client._core, booking, release=release)
        self.client = client
        self._waiting = (timeout, progress)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        self.wait()
        interval = self.client._run(self._take_lease())
        self._thread = threading.Thread(
            target=self._beats, args=(interval,), name="specklab-lease", daemon=True
        )
        self._thread.start()

    def _beats(self, interval: float) -> None:
        while not self._stop.wait(interval) and not self.client._closed:
            if not self.client._run(self._beat()):
                return

    def wait(self) -> None:
        """Wait until the booking starts (looking every few seconds: the daemon may start it
        early); past the ``timeout`` given to ``book``, cancel it and raise ``WaitTimeout``.
        A booking made by ``book`` is cancelled on Ctrl-C too: nobody waits for it any more."""
        timeout, progress = self._waiting
        waiting = StartWait(timeout, countdown=progress)
        try:
            while (pause := waiting.pause(self.booking)) is not None:
                time.sleep(pause)
                self.refresh()
        except (WaitTimeout, KeyboardInterrupt) as stopped:
            if self._release or isinstance(stopped, WaitTimeout):
                self.booking = self.client.cancel(self.booking)
            raise
        finally:
            waiting.close()

    def stop(self) -> None:
        """Stop the heartbeats and, for bookings made by ``book``, release the device."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.client._closed:
            self.client._run(self._end())

    def refresh(self) -> BookingPublic:
        return self.client._run(self._refresh())

    def extend(self, minutes: int) -> BookingPublic:
        return self.client._run(self._extend(minutes))
