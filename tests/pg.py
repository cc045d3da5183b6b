"""A real, throwaway PostgreSQL server for the test session.

The server's database code must be tested against PostgreSQL itself (not only SQLite), so the
session starts a private cluster when the binaries are installed: trust auth, loopback only, an
ephemeral port, fsync off, everything inside one temp dir that is removed at exit.

Typical use in ``conftest.py``::

    @pytest.fixture(scope="session")
    def pg_server(tmp_path_factory):
        reason = postgres_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with start_postgres(tmp_path_factory.mktemp("pg")) as url:
            yield url

    @pytest.fixture
    async def pg_url(pg_server):
        return await create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

#: the unprivileged account that owns the cluster when the tests run as root (initdb refuses root)
PG_USER = "postgres"
#: database created in every started server, named in the yielded URL
DEFAULT_DATABASE = "platform"
#: unix socket paths are limited to ~107 bytes; longer socket dirs fall back to a short temp dir
_MAX_SOCKET_DIR = 80
_START_ATTEMPTS = 3
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class _Binaries:
    """Where the PostgreSQL programs are; ``pg_ctl`` is optional (``postgres`` is then run directly)."""

    initdb: Path
    pg_ctl: Path | None
    postgres: Path | None


def _find_binaries() -> _Binaries | None:
    """Look on PATH first, then in Debian's versioned dirs (newest first), for a usable set."""
    dirs: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).parent)
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    versioned.sort(key=lambda d: int(re.sub(r"\D", "", Path(d).parent.name) or 0), reverse=True)
    dirs.extend(Path(d) for d in versioned)
    for d in dirs:
        initdb = d / "initdb"
        if not os.access(initdb, os.X_OK):
            continue
        # Take pg_ctl/postgres from the same directory as initdb: versions must match.
        pg_ctl = d / "pg_ctl" if os.access(d / "pg_ctl", os.X_OK) else None
        postgres = d / "postgres" if os.access(d / "postgres", os.X_OK) else None
        if pg_ctl or postgres:
            return _Binaries(initdb, pg_ctl, postgres)
    return None


def _running_as_root() -> bool:
    return os.geteuid() == 0


def postgres_unavailable_reason() -> str | None:
    """Why a test PostgreSQL cannot be started here (``None`` when it can), for ``pytest.skip``."""
    if _find_binaries() is None:
        return "PostgreSQL not installed (no initdb with pg_ctl/postgres on PATH or in /usr/lib/postgresql/*/bin)"
    if _running_as_root():
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to own the test cluster"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (needed to run initdb as an unprivileged user)"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed"
    return None


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user_prefix() -> list[str]:
    """Command prefix that drops root to the cluster owner; empty when we are not root."""
    return ["runuser", "-u", PG_USER, "--"] if _running_as_root() else []


