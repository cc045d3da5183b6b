"""Index bodies read through Upstream.read from real aiohttp servers on 127.0.0.1, however their
servers code them: gzip and x-gzip (RFC 9110: the same coding), gzip streams of several members
(RFC 1952), and files that are gzip themselves (CRAN's PACKAGES.gz), labelled or not. Real indexes
of shared/data: a CRAN src/contrib PACKAGES.gz (45 packages) and a conda repodata.json.zst."""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import requests
import zstandard
from aiohttp import web
from builders import SHARED_DATA
from conftest import Api, Server
from rbuilders import build_r_source, write_cran_repo
from upstream import UpstreamChannel

from conda_platform_plugin.errors import UpstreamError
from conda_platform_plugin.rformats import parse_dcf
from proxy.mirror.cran_source import CranSource
from proxy.mirror.http import Upstream
from proxy.mirror.source import IndexCache, Source

PACKAGES_GZ = (SHARED_DATA / "cran" / "PACKAGES-src.gz").read_bytes()
PACKAGES = gzip.decompress(PACKAGES_GZ)
REPODATA_ZST = (SHARED_DATA / "repodata" / "conda-tests" / "repodata_conda-test_noarch.json.zst").read_bytes()


def members(data: bytes, n: int = 2) -> bytes:
    """``data`` as a gzip stream of ``n`` members (what ``cat a.gz b.gz`` or pigz make), cut
    between CRAN stanzas when there are any, so that a reader of the first member alone loses some."""
    cuts = [data.find(b"\n\n", len(data) * i // n) + 2 for i in range(1, n)]
    assert all(c > 1 for c in cuts)
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


@asynccontextmanager
async def serving(routes: dict[str, tuple[bytes, dict[str, str]]]) -> AsyncIterator[str]:
    """A real server on 127.0.0.1 answering each path with its (body, headers) exactly as given."""
    async def handler(request: web.Request) -> web.Response:
        if request.path not in routes:
            raise web.HTTPNotFound()
        body, headers = routes[request.path]
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_read_decodes_x_gzip_and_every_gzip_member() -> None:
    """x-gzip is gzip; every member is decoded, the limit holding on their decoded total; a member
    cut short, and bytes after the last member that are not one, are a broken body."""
    text = b"".join(b"line %d\n\n" % i for i in range(20000))
    routes = {
        "/x-gzip": (gzip.compress(text), {"Content-Encoding": "x-gzip"}),
        "/two": (members(text), {"Content-Encoding": "gzip"}),
        "/three-padded": (members(text, 3) + b"\0" * 5, {"Content-Encoding": "gzip"}),
        "/bomb-second": (gzip.compress(b"small") + gzip.compress(b"\0" * (4 << 20)), {"Content-Encoding": "gzip"}),
        "/torn-second": (members(text)[:-20], {"Content-Encoding": "gzip"}),
        "/garbage-after": (gzip.compress(text) + b"not gzip", {"Content-Encoding": "gzip"}),
        "/compress": (b"\x1f\x9d...", {"Content-Encoding": "compress"}),
    }

    async def go() -> None:
        upstream = Upstream()
        async with serving(routes) as base:
            try:
                for path in ("/x-gzip", "/two", "/three-padded"):
                    assert (await upstream.read(base + path, limit=len(text)))[2] == text, path
                with pytest.raises(UpstreamError, match="over the limit of 1048576 bytes"):
                    await upstream.read(base + "/bomb-second", limit=1 << 20)
                with pytest.raises(UpstreamError, match="broken gzip body"):
                    await upstream.read(base + "/torn-second", limit=1 << 20)
                with pytest.raises(UpstreamError, match="broken gzip body"):
                    await upstream.read(base + "/garbage-after", limit=1 << 20)
                with pytest.raises(UpstreamError, match="'compress', not asked for"):
                    await upstream.read(base + "/compress", limit=1 << 20)
            finally:
                await upstream.close()

    asyncio.run(go())


@pytest.mark.parametrize(("body", "headers"), [
    pytest.param(PACKAGES_GZ, {}, id="file-unlabelled"),
    pytest.param(PACKAGES_GZ, {"Content-Encoding": "gzip"}, id="file-labelled-gzip"),
    pytest.param(PACKAGES_GZ, {"Content-Encoding": "x-gzip"}, id="file-labelled-x-gzip"),
    pytest.param(members(PACKAGES), {"Content-Encoding": "gzip"}, id="two-members-labelled"),
    pytest.param(members(PACKAGES), {}, id="two-members-unlabelled"),
    pytest.param(gzip.compress(PACKAGES_GZ), {"Content-Encoding": "gzip"}, id="file-coded-again"),
])
def test_cran_source_reads_every_package_of_packages_gz(tmp_path: Path, body: bytes, headers: dict) -> None:
    """A PACKAGES.gz is parsed whole however its server sends it (the file's own gzip, a coding
    label on it as Apache's AddEncoding sets, several members, gzip coding over the gzip file)."""
    want = parse_dcf(PACKAGES.decode())
    assert len(want) == 45

    async def go() -> None:
        upstream, cache = Upstream(), IndexCache(tmp_path / "cache")
        async with serving({"/cran/src/contrib/PACKAGES.gz": (body, headers)}) as base:
            try:
                source = CranSource(upstream, cache, SimpleNamespace(source_url=f"{base}/cran"), max_bytes=1 << 20)
                index = await source.fetch("cran-src")
            finally:
                await upstream.close()
                cache.close()
        assert (index.status, index.variant) == ("fetched", "PACKAGES.gz")
        prepared = source.prepare(index, None)
        assert prepared.seen == 45
        assert len(prepared.wanted) == 9  # (the other 36 have no MD5sum: filtered, named too)
        named = [*prepared.wanted, *(f["filename"] for f in prepared.filtered)]
        assert sorted(named) == sorted(f"{s['Package']}_{s['Version']}.tar.gz" for s in want)

    asyncio.run(go())


def test_conda_source_reads_coded_repodata(tmp_path: Path) -> None:
    """repodata.json in x-gzip of two members and repodata.json.zst under gzip coding: each
    subdir's index parses to the whole document (the zstd file is decoded once, by the source)."""
    doc = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(REPODATA_ZST)).read()
    half = len(doc) // 2
    routes = {
        "/one/noarch/repodata.json": (gzip.compress(doc[:half]) + gzip.compress(doc[half:]),
                                      {"Content-Encoding": "x-gzip"}),
        "/two/noarch/repodata.json.zst": (gzip.compress(REPODATA_ZST), {"Content-Encoding": "gzip"}),
    }

    async def go() -> None:
        upstream, cache = Upstream(), IndexCache(tmp_path / "cache")
        async with serving(routes) as base:
            try:
                for channel in ("one", "two"):
                    index = await Source(upstream, cache, f"{base}/{channel}", max_bytes=1 << 20).fetch("noarch")
                    assert index.status == "fetched"
                    assert index.parse() == orjson.loads(doc), channel
            finally:
                await upstream.close()
                cache.close()

    asyncio.run(go())


class CodedCran(UpstreamChannel):
    """A CRAN repository whose PACKAGES.gz is sent as ``/<how>/cran/src/contrib/PACKAGES.gz``
    says: ``gzip`` / ``x-gzip``, the file's own bytes with that Content-Encoding label (Apache's
    ``AddEncoding x-gzip .gz``); ``two-members``, PACKAGES in two gzip members labelled gzip. Every
    other path is served as UpstreamChannel serves ``/cran/...``."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        how, _, rest = request.path.lstrip("/").partition("/")
        if rest != "cran/src/contrib/PACKAGES.gz":
            return await super()._handle(request.clone(rel_url="/" + rest))
        self.hits[f"{how}:PACKAGES.gz"] += 1
        contrib = self.root / "src" / "contrib"
        if how == "two-members":
            return web.Response(body=members((contrib / "PACKAGES").read_bytes()), headers={"Content-Encoding": "gzip"})
        return web.Response(body=(contrib / "PACKAGES.gz").read_bytes(), headers={"Content-Encoding": how})


def test_cran_mirrors_of_coded_packages_gz_run_end_to_end(server: Server, api: Api, tmp_path: Path) -> None:
    """A passive CRAN mirror of each way of sending PACKAGES.gz publishes every package, and
    clients download them through it (checked against the index's MD5sum)."""
    up = CodedCran(tmp_path / "up", prefix="/cran")
    pkgs = [build_r_source(tmp_path / "p", "rdep", "0.2.1", License="MIT"),
            build_r_source(tmp_path / "p", "rapp", "1.0", Imports="rdep", License="MIT"),
            build_r_source(tmp_path / "p", "rzed", "3.1-2", License="GPL-3")]
    contrib = write_cran_repo(up.root, pkgs)
    up.start()
    try:
        for how in ("gzip", "x-gzip", "two-members"):
            api.post("/api/channels", 201, json={"name": how})
            api.post(f"/api/channels/{how}/mirrors", 201, json={
                "name": "up", "type": "cran", "source_url": f"http://127.0.0.1:{up.port}/{how}/cran", "run_now": True})
            deadline = time.monotonic() + 60
            while (run := api.get(f"/api/channels/{how}/mirrors/up").json()["last_run"]) is None \
                    or run["status"] not in ("completed", "failed", "stopped"):
                assert time.monotonic() < deadline, run
                time.sleep(0.05)
            assert run["status"] == "completed", (how, run)
            assert run["figures"]["records_seen"] == 3 and run["figures"]["records_published"] == 3, (how, run)
            assert up.hits[f"{how}:PACKAGES.gz"] == 1 and up.hits["src/contrib/PACKAGES"] == 0
            base = f"{server.url}/api/repo/{how}/cran/src/contrib"
            assert requests.get(f"{base}/PACKAGES", timeout=30).text == (contrib / "PACKAGES").read_text()
            for pkg in pkgs:
                assert requests.get(f"{base}/{pkg.name}", timeout=30).content == pkg.read_bytes(), (how, pkg.name)
    finally:
        up.stop()
