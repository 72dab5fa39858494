"""The asyncio client: :class:`AsyncClient` and the objects it hands out.

Methods that open something (``book``, ``deploy``, ``stream``, ``dvs_stream``) return an object
that can be awaited or used directly with ``async with``, as ``websockets.connect`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
)
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

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
_Entered = TypeVar("_Entered", bound="_AsyncResource")


def _awaiting(
    op: Callable[Concatenate[Operations, P], Op[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """An operation as a coroutine method of :class:`AsyncClient`."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self._core, *args, **kwargs))

    functools.update_wrapper(method, op)
    return method


def _deploying(
    op: Callable[Concatenate[Operations, P], Op[Deployment]],
) -> Callable[Concatenate[AsyncClient, P], _Opening[AsyncHardwareModel]]:
    """Deploying as a method of :class:`AsyncClient`: ``await`` it (or ``async with`` it) for
    an AsyncHardwareModel."""

    def method(
        self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> _Opening[AsyncHardwareModel]:
        async def deploy() -> AsyncHardwareModel:
            return AsyncHardwareModel(self, await self._run(op(self._core, *args, **kwargs)))

        return _Opening(deploy())

    functools.update_wrapper(method, op)
    return method


class _AsyncResource:
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError


class _Opening(Generic[_Entered]):
    """``await`` it for the object, or ``async with`` it to close the object at the end."""

    def __init__(self, opening: Coroutine[Any, Any, _Entered]) -> None:
        self._opening = opening
        self._entered: _Entered | None = None

    def __await__(self) -> Generator[Any, None, _Entered]:
        return self._opening.__await__()

    async def __aenter__(self) -> _Entered:
        self._entered = await self._opening
        return await self._entered.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._entered is not None
        await self._entered.__aexit__(*exc_info)


class AsyncClient:
    """An asyncio client of a specklab daemon; the same API as :class:`Client`, awaited.

    ``transport``: an ``httpx.AsyncBaseTransport`` (e.g. ``httpx.ASGITransport(app)``) or a
    whole ``httpx.AsyncClient`` for the REST calls; streams always open a WebSocket to ``url``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Operations(url, token, timeout)
        # A given httpx client stays its caller's: aclose() leaves it open.
        self._owns_http = not isinstance(transport, httpx.AsyncClient)
        self._http = (
            transport
            if isinstance(transport, httpx.AsyncClient)
            else httpx.AsyncClient(transport=transport)
        )
        self._closed = False
        self._streams: set[AsyncEventStream] = set()

    @property
    def url(self) -> str:
        return self._core.url

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url}{' closed' if self._closed else ''}>"

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every stream this client opened and its connections. Idempotent."""
        for stream in list(self._streams):
            await stream.aclose()
        if self._owns_http:
            await self._http.aclose()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error("AsyncClient")

    async def _run(self, op: Op[T]) -> T:
        self._check_open()
        try:
            call = next(op)
            while True:
                try:
                    with translated_transport_errors(self.url):
                        if call.sink is not None:
                            response = await self._download(call)
                        elif call.watch is not None:
                            response = await self._send_watched(call.request, call.watch)
                        else:
                            response = await self._http.send(call.request)
                except TransportError as exc:
                    call = op.throw(exc)  # the operation may carry on (a missed heartbeat)
                else:
                    call = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result
        finally:
            op.close()

    async def _send_watched(self, request: httpx.Request, watch: Watch) -> httpx.Response:
        async def poll() -> None:
            while True:
                await asyncio.sleep(watch.interval)
                # Only what is shown meanwhile: the call reports its own failures.
                with contextlib.suppress(httpx.HTTPError):
                    watch.seen(await self._http.send(watch.request()))

        polling = asyncio.create_task(poll())
        try:
            return await self._http.send(request)
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling

    async def _download(self, call: Call) -> httpx.Response:
        response = await self._http.send(call.request, stream=True)
        try:
            if response.is_success:
                async for chunk in response.aiter_bytes():
                    call.write(chunk)
            else:
                await response.aread()
        finally:
            await response.aclose()
        return response

    health = _awaiting(Operations.health)
    version = _awaiting(Operations.version)
    me = _awaiting(Operations.me)
    users = _awaiting(Operations.users)
    create_user = _awaiting(Operations.create_user)
    tokens = _awaiting(Operations.tokens)
    create_token = _awaiting(Operations.create_token)
    revoke_token = _awaiting(Operations.revoke_token)
    lab_status = _awaiting(Operations.lab_status)
    devices = _awaiting(Operations.devices)
    device = _awaiting(Operations.device)
    device_types = _awaiting(Operations.device_types)
    supported_devices = _awaiting(Operations.supported_devices)
    create_booking = _awaiting(Operations.create_booking)
    bookings = _awaiting(Operations.bookings)
    booking = _awaiting(Operations.booking)
    cancel = _awaiting(Operations.cancel)
    extend = _awaiting(Operations.extend)
    heartbeat = _awaiting(Operations.heartbeat)
    preempt = _awaiting(Operations.preempt)
    upload = _awaiting(Operations.upload)
    compile = _awaiting(Operations.compile)
    models = _awaiting(Operations.models)
    model = _awaiting(Operations.model)
    delete_model = _awaiting(Operations.delete_model)
    chip_config = _awaiting(Operations.chip_config)
    upload_dataset = _awaiting(Operations.upload_dataset)
    datasets = _awaiting(Operations.datasets)
    delete_dataset = _awaiting(Operations.delete_dataset)
    submit_job = _awaiting(Operations.submit_job)
    jobs = _awaiting(Operations.jobs)
    job = _awaiting(Operations.job)
    cancel_job = _awaiting(Operations.cancel_job)
    job_summary = _awaiting(Operations.job_summary)
    job_samples = _awaiting(Operations.job_samples)

    async def evaluate(
        self, model: Any, dataset: Any, *, progress: bool = False, **options: Any
    ) -> JobSummary:
        """Run ``model`` over ``dataset`` as a job and wait for its summary (``options``:
        ``JobOptions`` fields; ``devices=[...]``: booked devices to run on, by id, listing
        entry or booking); the job is cancelled if the wait is interrupted."""
        job = await self.submit_job(model, dataset, **options)
        shown = JobProgress(job, progress)
        try:
            while job.state in (JobState.QUEUED, JobState.RUNNING):
                await asyncio.sleep(JOB_POLL_S)
                job = await self.job(job)
                shown.show(job)
        except BaseException:
            await self.cancel_job(job)
            raise
        finally:
            shown.close()
        return await self.job_summary(job)

    deployment = _awaiting(Operations.deployment)
    undeploy = _awaiting(Operations.undeploy)
    reset_states = _awaiting(Operations.reset_states)
    neuron_states = _awaiting(Operations.neuron_states)
    record = _awaiting(Operations.record)
    record_dvs = _awaiting(Operations.record_dvs)
    recordings = _awaiting(Operations.recordings)
    recording = _awaiting(Operations.recording)
    delete_recording = _awaiting(Operations.delete_recording)
    recording_events = _awaiting(Operations.recording_events)
    download_recording = _awaiting(Operations.download_recording)
    replay = _awaiting(Operations.replay)
    audit = _awaiting(Operations.audit)

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
    ) -> _Opening[AsyncBooking]:
        """Book a device or any device of a type; see :meth:`Client.book`.

        ``await`` it for the booking, or ``async with`` it to hold the lease (heartbeats from a
        task) and release the booking at the end.
        """

        async def create() -> AsyncBooking:
            booking = await self.create_booking(
                target, minutes=minutes, start=start, end=end, wait=wait
            )
            return AsyncBooking(self, booking, release=True, timeout=timeout, progress=progress)

        return _Opening(create())

    def lease(self, booking: Any, *, release: bool = False) -> _Opening[AsyncBooking]:
        """Keep the lease of an existing booking alive (``async with``)."""

        async def fetch() -> AsyncBooking:
            return AsyncBooking(self, await self.booking(booking), release=release)

        return _Opening(fetch())

    deploy = _deploying(Operations.deploy)

    def stream(
        self, device: Any, *, mode: StreamMode | str = "continuous"
    ) -> _Opening[AsyncEventStream]:
        """An event stream to a device's deployed network (``forward`` or ``continuous``)."""
        mode = StreamMode(mode)
        path = f"/v1/devices/{device_id(device)}/stream"
        return _Opening(self._open(path, {"mode": mode.value}, StreamState(mode)))

    def dvs_stream(self, device: Any, *, raw: bool = True) -> _Opening[AsyncEventStream]:
        """The sensor's live events, on a booked device: iterate the stream for arrays.

        ``raw``: DVS events as the sensor sends them; otherwise the DVS layer's output
        (pooled, cropped, mirrored as deployed) as spikes of core 13.
        """
        path = f"/v1/devices/{device_id(device)}/dvs"
        params = {"raw": "true" if raw else "false"}
        return _Opening(self._open(path, params, StreamState(None)))

    async def _open(
        self, path: str, params: dict[str, str], state: StreamState
    ) -> AsyncEventStream:
        self._check_open()
        url = self._core.websocket_url(path, **params)
        try:
            connection = await connect(url, **connect_options(self._core.headers))
        except Exception as exc:
            raise connect_error(exc, url) from exc
        stream = AsyncEventStream(connection, state, on_close=self._streams.discard)
        self._streams.add(stream)
        try:
            await stream._run(state.greet())
        except BaseException:
            await stream.aclose()
            raise
        return stream


