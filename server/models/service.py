"""Upload, compile (cached by content and options), list, load and delete models.

The upload is stored under its sha256 in ``data_dir/models``; a compiled configuration and its
report are stored under ``sha256(upload sha256 + canonical options)`` in ``data_dir/compiled``.
The same bytes uploaded again with the same options are neither stored nor compiled twice,
whoever uploads them; each upload still gets its owner's own row.
"""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions, CompileReport
from specklab.schemas.models import DoesNotFit, ModelInfo

from ..auth.ownership import get_owned, visible_to
from ..auth.principal import Principal
from ..compiler import ArchiveLimits, CompileError, CompilerPool, ModelError, WorkerLimits
from ..errors import ApiError
from ..metrics import compiling
from ..storage.blobs import BlobStore, sha256_hex
from ..storage.tables import ModelRecord, User

_CONFIG = ".config.json"
_REPORT = ".report.json"


def options_key(upload_sha256: str, options: CompileOptions) -> str:
    canonical = json.dumps(options.model_dump(mode="json"), sort_keys=True)
    return sha256_hex(f"{upload_sha256}\n{canonical}".encode())


class ModelService:
    def __init__(
        self, uploads: BlobStore, compiled: BlobStore, *, workers: int, max_upload_bytes: int
    ) -> None:
        self.uploads = uploads
        self.compiled = compiled
        self.workers = workers
        self.limits = WorkerLimits(archive=ArchiveLimits(max_upload_bytes=max_upload_bytes))
        self._pool: CompilerPool | None = None
        # One compile per key at a time, so concurrent identical uploads compile once (a lock
        # per model compiled since start-up: a few bytes each).
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def pool(self) -> CompilerPool:
        """Started on first use: a daemon that never compiles never pays for torch."""
        if self._pool is None:
            self._pool = CompilerPool(self.workers, self.limits)
        return self._pool

    @property
    def started_pool(self) -> CompilerPool | None:
        """The pool if a compile has started it (health reports on it), else None."""
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def compiled_config(
        self, upload_sha256: str, options: CompileOptions
    ) -> tuple[bytes, CompileReport]:
        """The compiled configuration (JSON) and report, compiling on a cache miss.

        Raises :class:`ApiError` with the compiler's code: 4xx for bad uploads, 422
        ``model_does_not_fit`` (the report in ``detail``) for models the chip cannot hold.
        """
        key = options_key(upload_sha256, options)
        async with self._locks.setdefault(key, asyncio.Lock()):
            config = self.compiled.get(key, _CONFIG)
            report = self.compiled.get(key, _REPORT)
            if config is not None and report is not None:
                return config, CompileReport.model_validate_json(report)
            upload = self.uploads.get(upload_sha256)
            if upload is None:
                raise ApiError(404, "model_not_found", "the model's upload is gone from the store")
            try:
                with compiling():
                    result = await asyncio.to_thread(self.pool.compile, upload, options)
            except CompileError as exc:
                raise _api_error(exc) from exc
            self.compiled.put(result.report.model_dump_json().encode(), _REPORT, digest=key)
            self.compiled.put(result.config_json, _CONFIG, digest=key)
            return result.config_json, result.report

    async def upload(
        self,
        session: Session,
        user: Principal,
        *,
        name: str,
        data: bytes,
        options: CompileOptions,
    ) -> ModelInfo:
        digest = sha256_hex(data)
        self.uploads.put(data, digest=digest)
        _, report = await self.compiled_config(digest, options)
        record = ModelRecord(
            user_id=user.id,
            name=name,
            sha256=digest,
            options_key=options_key(digest, options),
            options=options.model_dump(mode="json"),
            format=report.format,
            size_bytes=len(data),
        )
        session.add(record)
        session.commit()
        return self._public(record, user.name, report)

    def list(self, session: Session, user: Principal) -> list[ModelInfo]:
        query = visible_to(
            select(ModelRecord, User.name).join(User, ModelRecord.user_id == User.id),
            ModelRecord.user_id,
            user,
        ).order_by(ModelRecord.id)
        return [self._public(record, owner) for record, owner in session.execute(query)]

    def get(self, session: Session, user: Principal, model_id: int) -> ModelRecord:
        return get_owned(session, ModelRecord, model_id, user, what="model")

    def info(self, session: Session, user: Principal, model_id: int) -> ModelInfo:
        record = self.get(session, user, model_id)
        owner = session.get(User, record.user_id)
        return self._public(record, owner.name if owner else "")

    async def config_json(
        self, record: ModelRecord, options: CompileOptions | None = None
    ) -> bytes:
        """The model's configuration document, recompiled with other ``options`` when given."""
        options = options or CompileOptions.model_validate(record.options)
        config_json, _ = await self.compiled_config(record.sha256, options)
        return config_json

    async def config(
        self, record: ModelRecord, options: CompileOptions | None = None
    ) -> ChipConfig:
        config_json = await self.config_json(record, options)
        return await asyncio.to_thread(ChipConfig.model_validate_json, config_json)

    def delete(self, session: Session, user: Principal, model_id: int) -> None:
        record = self.get(session, user, model_id)
        digest = record.sha256
        session.delete(record)
        session.commit()
        still_used = session.scalar(select(ModelRecord.id).where(ModelRecord.sha256 == digest))
        if still_used is None:
            self.uploads.delete(digest)

    def _public(
        self, record: ModelRecord, owner: str, report: CompileReport | None = None
    ) -> ModelInfo:
        if report is None:
            stored = self.compiled.get(record.options_key, _REPORT)
            if stored is None:
                raise ApiError(404, "model_not_found", f"model {record.id} lost its report")
            report = CompileReport.model_validate_json(stored)
        return ModelInfo(
            id=record.id,
            name=record.name,
            owner=owner,
            sha256=record.sha256,
            format=record.format,
            size_bytes=record.size_bytes,
            created_at=record.created_at,
            options=CompileOptions.model_validate(record.options),
            report=report,
        )


def _api_error(exc: CompileError) -> ApiError:
    if isinstance(exc, ModelError):
        detail = DoesNotFit(reason=exc.code, problems=exc.problems, report=exc.report)
        return ApiError(
            422, "model_does_not_fit", exc.message, detail=detail.model_dump(mode="json")
        )
    return ApiError(exc.http_status, exc.code, exc.message, detail=exc.detail)
