"""A real upstream conda channel for mirror tests: packages built with conda-package-handling,
indexed with py-rattler's ``index_fs``, served from 127.0.0.1 by a real HTTP server that can
inject faults (slow, held, reset mid-body, 5xx, 404, wrong bytes, truncated) per path.
"""

from __future__ import annotations

import asyncio
import fnmatch
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web
from builders import build_conda_package
from rattler.index import index_fs

from proxy.store.files import NewFile

CHUNK = 64 * 1024


@dataclass
class Fault:
    """What to do to requests whose path (below the channel) matches ``pattern`` (fnmatch).

    kind: ``status`` (answer ``status``), ``slow`` (wait ``delay`` s before the headers and
    ``chunk_delay`` s between chunks), ``hold`` (send nothing until ``release()``), ``reset``
    (send the headers and ``after`` bytes, then drop the connection), ``wrong`` (flip a byte of
    the body, same length), ``truncate`` (a consistent but short body of ``after`` bytes).
    ``times``: how many requests it applies to (None: all). ``wait``: any kind also waits for
    ``release()`` first (e.g. a bad body that several clients must be waiting for).
    """

    pattern: str
    kind: str
    status: int = 500
    delay: float = 0.0
    chunk_delay: float = 0.0
    after: int = 0
    times: int | None = None
    wait: bool = False
    gate: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.gate.set()


class UpstreamChannel:
    """``channel = UpstreamChannel(tmp_path / "up").start()``; ``channel.url`` is the channel URL."""

    def __init__(self, root: Path, *, token: str | None = None, prefix: str = "/conda/upstream"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "noarch").mkdir(exist_ok=True)
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.faults: list[Fault] = []
        self.hits: Counter[str] = Counter()  # path below the channel → requests (any status)
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- contents ------------------------------------------------------------------------------
    def add(self, name: str, version: str = "1.0", build: str = "0", *, subdir: str = "noarch", **kw) -> Path:  # noqa: ANN003
        """Build a real package into the channel (index() makes it visible)."""
        return build_conda_package(self.root / subdir, name, version, build, subdir=subdir, **kw)

    def index(self) -> None:
        """(Re)write repodata.json, .zst and shards with py-rattler, as a real channel has them."""
        asyncio.run(index_fs(self.root, write_zst=True, write_shards=True, force=True))

    def passive_files(self, subdirs: tuple[str, ...] = ("noarch", "linux-64")) -> list[NewFile]:
        """The file rows a passive mirror of this channel stores: the upstream's own records
        (from its repodata.json), each with its upstream URL and no blob."""
        rows = []
        for subdir in subdirs:
            path = self.root / subdir / "repodata.json"
            if not path.exists():
                continue
            repodata = orjson.loads(path.read_bytes())
            for key in ("packages", "packages.conda"):
                for filename, rec in repodata.get(key, {}).items():
                    rows.append(NewFile(
                        type="conda", subdir=subdir, filename=filename, name=rec["name"], version=rec["version"],
                        build=rec["build"], sha256=rec["sha256"], md5=rec["md5"], size=rec["size"],
                        record=orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), license=rec.get("license") or "",
                        mirror_id=None, source_url=f"{self.url}/{subdir}/{filename}",
                    ))
        return rows

    @property
    def url(self) -> str:
        token = f"/t/{self.token}" if self.token else ""
        return f"http://127.0.0.1:{self.port}{token}{self.prefix}"

    # -- faults --------------------------------------------------------------------------------
    def fault(self, pattern: str, kind: str, **kw) -> Fault:  # noqa: ANN003
        f = Fault(pattern, kind, **kw)
        with self._lock:
            self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            for f in self.faults:
                f.release()
            self.faults.clear()

    def _fault_for(self, rel: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if fnmatch.fnmatch(rel, f.pattern) and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    # -- serving -------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.token:
            want = f"/t/{self.token}"
            if not path.startswith(want + "/"):
                return web.json_response({"error": "token required"}, status=403)
            path = path[len(want):]
        if not path.startswith(self.prefix + "/"):
            raise web.HTTPNotFound()
        rel = path[len(self.prefix) + 1:]
        with self._lock:
            self.hits[rel] += 1
        fault = self._fault_for(rel)
        if fault is not None and fault.kind == "status":
            return web.Response(status=fault.status, text=f"injected {fault.status}")
        if fault is not None and fault.kind == "slow" and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and (fault.kind == "hold" or fault.wait):
            while not fault.gate.is_set():
                await asyncio.sleep(0.01)
        target = (self.root / rel).resolve()
        if self.root.resolve() not in target.parents or not target.is_file():
            raise web.HTTPNotFound()
        if fault is None or fault.kind in ("hold",) or (fault.kind == "slow" and not fault.chunk_delay):
            resp = web.FileResponse(target)
            with self._lock:
                self.bytes_sent += target.stat().st_size
            return resp
        data = target.read_bytes()
        if fault.kind == "wrong":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        elif fault.kind == "truncate":
            data = data[: fault.after]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(data)
        await resp.prepare(request)
        sent = 0
        for i in range(0, len(data), CHUNK):
            chunk = data[i : i + CHUNK]
            if fault.kind == "reset" and sent + len(chunk) > fault.after:
                await resp.write(chunk[: max(0, fault.after - sent)])
                request.transport.abort()  # the connection dies mid-body
                return resp
            await resp.write(chunk)
            sent += len(chunk)
            with self._lock:
                self.bytes_sent += len(chunk)
            if fault.chunk_delay:
                await asyncio.sleep(fault.chunk_delay)
        await resp.write_eof()
        return resp

    def start(self) -> UpstreamChannel:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port or 0)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        self.clear_faults()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None
