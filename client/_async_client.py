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
from datetime import UTC, datetime
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
_Entered = TypeVar("_Entered", bound="_AsyncResource")


def _awaiting(
    op: Callable[Concatenate[Operations, P], Op[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """An operation as a coroutine method of :class:`AsyncClient`."""

    @functools.wraps(op)
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self._core, *args, **kwargs))

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
    """An asyncio client of a specklab daemon; the same API as :class:`Client`, awaited."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._core = Operations(url, token, timeout)
        self._http = httpx.AsyncClient()
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
                with translated_transport_errors(self.url):
                    if call.sink is not None:
                        response = await self._download(call)
                    elif call.watch is not None:
                        response = await self._send_watched(call.request, call.watch)
                    else:
                        response = await self._http.send(call.request)
                call = op.send(response)
        except StopIteration as done:
            return done.value
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
    device_list = _awaiting(Operations.device_list)
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
    model_config = _awaiting(Operations.model_config)
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
        ``JobOptions`` fields); the job is cancelled if the wait is interrupted."""
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
    record = _awaiting(Operations.record)
    record_dvs = _awaiting(Operations.record_dvs)
    recordings = _awaiting(Operations.recordings)
    recording = _awaiting(Operations.recording)
    delete_recording = _awaiting(Operations.delete_recording)
    recording_events = _awaiting(Operations.recording_events)
    download_recording = _awaiting(Operations.download_recording)
    replay = _awaiting(Operations.replay)

    def book(
        self,
        target: Any,
        *,
        minutes: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        wait: bool = False,
    ) -> _Opening[AsyncBooking]:
        """Book a device or any device of a type; see :meth:`Client.book`.

        ``await`` it for the booking, or ``async with`` it to hold the lease (heartbeats from a
        task) and release the booking at the end.
        """

        async def create() -> AsyncBooking:
            booking = await self.create_booking(
                target, minutes=minutes, start=start, end=end, wait=wait
            )
            return AsyncBooking(self, booking, release=True)

        return _Opening(create())

    def lease(self, booking: Any, *, release: bool = False) -> _Opening[AsyncBooking]:
        """Keep the lease of an existing booking alive (``async with``)."""

        async def fetch() -> AsyncBooking:
            return AsyncBooking(self, await self.booking(booking), release=release)

        return _Opening(fetch())

    def deploy(self, model: Any, device: Any, **options: Any) -> _Opening[AsyncHardwareModel]:
        """Put a compiled model on a booked device; see :meth:`Client.deploy`."""

        async def deploy() -> AsyncHardwareModel:
            deployment = await self._run(self._core.deploy(model, device, **options))
            return AsyncHardwareModel(self, deployment)

        return _Opening(deploy())

    def stream(
        self, device: Any, *, mode: StreamMode | str = "continuous"
    ) -> _Opening[AsyncEventStream]:
        """An event stream to a device's deployed network (``forward`` or ``continuous``)."""
        mode = StreamMode(mode)
        path = f"/v1/devices/{device_id(device)}/stream"
        return _Opening(self._open(path, {"mode": mode.value}, Session(mode)))

    def dvs_stream(self, device: Any, *, raw: bool = True) -> _Opening[AsyncEventStream]:
        """The sensor's live events, on a booked device: iterate the stream for arrays.

        ``raw``: DVS events as the sensor sends them; otherwise the DVS layer's output
        (pooled, cropped, mirrored as deployed) as spikes of core 13.
        """
        path = f"/v1/devices/{device_id(device)}/dvs"
        params = {"raw": "true" if raw else "false"}
        return _Opening(self._open(path, params, Session(None)))

    async def _open(self, path: str, params: dict[str, str], session: Session) -> AsyncEventStream:
        self._check_open()
        url = self._core.websocket_url(path, **params)
        try:
            connection = await connect(url, **connect_options(self._core.headers))
        except Exception as exc:
            raise connect_error(exc, url) from exc
        stream = AsyncEventStream(connection, session, on_close=self._streams.discard)
        self._streams.add(stream)
        try:
            await stream._run(session.greet())
        except BaseException:
            await stream.aclose()
            raise
        return stream


class AsyncEventStream(_AsyncResource):
    """An asyncio event stream (one WebSocket). ``async for`` it for output arrays."""

    def __init__(
        self,
        connection: ClientConnection,
        session: Session,
        *,
        on_close: Callable[[AsyncEventStream], None],
    ) -> None:
        self._connection = connection
        self._session = session
        self._on_close = on_close
        self._send_lock = asyncio.Lock()
        self._closed = False

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._session.info)

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
            raise stream_closed_error(exc, self._session.failure) from exc

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
        return await self._run(self._session.forward(events, InputOptions(dt, layer, kind)))

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
        op = self._session.forward_many(InputOptions(dt, layer, kind), window)
        return self._drive(op, _aiter(batches))

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
        op = self._session.send_all(InputOptions(dt, layer, kind))
        return await self._run(op, _aiter(batches))

    def outputs(self, *, idle: float | None = None) -> AsyncIterator[np.ndarray]:
        """Output arrays as they arrive; ends after ``idle`` quiet seconds or when the stream
        closes."""
        return self._drive(self._session.outputs(idle))

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self.outputs()

    async def control(self, op: str, **args: Any) -> None:
        await self._run(self._session.control(op, **args))

    async def reset_states(self) -> None:
        await self.control("reset_states")

    async def start_sensor(self) -> None:
        await self.control("start_sensor")

    async def stop_sensor(self) -> None:
        await self.control("stop_sensor")

    async def stats(self, *, timeout: float = 10.0) -> dict[str, int | float]:
        return await self._run(self._session.stats(timeout))


