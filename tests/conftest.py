"""Shared fixtures: real servers on 127.0.0.1, real databases (SQLite, and PostgreSQL when present)."""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from pg import create_database_sync, postgres_unavailable_reason, start_postgres  # noqa: E402

from proxy.api.routing import PLATFORM  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.config import Config  # noqa: E402


class Server:
    """A real platform server on an ephemeral 127.0.0.1 port, in its own thread and event loop."""

    def __init__(self, data_dir: Path, database_url: str | None = None, **settings):  # noqa: ANN003
        self.data_dir = data_dir
        self.database_url = database_url
        self.settings = settings
        self.url = ""
        self.admin_token: str | None = None  # the bootstrap token of the first start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> Server:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                config = Config(data_dir=self.data_dir, database_url=self.database_url, **self.settings)
                self.app = create_app(config)
                self._runner = web.AppRunner(self.app, access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                port = self._runner.addresses[0][1]
                self.url = f"http://127.0.0.1:{port}"
                self.admin_token = self.admin_token or self.app[PLATFORM].bootstrap_token

            try:
                loop.run_until_complete(boot())
            except BaseException as e:  # surfaced to the test
                error.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(60)
        if error:
            raise error[0]
        return self

    @property
    def platform(self):  # noqa: ANN201 - the running Platform, for white-box checks
        return self.app[PLATFORM]

    def call(self, coro):  # noqa: ANN001, ANN201 - run a coroutine on the server's loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(120)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(60)
            self._loop = None

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def api(self, path: str) -> str:
        return self.url + path


class Api:
    """A thin requests wrapper that raises on unexpected statuses with the server's message."""

    def __init__(self, server: Server, token: str | None = "admin"):
        """Calls as the bootstrap admin by default; ``token=None`` calls anonymously."""
        self.server = server
        self.session = requests.Session()
        self.token = server.admin_token if token == "admin" else token
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, expect: int | tuple[int, ...] = 200, **kw) -> requests.Response:  # noqa: ANN003
        r = self.session.request(method, self.server.url + path, timeout=120, **kw)
        expected = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in expected, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r

    def get(self, path: str, expect=200, **kw):  # noqa: ANN001, ANN003, ANN201
        return self.request("GET", path, expect, **kw)

    def post(self, path: str, expect=200, **kw):  # noqa: ANN001, ANN003, ANN201
        return self.request("POST", path, expect, **kw)

    def upload(self, channel: str, *paths: Path, expect=(200, 201), subdir: str | None = None) -> dict:  # noqa: ANN001
        base = channel_api(channel)
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
        params = {"subdir": subdir} if subdir else None
        return self.post(f"{base}/files", expect=expect, files=files, params=params).json()


def channel_api(channel: str) -> str:
    """``CH`` or ``CH/SUB`` → its REST base path."""
    ch, _, sub = channel.partition("/")
    return f"/api/channels/{ch}/subchannels/{sub}" if sub else f"/api/channels/{ch}"


_PG: dict[str, str | None] = {}


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = postgres_unavailable_reason()
    if reason:
        print(f"\nPostgreSQL tests skipped: {reason}")
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    with start_postgres(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Run the test against both databases; a fresh, empty PostgreSQL database each time."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_server")
    return create_database_sync(url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def api(server: Server) -> Api:
    return Api(server)