class AsyncEventStream(StreamHandle, _AsyncResource):
    """An asyncio event stream (one WebSocket). ``async for`` it for output arrays."""

    def __init__(
        self,
        connection: ClientConnection,
        state: StreamState,
        *,
        on_close: Callable[[AsyncEventStream], None],
    ) -> None:
        super().__init__(state)
        self._connection = connection
        self._on_close = on_close
        self._send_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._connection.close()
            self._on_close(self)

    async def _execute(self, step: Send | Receive) -> Any:
        if self._closed:
            raise closed_error("stream")
        try:
            if isinstance(step, Send):
                async with self._send_lock:
                    for message in step.messages:
                        await self._connection.send(message)
                return None
            return await asyncio.wait_for(self._connection.recv(decode=False), step.timeout)
        except TimeoutError:
            return None
        except ConnectionClosedOK:
            if isinstance(step, Send):
                raise TransportError("the daemon closed the stream") from None
            return CLOSED
        except ConnectionClosed as exc:
            await self._read_last_frames()
            raise stream_closed_error(exc, self._state.failure) from exc

    async def _read_last_frames(self) -> None:
        """The frames the daemon sent before it closed (its fatal frame says why), when a
        send found the stream closed before they were read."""
        with contextlib.suppress(ConnectionClosed, SpecklabError, TimeoutError):
            while self._state.failure is None:
                data = await asyncio.wait_for(self._connection.recv(decode=False), LAST_FRAMES_S)
                self._state.receive(data)

    async def _drive(
        self, op: StreamOp[Any], source: AsyncIterator[Any] | None = None
    ) -> AsyncIterator[Any]:
        reply: Any = None
        try:
            while True:
                try:
                    step: Step = op.send(reply)
                except StopIteration:
                    return
                if isinstance(step, Emit):
                    reply = None
                    yield step.value
                elif isinstance(step, Pull):
                    reply = await anext(source, EXHAUSTED) if source is not None else EXHAUSTED
                else:
                    reply = await self._execute(step)
        except StreamError as error:
            if error.fatal:
                await self.aclose()
            raise
        finally:
            op.close()

    async def _run(self, op: StreamOp[T], source: AsyncIterator[Any] | None = None) -> T:
        """Run an operation that emits nothing to its result."""
        result: list[T] = []

        def keep() -> StreamOp[None]:
            result.append((yield from op))

        async for _ in self._drive(keep(), source):
            raise AssertionError("a stream operation emitted outside an iteration")
        return result[0]

    async def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        """Send one batch (forward mode) and return every output it caused."""
        return await self._run(self._forward(events, dt, layer, kind))

    def forward_many(
        self,
        batches: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int = 2,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> AsyncIterator[BatchOutput]:
        """Forward batches with up to ``window`` in flight; yields their outputs in order."""
        return self._drive(self._forward_many(window, dt, layer, kind), _aiter(batches))

    async def send(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> None:
        """Send one batch (continuous mode); outputs come out of the iteration."""
        await self.send_from([events], dt=dt, layer=layer, kind=kind)

    async def send_from(
        self,
        batches: Iterable[Any] | AsyncIterable[Any],
        *,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> int:
        """Send every batch of an (async) iterable (continuous mode); returns how many.

        To send while iterating the outputs, run it as a task:
        ``asyncio.create_task(stream.send_from(batches))``.
        """
        return await self._run(self._send_all(dt, layer, kind), _aiter(batches))

    def outputs(self, *, idle: float | None = None) -> AsyncIterator[np.ndarray]:
        """Output arrays as they arrive; ends after ``idle`` quiet seconds or when the stream
        closes."""
        return self._drive(self._outputs(idle))

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self.outputs()

    async def control(self, op: str, **args: Any) -> None:
        await self._run(self._control(op, **args))

    async def reset_states(self) -> None:
        await self.control("reset_states")

    async def start_sensor(self) -> None:
        await self.control("start_sensor")

    async def stop_sensor(self) -> None:
        await self.control("stop_sensor")

    async def stats(self, *, timeout: float = 10.0) -> dict[str, int | float]:
        return await self._run(self._stats(timeout))


async def _aiter(batches: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield batch
    else:
        for batch in batches:
            yield batch


class AsyncHardwareModel(ModelHandle[AsyncEventStream], _AsyncResource):
    """A model deployed on a device: ``events_out = await hw_model(events_in)``; see
    :class:`HardwareModel`."""

    def __init__(self, client: AsyncClient, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.client = client

    async def aclose(self) -> None:
        """Close the model's stream (the deployment stays on the device)."""
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def _forward_stream(self) -> AsyncEventStream:
        stream = self._open_stream()
        if stream is None:
            stream = self._stream = await self.client.stream(self.device, mode=StreamMode.FORWARD)
        return stream

    async def __call__(
        self, events: Any, *, dt: float | None = None, layer: int | None = None
    ) -> np.ndarray:
        return (await self.forward(events, dt=dt, layer=layer)).spikes

    async def forward(
        self, events: Any, *, dt: float | None = None, layer: int | None = None, kind: Any = None
    ) -> BatchOutput:
        stream = await self._forward_stream()
        return await stream.forward(events, dt=dt, layer=layer, kind=kind)

    async def forward_many(
        self,
        batches: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int = 2,
        dt: float | None = None,
        layer: int | None = None,
        kind: Any = None,
    ) -> AsyncIterator[BatchOutput]:
        stream = await self._forward_stream()
        outputs = stream.forward_many(batches, window=window, dt=dt, layer=layer, kind=kind)
        async for output in outputs:
            yield output

    async def reset_states(self) -> None:
        stream = self._open_stream()
        if stream is not None:
            await stream.reset_states()
        else:
            await self.client.reset_states(self.device)

    async def membrane(self, layer: int) -> np.ndarray:
        """Model layer ``layer``'s membrane potentials now, int32 ``[feature, y, x]``."""
        states = await self.client.neuron_states(self.device, layer)
        return states.array()

    def stream(self, *, mode: StreamMode | str = "continuous") -> _Opening[AsyncEventStream]:
        return self.client.stream(self.device, mode=mode)

    async def undeploy(self) -> None:
        await self.aclose()
        await self.client.undeploy(self.device)


class AsyncBooking(BookingHandle, _AsyncResource):
    """A booking; ``async with`` holds its lease with a heartbeat task."""

    def __init__(
        self,
        client: AsyncClient,
        booking: BookingPublic,
        *,
        release: bool,
        timeout: float | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(client._core, booking, release=release)
        self.client = client
        self._waiting = (timeout, progress)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Wait until the booking starts, take the lease and keep it alive in a task."""
        if self._task is not None:
            return
        await self.wait()
        interval = await self.client._run(self._take_lease())
        self._task = asyncio.create_task(self._beats(interval))

    async def _beats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.client._closed or not await self.client._run(self._beat()):
                return

    async def wait(self) -> None:
        """Wait until the booking starts; see :meth:`Booking.wait`."""
        timeout, progress = self._waiting
        waiting = StartWait(timeout, countdown=progress)
        try:
            while (pause := waiting.pause(self.booking)) is not None:
                await asyncio.sleep(pause)
                await self.refresh()
        except (WaitTimeout, asyncio.CancelledError) as stopped:
            if self._release or isinstance(stopped, WaitTimeout):
                self.booking = await self.client.cancel(self.booking)
            raise
        finally:
            waiting.close()

    async def aclose(self) -> None:
        """Stop the heartbeats and, for bookings made by ``book``, release the device."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.client._closed:
            await self.client._run(self._end())

    async def refresh(self) -> BookingPublic:
        return await self.client._run(self._refresh())

    async def extend(self, minutes: int) -> BookingPublic:
        return await self.client._run(self._extend(minutes))
