"""Daemon settings: command-line options > ``SPECKLAB_*`` environment > config file > defaults.

The config file is TOML, named by ``--config`` or ``SPECKLAB_CONFIG``. Settings are built by
:func:`load_settings`, never at import time.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LogLevel = Literal["debug", "info", "warning", "error"]


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("specklab", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPECKLAB_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    #: SQLAlchemy URL; empty means a SQLite file in the data directory.
    database_url: str = ""
    log_level: LogLevel = "info"
    log_format: Literal["json", "text"] = "json"
    #: Token of the admin created on first start; empty means generate one and print it once.
    admin_token: SecretStr = SecretStr("")
    #: When set, ``/metrics`` answers only ``Authorization: Bearer <metrics_token>``; empty:
    #: anyone who reaches the daemon may read the metrics (counts only, no ids or names).
    metrics_token: SecretStr = SecretStr("")
    #: This daemon's name in a lab of several hosts sharing one database.
    host_name: str = Field(default_factory=socket.gethostname, min_length=1)
    #: The URL clients reach this daemon at (told to clients of other hosts); empty: host:port.
    public_url: str = ""
    booking_max_minutes: int = Field(default=240, ge=1)
    booking_daily_quota_minutes: int = Field(default=480, ge=1)
    #: How many days ahead a booking may start.
    booking_horizon_days: int = Field(default=90, ge=1, le=3650)
    #: A running booking its holder has not used at all for this long is released (idle); any
    #: call of the holder on the device or booking, heartbeats included, counts as use.
    booking_idle_s: float = Field(default=1800.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    #: Virtual devkits to serve, e.g. ["speck2fdevkit=2"] (env: comma-separated). Unset: one
    #: Speck 2F devkit when no real device is found at start; [] (or "none"): none.
    virtual: Annotated[list[str] | None, NoDecode] = None
    #: How often to look for devices plugged in or out.
    device_rescan_s: float = Field(default=2.0, gt=0)
    #: The first (lazy, threaded) import of samna may take this long before scans go on without.
    samna_import_timeout_s: float = Field(default=60.0, gt=0)

    #: Compile worker processes, compiling side by side (each holds torch: about 0.75 GiB).
    compile_workers: int = Field(default=2, ge=1, le=16)
    #: A recording stops once it holds this many events (20 M DVS events: 260 MB).
    max_recording_events: int = Field(default=20_000_000, ge=1)
    #: Recordings one user may run at once on this daemon (more: 409 too_many_recordings).
    max_concurrent_recordings_per_user: int = Field(default=2, ge=1)
    #: Bytes of recorded events one user may keep (full: 413 storage_full; a recording that
    #: reaches it stops early, keeping what fits).
    recording_storage_per_user_bytes: int = Field(default=2 * 1024**3, ge=1)
    #: Largest model upload accepted.
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    #: Bytes of uploads one user's models may hold (the same upload counted once).
    model_quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    #: Uploads one user may have in flight at once (arriving, queued or compiling).
    max_uploads_per_user: int = Field(default=32, ge=1)
    #: Largest dataset upload accepted, and the most events a dataset may hold.
    max_dataset_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_dataset_events: int = Field(default=50_000_000, ge=1)
    #: Bytes of uploads one user's datasets may hold (the same upload counted once).
    dataset_quota_bytes: int = Field(default=2 * 1024**3, ge=1)
    #: Evaluation worker processes on this host; 0: one per core this process may use.
    job_workers: int = Field(default=0, ge=0, le=256)
    #: A claimed chunk whose host has not renewed its claim for this long is queued again.
    job_lease_s: float = Field(default=30.0, gt=0)
    #: How often model files no model refers to any more are deleted (also at start-up).
    orphan_collect_interval_s: float = Field(default=3600.0, gt=0)
    #: A forward batch may span this much device time (first to last event) ...
    max_batch_span_s: float = Field(default=600.0, gt=0)
    #: ... and this many slow-clock ticks (span x slow clock: each tick visits every leaky
    #: neuron, up to ~70 us on the virtual devkit).
    max_batch_ticks: int = Field(default=1_000_000, ge=1)
    #: Largest answer to one forward batch, in events (4 M spikes: 59 MB held per stream).
    max_batch_output_events: int = Field(default=1 << 22, ge=1)
    #: An open stream re-checks its token this often (and at every heartbeat).
    token_recheck_s: float = Field(default=30.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("virtual", mode="before")
    @classmethod
    def _virtual_specs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, list) and [str(v).lower() for v in value] == ["none"]:
            return []
        return value

    @field_validator("virtual")
    @classmethod
    def _virtual_known(cls, value: list[str] | None) -> list[str] | None:
        from .devices.naming import parse_virtual_spec

        for spec in value or []:
            parse_virtual_spec(spec)
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 20:
            raise ValueError("admin_token must have 20 characters or more (empty: generate one)")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'specklab.db'}"

    @property
    def effective_public_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` are command-line values (None means not given), the file is
    ``config_file`` or else the one ``SPECKLAB_CONFIG`` names."""
    given = {k: v for k, v in overrides.items() if v is not None}
    path = config_file or os.environ.get("SPECKLAB_CONFIG")
    if not path:
        return Settings(**given)
    if not Path(path).is_file():
        # The TOML source skips a missing file; a named one that is missing is a mistake.
        raise FileNotFoundError(f"no settings file {path}")
    from_file = type(Settings.__name__, (Settings,), {"model_config": {"toml_file": path}})
    return from_file(**given)
