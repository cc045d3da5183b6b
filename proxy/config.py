"""Server settings: everything has an embedded default so `conda-platform serve` just works."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from conda_platform_plugin.errors import BadRequest


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from env ``CONDA_PLATFORM_<name>``, else ``default``."""
    raw = os.environ.get(f"CONDA_PLATFORM_{name}")
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BadRequest(f"CONDA_PLATFORM_{name} must be a number of seconds above 0, not {raw!r}",
                         code="invalid_setting")
    return value


@dataclass
class Config:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("CONDA_PLATFORM_DATA_DIR", "data")))
    database_url: str | None = None  # default: SQLite file in the data dir
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 2 << 30
    max_files_per_upload: int = 200
    #: how long this process answers from what it read of a channel's published generation before
    #: reading it again (env CONDA_PLATFORM_SERVING_TTL, seconds): other processes' publishes show
    #: after at most this long
    serving_ttl: float = field(default_factory=lambda: _seconds("SERVING_TTL", 2.0))
    #: upstream fetches (mirror runs, on-demand downloads): connect and between-bytes timeouts
    #: (env CONDA_PLATFORM_UPSTREAM_CONNECT_TIMEOUT / CONDA_PLATFORM_UPSTREAM_READ_TIMEOUT, seconds)
    upstream_connect_timeout: float = field(default_factory=lambda: _seconds("UPSTREAM_CONNECT_TIMEOUT", 10.0))
    upstream_read_timeout: float = field(default_factory=lambda: _seconds("UPSTREAM_READ_TIMEOUT", 30.0))
    #: mirror runs: how many at once in this process, how often a run's heartbeat is written, after how
    #: long without one another process may call it dead, how often the scheduler looks for due
    #: mirrors (0: never by itself; tests call tick()), and the largest upstream index accepted
    mirror_max_runs: int = 2
    mirror_heartbeat_interval: float = 2.0
    mirror_stale_after: float = 120.0
    mirror_tick_interval: float = 30.0
    mirror_index_max_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if not self.database_url:
            self.database_url = os.environ.get("CONDA_PLATFORM_DATABASE_URL") or (
                f"sqlite+aiosqlite:///{self.data_dir / 'platform.db'}"
            )

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def cache_dir(self) -> Path:
        """Upstream metadata cache (diskcache) and in-flight downloads."""
        return self.data_dir / "cache"
