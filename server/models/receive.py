"""Reading a model upload's ``multipart/form-data`` body, bounded, straight into the blob store.

FastAPI parses a form before any dependency runs, spooling its files to ``TMPDIR``: a large
body without a token would cost disk before the 401. The upload endpoint therefore declares no
form parameters and reads its body here, after authentication: a ``Content-Length`` over the
limit is refused before a byte is read, a body that passes the limit while arriving (chunked,
or lying about its length) is refused as soon as it does, and the file part is written to a
temporary file in the blob store that is gone unless the upload is accepted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from specklab.schemas.errors import DomainError

from ..storage.blobs import BlobStore, Incoming

#: The text fields (options JSON, name) and the multipart framing together, at most.
FIELDS_LIMIT = 64 * 1024
#: Parts of a form at most (the file and two fields are all it has).
_PARTS_LIMIT = 8
#: File bytes gathered in memory before a (threaded) write to disk.
_FLUSH = 1 << 20
#: The longest name an upload may be given.
NAME_LIMIT = 200


def upload_body(**required_fields: dict[str, Any]) -> dict[str, Any]:
    """The ``openapi_extra`` of an endpoint whose form :func:`receive_form` reads: a file, an
    optional name and ``required_fields`` (their JSON schemas). FastAPI is told the body's shape
    here rather than through form parameters, which it would parse before any dependency ran."""
    properties = {
        "file": {"type": "string", "format": "binary"},
        **required_fields,
        "name": {"type": "string", "maxLength": NAME_LIMIT},
    }
    schema = {"type": "object", "required": ["file", *required_fields], "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def too_large(limit: int) -> DomainError:
    return DomainError(
        413,
        "upload_too_large",
        f"the upload is over the limit of {limit} bytes",
        detail={"limit": limit},
    )


def _invalid(message: str) -> DomainError:
    return DomainError(422, "invalid_request", message)


@dataclass
class UploadForm:
    """A received form: one file (in the store, not yet committed) and text fields."""

    file: Incoming
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def refuse_unknown_fields(self, known: set[str]) -> None:
        unknown = sorted(set(self.fields) - known)
        if unknown:
            raise _invalid(f"unknown form fields: {', '.join(unknown)}")


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    text: bytearray = field(default_factory=bytearray)


class _FormReader:
    """The parser's callbacks: text parts are kept (bounded), the file part is buffered for
    :func:`receive_form` to write out."""

    def __init__(self, form: UploadForm, file_field: str, max_file_bytes: int) -> None:
        self.form = form
        self.file_field = file_field
        self.max_file_bytes = max_file_bytes
        self.pending = bytearray()
        self.file_bytes = 0
        self.part = _Part()
        self.files = 0
        self.parts = 0
        self.text_bytes = 0
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._form_end,
        }

    def _form_end(self) -> None:
        self.ended = True

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > _PARTS_LIMIT:
            raise _invalid(f"the form has more than {_PARTS_LIMIT} parts")
        self.part = _Part()
        self._disposition = b""

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        if b"name" not in params:
            raise _invalid("every form part needs a Content-Disposition name")
        self.part.name = params[b"name"].decode("utf-8", "replace")
        if b"filename" in params:
            if self.part.name != self.file_field or self.files:
                raise _invalid(f"the form takes one file, in the field {self.file_field!r}")
            self.files += 1
            self.part.filename = params[b"filename"].decode("utf-8", "replace")
        elif self.part.name == self.file_field:
            raise _invalid(f"{self.file_field!r} must be a file")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.part.filename is None:
            self.text_bytes += end - start
            if self.text_bytes > FIELDS_LIMIT:
                raise _invalid(f"the form's text fields hold more than {FIELDS_LIMIT} bytes")
            self.part.text.extend(data[start:end])
            return
        self.file_bytes += end - start
        if self.file_bytes > self.max_file_bytes:
            raise too_large(self.max_file_bytes)
        self.pending.extend(data[start:end])

    def _end(self) -> None:
        if self.part.filename is not None:
            self.form.filename = self.part.filename
        elif self.part.name in self.form.fields:
            raise _invalid(f"the field {self.part.name!r} is given twice")
        else:
            self.form.fields[self.part.name] = self.part.text.decode("utf-8", "replace")


@asynccontextmanager
async def receive_form(
    request: Request, store: BlobStore, *, max_file_bytes: int, file_field: str = "file"
) -> AsyncIterator[UploadForm]:
    """The request's form; its file is discarded when the block ends unless committed."""
    max_body = max_file_bytes + FIELDS_LIMIT
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise too_large(max_file_bytes)
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise DomainError(415, "unsupported_media_type", "an upload is a multipart/form-data body")
    incoming = await anyio.to_thread.run_sync(Incoming, store)
    try:
        form = UploadForm(incoming)
        reader = _FormReader(form, file_field, max_file_bytes)
        parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body:
                    raise too_large(max_file_bytes)
                _feed(parser, chunk)
                if len(reader.pending) >= _FLUSH:
                    await _flush(reader)
        except ClientDisconnect:
            raise DomainError(400, "upload_incomplete", "the client went away mid-upload") from None
        _feed(parser, b"", final=True)
        await _flush(reader)
        if not reader.ended:
            raise _invalid("the upload ended before the form's closing boundary")
        if not reader.files:
            raise _invalid(f"the form needs a file in the field {file_field!r}")
        yield form
    finally:
        await anyio.to_thread.run_sync(incoming.discard)


def _feed(parser: MultipartParser, chunk: bytes, *, final: bool = False) -> None:
    """The parser's own errors as a 422 (ours, raised from the callbacks, pass through)."""
    try:
        if final:
            parser.finalize()
        else:
            parser.write(chunk)
    except DomainError:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise _invalid(f"the upload is not a readable multipart form: {exc}") from exc


async def _flush(reader: _FormReader) -> None:
    if reader.pending:
        data = bytes(reader.pending)
        reader.pending.clear()
        await anyio.to_thread.run_sync(reader.form.file.write, data)
