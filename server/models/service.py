"""Upload, compile (cached by content and options), list, load and delete models.

The upload is stored under its sha256 in ``data_dir/models``; a compiled configuration and its
report are stored under ``sha256(upload sha256 + canonical options)`` in ``data_dir/compiled``.
The same bytes uploaded again with the same options are neither stored nor compiled twice,
whoever uploads them; each upload still gets its owner's own row.

An upload reaches the store only once it is accepted: it is received into a temporary file,
compiled from there (waiting its turn in the fair :class:`CompileQueue`), and committed
together with its row. Blobs no row refers to (a crash between the two, older versions) are
collected by :meth:`ModelService.collect_orphans`. What a user's models hold counts against
their storage quota.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import KW_ONLY, InitVar, dataclass, field

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions, CompileReport
from specklab.schemas.errors import DomainError
from specklab.schemas.models import CompileStatus, ModelInfo

from ..auth.ownership import get_owned, visible_rows
from ..auth.principal import Principal
from ..auth.quota import check_quota
from ..compiler import ArchiveLimits, CompilerPool, WorkerLimits
from ..compiler.pipeline import CompileResult
from ..metrics import compiling
from ..storage import Database
from ..storage.blobs import BlobStore, Incoming, sha256_hex
from ..storage.public import public
from ..storage.tables import ModelRecord, User
from .compile_queue import CompileQueue, QueueClosed, Ticket

_CONFIG = ".config.json"
_REPORT = ".report.json"
#: Validated configurations kept, by their document: deploying a model again (each run of a
#: notebook) skips parsing its JSON (~20-50 ms for the guide's network). A few MB at most each.
PARSED_CONFIGS = 8


def options_key(upload_sha256: str, options: CompileOptions) -> str:
    canonical = json.dumps(options.model_dump(mode="json"), sort_keys=True)
    return sha256_hex(f"{upload_sha256}\n{canonical}".encode())


def stopping() -> DomainError:
    return DomainError(
        503, "daemon_stopping", "the daemon is stopping; upload again once it is back"
    )


@dataclass(frozen=True, slots=True)
class Upload:
    """What an upload request received: the file (not yet in the store) and its form."""

    file: Incoming
    name: str
    options: CompileOptions


@dataclass(eq=False, repr=False)
class ModelService:
    uploads: BlobStore
    compiled: BlobStore
    _: KW_ONLY
    workers: int
    max_upload_bytes: InitVar[int]
    quota_bytes: int
    uploads_per_user: int
    limits: WorkerLimits = field(init=False)
    queue: CompileQueue = field(init=False)
    _pool: CompilerPool | None = field(init=False, default=None)
    _pool_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    # One compile per key at a time, so concurrent identical uploads compile once (a lock
    # per model compiled since start-up: a few bytes each).
    _locks: dict[str, asyncio.Lock] = field(init=False, default_factory=dict)
    # Held while blobs gain or lose the rows that refer to them, and while orphans are
    # collected, so that a blob is never collected between its commit and its row's.
    _references: threading.Lock = field(init=False, default_factory=threading.Lock)
    # Uploads in flight by (user id, compile id), for the status a client polls; and how
    # many each user has (each may hold a file of up to max_upload_bytes being received).
    _tickets: dict[tuple[int, str], Ticket] = field(init=False, default_factory=dict)
    _in_flight: Counter[int] = field(init=False, default_factory=Counter)
    _stopping: bool = field(init=False, default=False)

    def __post_init__(self, max_upload_bytes: int) -> None:
        self.limits = WorkerLimits(archive=ArchiveLimits(max_upload_bytes=max_upload_bytes))
        self.queue = CompileQueue(self.workers)

    @property
    def pool(self) -> CompilerPool:
        """Started on first use: a daemon that never compiles never pays for torch."""
        with self._pool_lock:  # first compiles may ask at once, from their threads
            if self._pool is None:
                self._pool = CompilerPool(self.workers, self.limits)
            return self._pool

    def stop_accepting(self) -> None:
        """Shutdown, first step (on the event loop): new and queued compiles get a 503."""
        self._stopping = True
        self.queue.close()

    @property
    def started_pool(self) -> CompilerPool | None:
        """The pool if a compile has started it (health reports on it), else None."""
        return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()

    def check_open(self) -> None:
        if self._stopping:
            raise stopping()

    # Status of uploads in flight.
    def track(self, user: Principal, compile_id: str | None) -> Ticket:
        """A new upload's place (429 past the user's uploads in flight); under ``compile_id``
        it can be asked for (:meth:`status`). Every ``track`` is followed by an ``untrack``."""
        if self._in_flight[user.id] >= self.uploads_per_user:
            raise DomainError(
                429,
                "too_many_uploads",
                f"{user.name} has {self.uploads_per_user} uploads in flight, the most at once; "
                "upload again when one is answered",
                detail={"limit": self.uploads_per_user},
            )
        ticket = Ticket(user.id)
        if compile_id is not None:
            key = (user.id, compile_id)
            if key in self._tickets:
                raise DomainError(
                    409, "compile_id_in_use", f"an upload with id {compile_id} is in flight"
                )
            self._tickets[key] = ticket
        self._in_flight[user.id] += 1
        return ticket

    def untrack(self, user: Principal, compile_id: str | None) -> None:
        self._in_flight[user.id] -= 1
        if not self._in_flight[user.id]:
            del self._in_flight[user.id]
        if compile_id is not None:
            self._tickets.pop((user.id, compile_id), None)

    def status(self, user: Principal, compile_id: str) -> CompileStatus:
        ticket = self._tickets.get((user.id, compile_id))
        if ticket is None:
            raise DomainError(404, "compile_not_found", f"no upload in flight with id {compile_id}")
        status = self.queue.status(ticket)
        return CompileStatus(
            id=compile_id,
            state=status.state,
            position=status.position,
            queued=status.queued,
            workers=self.queue.slots,
        )

    # Compiling.
    async def compiled_config(
        self,
        upload_sha256: str,
        options: CompileOptions,
        *,
        ticket: Ticket,
        source: Callable[[], bytes] | None = None,
    ) -> tuple[bytes, CompileReport]:
        """The compiled configuration (JSON) and report, compiling on a cache miss.

        ``source`` reads the upload (default: from the store); the compile waits its turn in
        the queue under ``ticket``. Raises the compiler's :class:`CompileError`: 4xx for
        bad uploads, 422 ``model_does_not_fit`` (the report in ``detail``) for models the chip
        cannot hold, 503 ``daemon_stopping`` once shutdown began.
        """
        key = options_key(upload_sha256, options)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = await anyio.to_thread.run_sync(self._cached, key)
            if cached is not None:
                return cached
            self.check_open()
            read = source or (lambda: self._stored_upload(upload_sha256))
            try:
                with compiling():
                    result = await self.queue.run(
                        ticket, lambda: self.pool.compile(read(), options)
                    )
            except QueueClosed:
                raise stopping() from None
            except Exception as exc:
                if self._stopping:  # the pool was closed under this compile
                    raise stopping() from exc
                raise
            await anyio.to_thread.run_sync(self._keep_compiled, key, result)
            return result.config_json, result.report

    def _cached(self, key: str) -> tuple[bytes, CompileReport] | None:
        config = self.compiled.get(key, _CONFIG)
        report = self.compiled.get(key, _REPORT)
        if config is None or report is None:
            return None
        return config, CompileReport.model_validate_json(report)

    def _stored_upload(self, digest: str) -> bytes:
        upload = self.uploads.get(digest)
        if upload is None:
            raise DomainError(404, "model_not_found", "the model's upload is gone from the store")
        return upload

    def _keep_compiled(self, key: str, result: CompileResult) -> None:
        self.compiled.put(result.report.model_dump_json().encode(), _REPORT, digest=key)
        self.compiled.put(result.config_json, _CONFIG, digest=key)

    # Uploads.
    async def upload(
        self, db: Database, user: Principal, upload: Upload, ticket: Ticket
    ) -> ModelInfo:
        """Compile a received upload and keep it: nothing of it stays unless this returns."""
        digest = upload.file.digest
        size = upload.file.size
        # Before compiling, so an upload over the quota costs no compile; checked again when
        # stored, where concurrent uploads of one user serialize.
        await db.run(
            lambda session: check_quota(session, ModelRecord, user, digest, size, self.quota_bytes)
        )
        config_json, report = await self.compiled_config(
            digest, upload.options, ticket=ticket, source=upload.file.read
        )
        record = ModelRecord(
            user_id=user.id,
            name=upload.name,
            sha256=digest,
            options_key=options_key(digest, upload.options),
            options=upload.options.model_dump(mode="json"),
            format=report.format,
            size_bytes=size,
        )

        def store(session: Session) -> None:
            with self._references:
                check_quota(session, ModelRecord, user, digest, size, self.quota_bytes)
                upload.file.commit()
                # Again: orphan collection may have taken them since the compile.
                self._keep_compiled(record.options_key, CompileResult(config_json, report))
                # Into the lab's copy with the row: every host sees both or neither.
                self.uploads.share(session, digest)
                for suffix in (_REPORT, _CONFIG):
                    self.compiled.share(session, record.options_key, suffix)
                session.add(record)
                session.commit()

        await db.run(store, write=True)
        return self._public(record, user.name, report)

    # Reading and deleting.
    def list(self, session: Session, user: Principal) -> list[ModelInfo]:
        rows = visible_rows(session, ModelRecord, user)
        return [self._public(record, owner) for record, owner in rows]

    def get(self, session: Session, user: Principal, model_id: int) -> ModelRecord:
        return get_owned(session, ModelRecord, model_id, user, what="model")

    def info(self, session: Session, user: Principal, model_id: int) -> ModelInfo:
        record = self.get(session, user, model_id)
        owner = session.get(User, record.user_id)
        return self._public(record, owner.name if owner else "")

    async def config_json(
        self, record: ModelRecord, options: CompileOptions | None = None
    ) -> bytes:
        """The model's configuration document, recompiled with other ``options`` when given
        (in the owner's line of the compile queue)."""
        options = options or CompileOptions.model_validate(record.options)
        config_json, _ = await self.compiled_config(
            record.sha256, options, ticket=Ticket(record.user_id)
        )
        return config_json

    async def config(
        self, record: ModelRecord, options: CompileOptions | None = None
    ) -> ChipConfig:
        """The validated configuration, shared between callers: derive changed ones with
        ``apply_patch``, which leaves its input as it is."""
        config_json = await self.config_json(record, options)
        return await asyncio.to_thread(_validated, config_json)

    def delete(self, session: Session, user: Principal, model_id: int) -> None:
        record = self.get(session, user, model_id)
        digest = record.sha256
        with self._references:
            session.delete(record)
            session.commit()
            still_used = session.scalar(select(ModelRecord.id).where(ModelRecord.sha256 == digest))
            if still_used is None:
                self.uploads.unshare(session, digest)
                session.commit()
                self.uploads.delete(digest)

    def collect_orphans(self, session: Session, *, partial: bool) -> int:
        """Delete uploads and compiled results no model row refers to; ``partial``: also
        unfinished temporary files (only at start-up, when no upload is arriving). Compiled
        results of other options (a deployment's) are a cache, and go too. Returns bytes freed.
        """
        with self._references:
            digests = set(session.scalars(select(ModelRecord.sha256).distinct()))
            keys = set(session.scalars(select(ModelRecord.options_key).distinct()))
            freed = self.uploads.collect(digests.__contains__, partial=partial)
            freed += self.uploads.collect_shared(session, digests.__contains__)
            freed += self.compiled.collect_shared(session, keys.__contains__)
            return freed + self.compiled.collect(keys.__contains__, partial=partial)

    def _public(
        self, record: ModelRecord, owner: str, report: CompileReport | None = None
    ) -> ModelInfo:
        if report is None:
            stored = self.compiled.get(record.options_key, _REPORT)
            if stored is None:
                raise DomainError(404, "model_not_found", f"model {record.id} lost its report")
            report = CompileReport.model_validate_json(stored)
        return public(ModelInfo, record, owner=owner, report=report)


@functools.lru_cache(maxsize=PARSED_CONFIGS)
def _validated(config_json: bytes) -> ChipConfig:
    return ChipConfig.model_validate_json(config_json)