async def _aiter(batches: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield batch
    else:
        for batch in batches:
            yield batch


class AsyncHardwareModel(_AsyncResource):
    """A model deployed on a device: ``events_out = await hw_model(events_in)``; see
    :class:`HardwareModel`."""

    def __init__(self, client: AsyncClient, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment
        self._stream: AsyncEventStream | None = None

    @property
    def device(self) -> str:
        return self.deployment.device_id

    def __repr__(self) -> str:
        return f"<AsyncHardwareModel {self.deployment.model_id} on {self.device}>"

    async def aclose(self) -> None:
        """Close the model's stream (the deployment stays on the device)."""
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def _forward_stream(self) -> AsyncEventStream:
        if self._stream is None or self._stream._closed:
            self._stream = await self.client.stream(self.device, mode=StreamMode.FORWARD)
        return self._stream

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
        self, batches: Iterable[Any] | AsyncIterable[Any], **options: Any
    ) -> AsyncIterator[BatchOutput]:
        stream = await self._forward_stream()
        async for output in stream.forward_many(batches, **options):
            yield output

    async def reset_states(self) -> None:
        if self._stream is not None and not self._stream._closed:
            await self._stream.reset_states()
        else:
            await self.client.reset_states(self.device)

    def stream(self, *, mode: StreamMode | str = "continuous") -> _Opening[AsyncEventStream]:
        return self.client.stream(self.device, mode=mode)

    async def undeploy(self) -> None:
        await self.aclose()
        await self.client.undeploy(self.device)


class AsyncBooking(_AsyncResource):
    """A booking; ``async with`` holds its lease with a heartbeat task."""

    def __init__(self, client: AsyncClient, booking: BookingPublic, *, release: bool) -> None:
        self.client = client
        self.booking = booking
        self._release = release
        self._task: asyncio.Task[None] | None = None
        #: Why the heartbeats stopped early (the booking was ended or preempted), if they did.
        self.lost: SpecklabError | None = None

    @property
    def id(self) -> int:
        return self.booking.id

    @property
    def device_id(self) -> str:
        return self.booking.device_id

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Wait until the booking starts, take the lease and keep it alive in a task."""
        if self._task is not None:
            return
        wait = (self.booking.starts_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        lease = await self.client.heartbeat(self.booking)
        self._task = asyncio.create_task(self._beat(lease_interval(lease)))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.client.heartbeat(self.booking)
            except TransportError:
                continue  # the lease has slack for a missed beat or two
            except SpecklabError as exc:
                self.lost = exc
                return

    async def aclose(self) -> None:
        """Stop the heartbeats and, for bookings made by ``book``, release the device."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._release and not self.client._closed:
            try:
                self.booking = await self.client.cancel(self.booking)
            except Conflict as exc:
                if exc.code != "booking_over":  # it ran out, or was preempted, in the block
                    raise
                self.booking = await self.client.booking(self.booking)

    async def refresh(self) -> BookingPublic:
        self.booking = await self.client.booking(self.booking)
        return self.booking

    async def extend(self, minutes: int) -> BookingPublic:
        self.booking = await self.client.extend(self.booking, minutes=minutes)
        return self.booking