def _traversable_by_others(path: Path) -> bool:
    """True when every ancestor lets other users in (pytest's tmp dirs are 0700 for root)."""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _run(cmd: list[str], *, cwd: Path, what: str) -> None:
    """Run a command; on failure raise with its output (the log is what explains a failure)."""
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}")


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="pg-helper")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _to_asyncpg_dsn(url: str) -> str:
    """asyncpg wants ``postgresql://``; SQLAlchemy URLs carry the ``+asyncpg`` driver suffix."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    """One cluster: initdb once, then start on a fresh port (retried if the port was taken)."""

    def __init__(self, bins: _Binaries, root: Path, sock_dir: Path) -> None:
        self.bins = bins
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.sock_dir = sock_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def initdb(self) -> None:
        cmd = [
            *_as_user_prefix(),
            str(self.bins.initdb),
            "-D", str(self.data),
            "-U", PG_USER,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        _run(cmd, cwd=self.root, what="initdb")
        with (self.data / "postgresql.conf").open("a") as f:
            # Speed over durability: the cluster dies with the session anyway.
            f.write(
                "\n# test session settings\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sock_dir}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
                "shared_buffers = 64MB\n"
                "logging_collector = off\n"
            )

    def start(self) -> None:
        """Start on a free port; a port grabbed between probe and bind just means another try."""
        last_error: Exception | None = None
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            try:
                self._start_once()
                return
            except RuntimeError as exc:
                last_error = exc
                self.stop()
        raise RuntimeError(f"PostgreSQL did not start after {_START_ATTEMPTS} attempts") from last_error

    def _start_once(self) -> None:
        if self.bins.pg_ctl is not None:
            cmd = [
                *_as_user_prefix(),
                str(self.bins.pg_ctl),
                "-D", str(self.data),
                "-l", str(self.log),
                "-o", f"-p {self.port}",
                "-w", "-t", "60",
                "start",
            ]  # fmt: skip
            try:
                _run(cmd, cwd=self.root, what="pg_ctl start")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n--- server log ---\n{_log_tail(self.log)}") from None
        else:
            assert self.bins.postgres is not None
            cmd = [*_as_user_prefix(), str(self.bins.postgres), "-D", str(self.data), "-p", str(self.port)]
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """pg_ctl -w already waited; this also covers the direct ``postgres`` case."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                _run_coroutine(_select_one(self.url("postgres")))
                return
            except (OSError, asyncio.TimeoutError, RuntimeError):
                time.sleep(0.1)
            except Exception as exc:  # asyncpg's "starting up" errors
                if "starting up" not in str(exc):
                    raise
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on port {self.port} did not answer\n--- server log ---\n{_log_tail(self.log)}")

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Immediate stop: nothing in a test cluster is worth a clean shutdown."""
        if self.bins.pg_ctl is not None and (self.data / "postmaster.pid").exists():
            cmd = [*_as_user_prefix(), str(self.bins.pg_ctl), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
            subprocess.run(cmd, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if self.proc is not None:
            # Signal the postmaster itself: runuser, our direct child, would turn SIGQUIT into
            # a SIGTERM ("smart" shutdown) and may exit before the server has gone.
            pid = self._postmaster_pid()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid if pid else self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if pid:
                self._wait_gone(pid)
            self.proc = None

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @staticmethod
    def _wait_gone(pid: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _select_one(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_to_asyncpg_dsn(url), timeout=5)
    try:
        await conn.fetchval("select 1")
    finally:
        await conn.close()


@contextlib.contextmanager
def start_postgres(base_dir: Path) -> Iterator[str]:
    """Start a private PostgreSQL and yield ``postgresql+asyncpg://postgres@127.0.0.1:PORT/platform``.

    The cluster lives in a new temp dir under ``base_dir`` (or under the system temp dir when
    running as root and ``base_dir`` is not reachable by the ``postgres`` user), and is stopped
    (``-m immediate``) and removed on exit.
    """
    reason = postgres_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bins = _find_binaries()
    assert bins is not None
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    as_root = _running_as_root()
    parent = base_dir if not as_root or _traversable_by_others(base_dir) else Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=parent))
    sock_dir = root / "sock"
    short_sock: Path | None = None
    if len(str(sock_dir)) > _MAX_SOCKET_DIR:
        short_sock = Path(tempfile.mkdtemp(prefix="pgs-"))
        sock_dir = short_sock
    else:
        sock_dir.mkdir()
    server = _Server(bins, root, sock_dir)
    try:
        if as_root:
            owner = pwd.getpwnam(PG_USER)
            for p in (root, sock_dir):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        server.initdb()
        server.start()
        _run_coroutine(_create_database(server.url("postgres"), DEFAULT_DATABASE))
        yield server.url()
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            if short_sock is not None:
                shutil.rmtree(short_sock, ignore_errors=True)


async def _create_database(server_url: str, name: str) -> None:
    import asyncpg

    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    conn = await asyncpg.connect(_to_asyncpg_dsn(_with_database(server_url, "postgres")), timeout=10)
    try:
        # Fresh means fresh: a leftover of the same name (an earlier failed run) is replaced.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()


async def create_database(url_of_server: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url_of_server``; return its URL.

    Gives each test its own empty database, so tests never see each other's rows.
    """
    await _create_database(url_of_server, name)
    return _with_database(url_of_server, name)


def create_database_sync(url_of_server: str, name: str) -> str:
    """:func:`create_database` for sync fixtures (works even inside a running event loop)."""
    return _run_coroutine(create_database(url_of_server, name))
