"""The part of the client that needs no I/O: requests, auth, timeouts, errors, parsing.

Every API call is written once here as an *operation*: a generator that yields the requests it
needs (:class:`Call`) and receives each response, then returns the parsed result.
:class:`~specklab.client.Client` and :class:`~specklab.client.AsyncClient` only own the loops
that send those requests, blocking or awaiting.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, TypeVar, cast, overload

import httpx
import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError
from tqdm import tqdm

from specklab.schemas.api import ErrorBody
from specklab.schemas.models import CompileStatus

from ._errors import ClientClosed, ProtocolError, Timeout, TransportError, api_error

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8765"
#: Default seconds to wait for the daemon (connect, and each read).
DEFAULT_TIMEOUT = 30.0
#: Uploads wait this long for the daemon's compiler.
COMPILE_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Watch:
    """A request repeated while a call runs (where an upload is in the compile queue, say);
    its answers go to ``seen``. Failures of a watch are ignored: the call reports its own."""

    request: Callable[[], httpx.Request]
    seen: Callable[[httpx.Response], None]
    interval: float = 0.5


@dataclass
class Call:
    """One request of an operation."""

    request: httpx.Request
    #: Write a successful response's body here as it arrives instead of keeping it in memory.
    sink: IO[bytes] | None = None
    progress: tqdm | None = None
    watch: Watch | None = None

    def write(self, chunk: bytes) -> None:
        assert self.sink is not None
        self.sink.write(chunk)
        if self.progress is not None:
            self.progress.update(len(chunk))


#: An operation: yields calls, receives their responses, returns its result.
Op = Generator[Call, httpx.Response, T]


def resolve_url(url: str | None) -> str:
    url = url or os.environ.get("SPECKLAB_URL") or DEFAULT_URL
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"the daemon's URL must be http(s)://host[:port][/prefix], got {url!r}")
    return url.rstrip("/")


def resolve_token(token: str | None) -> str | None:
    return token or os.environ.get("SPECKLAB_TOKEN") or None


@functools.cache
def _adapter(result: Any) -> TypeAdapter[Any]:
    return TypeAdapter(result)


def validate_json(result: type[T], content: bytes) -> T:
    """``content`` as a ``result``. A model validates through its own ``model_validate_json``,
    which a ``TypeAdapter`` bypasses: ChipConfig's parses its weight arrays straight from the
    text there (milliseconds), where the generic path builds a Python int per weight (~1 s)."""
    if isinstance(result, type) and issubclass(result, BaseModel):
        return cast(T, result.model_validate_json(content))
    return cast(T, _adapter(cast(Any, result)).validate_json(content))


def progress_bar(total: int | None, description: str, enabled: bool) -> tqdm:
    """A byte-counting tqdm bar on stderr; a disabled one (it costs nothing) unless enabled."""
    return tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
    )


class UploadProgress:
    """What an upload shows: a byte bar while the file goes out, then a spinner with the
    compile's place in the daemon's queue until the answer comes. Nothing when disabled."""

    _SPIN = "|/-\\"

    def __init__(self, name: str, size: int, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self._bar = progress_bar(size, f"upload {name}", enabled)
        self._size = size
        self._sent = 0
        self._spinner: tqdm | None = None
        self._turns = 0
        self._lock = threading.Lock()

    def sent(self, size: int) -> None:
        with self._lock:
            self._bar.update(size)
            self._sent += size
            if self._sent >= self._size:
                self._show("waiting for the compiler")

    def status(self, status: CompileStatus) -> None:
        if status.state == "queued":
            ahead = "next" if status.position == 0 else f"{status.position} ahead"
            text = f"queued ({ahead}, {status.workers} at a time)"
        elif status.state == "compiling":
            text = "compiling"
        else:
            text = "waiting for the compiler"
        with self._lock:
            if self._sent >= self._size:  # while the file goes out, its bar stays
                self._show(text)

    def _show(self, text: str) -> None:
        if self._spinner is None:
            self._bar.close()  # the upload is done: its bar gives way to the compile's spinner
            self._spinner = tqdm(
                total=None, bar_format="{desc} [{elapsed}]", disable=not self.enabled, leave=False
            )
        self._turns += 1
        spin = self._SPIN[self._turns % len(self._SPIN)]
        self._spinner.set_description_str(f"compile {self.name}: {text} {spin}")

    def close(self) -> None:
        with self._lock:
            self._bar.close()
            if self._spinner is not None:
                self._spinner.close()


class _ProgressReader(io.BytesIO):
    """Upload content that reports its progress as httpx reads it."""

    def __init__(self, content: bytes, progress: UploadProgress) -> None:
        super().__init__(content)
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._progress.sent(len(chunk))
        return chunk


#: Seconds a request runs before its progress bar is drawn.
TICKING_GRACE_S = 0.5


@contextmanager
def ticking(seconds: float, description: str, enabled: bool) -> Iterator[None]:
    """A progress bar that fills with wall time while a long request runs (e.g. a recording).

    Drawn only once the request has run for ``TICKING_GRACE_S``: a request the daemon refuses
    at once (not your device, no such device) draws nothing."""
    if not enabled:
        yield
        return
    done = threading.Event()
    drawn: list[tqdm] = []

    def tick() -> None:
        start = time.monotonic()
        if done.wait(TICKING_GRACE_S):
            return
        bar = tqdm(
            total=round(seconds, 1),
            desc=description,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s",
            leave=False,
        )
        drawn.append(bar)
        while not done.wait(0.1):
            bar.n = round(min(time.monotonic() - start, seconds), 1)
            bar.refresh()

    thread = threading.Thread(target=tick, name="specklab-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        for bar in drawn:
            bar.close()


@contextmanager
def translated_transport_errors(url: str) -> Iterator[None]:
    """httpx's errors as this package's, at the one boundary where they occur."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Timeout(f"the daemon at {url} did not answer in time ({exc!r})") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"cannot reach the daemon at {url}: {exc}") from exc


class BaseClient:
    """Builds requests (URL, auth, timeouts) and turns responses into results or errors."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        self.timeout = httpx.Timeout(timeout)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "specklab-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def websocket_url(self, path: str, **params: str) -> str:
        url = httpx.URL(self.url + path, params=params or None)
        return str(url.copy_with(scheme="wss" if url.scheme == "https" else "ws"))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Request:
        if isinstance(json, BaseModel):
            # Unset fields take the daemon's defaults; an explicit None (e.g. "never expires")
            # is sent as null.
            json = json.model_dump(mode="json", exclude_unset=True)
        read_timeout = self.timeout if timeout is None else httpx.Timeout(timeout)
        return httpx.Request(
            method,
            self.url + path,
            headers=self.headers,
            json=json,
            params={k: v for k, v in (params or {}).items() if v is not None},
            files=files,
            data=data,
            extensions={"timeout": read_timeout.as_dict()},
        )

    def check(self, response: httpx.Response) -> None:
        """Raise the typed error of an error response."""
        if response.is_success:
            return
        try:
            body = ErrorBody.model_validate_json(response.content)
        except ValidationError:
            text = response.text.strip()[:300] or response.reason_phrase
            body = ErrorBody(code=f"http_{response.status_code}", message=text)
        raise api_error(response.status_code, body)

    def parse(self, response: httpx.Response, result: type[T]) -> T:
        self.check(response)
        try:
            return validate_json(result, response.content)
        except ValidationError as exc:
            where = f"{response.request.method} {response.request.url.path}"
            raise ProtocolError(f"unexpected answer to {where}: {exc}") from exc

    def call(self, method: str, path: str, **kwargs: Any) -> Call:
        return Call(self.request(method, path, **kwargs))

    @overload
    def fetch(self, method: str, path: str, result: None, **kwargs: Any) -> Op[None]: ...
    @overload
    def fetch(self, method: str, path: str, result: type[T], **kwargs: Any) -> Op[T]: ...
    def fetch(self, method: str, path: str, result: type[T] | None, **kwargs: Any) -> Op[T | None]:
        """The operation of one request whose answer is ``result`` (a type; None for no body)."""
        response = yield self.call(method, path, **kwargs)
        if result is None:
            self.check(response)
            return None
        return self.parse(response, result)

    def upload_call(
        self, filename: str, content: bytes, fields: dict[str, str], progress: UploadProgress
    ) -> Call:
        """A model upload; when ``progress`` is shown, its queue place is asked meanwhile."""
        files = {"file": (filename, _ProgressReader(content, progress), "application/octet-stream")}
        request = self.request(
            "POST", "/v1/models", files=files, data=fields, timeout=COMPILE_TIMEOUT
        )
        if not progress.enabled:
            return Call(request)
        compile_id = uuid.uuid4().hex
        request.headers["X-Compile-Id"] = compile_id

        def seen(response: httpx.Response) -> None:
            # 404 before the daemon has the upload and after it answered; a daemon without
            # queue status (older) answers something else: nothing to show then.
            if response.status_code == 200:
                with contextlib.suppress(ValidationError):
                    progress.status(CompileStatus.model_validate_json(response.content))

        status = functools.partial(self.request, "GET", f"/v1/models/compiles/{compile_id}")
        return Call(request, watch=Watch(status, seen))

    def download(self, path: str, sink: IO[bytes], description: str, progress: bool) -> Op[None]:
        """Stream a file to ``sink``."""
        bar = progress_bar(None, description, progress)
        try:
            response = yield Call(self.request("GET", path), sink=sink, progress=bar)
        finally:
            bar.close()
        self.check(response)

    def download_array(self, path: str, description: str, progress: bool) -> Op[np.ndarray]:
        """Fetch a ``.npy`` file as an array (never unpickling)."""
        buffer = io.BytesIO()
        yield from self.download(path, buffer, description, progress)
        buffer.seek(0)
        try:
            array: np.ndarray = np.load(buffer, allow_pickle=False)
            return array
        except ValueError as exc:
            raise ProtocolError(f"{path} is not a readable .npy event file: {exc}") from exc


def closed_error(what: str) -> ClientClosed:
    return ClientClosed(f"this {what} is closed; create a new one to go on")
