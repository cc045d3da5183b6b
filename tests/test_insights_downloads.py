"""Download counts: completed GETs count (HEAD, 304 and partial ranges do not), kept in memory and
flushed in batches, durable across restarts; shown in artifact and file responses and the badge."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from builders import build_conda_package
from conftest import Api, Server, channel_api
from test_api import create
from test_mirror_fetch import publish_passive
from upstream import UpstreamChannel

from proxy.repo.counted import completes
from proxy.store.tables import downloads


def test_what_completes_a_download() -> None:
    assert completes("GET", 200, None)
    assert not completes("HEAD", 200, None)
    assert not completes("GET", 304, None)
    assert completes("GET", 206, "bytes 100-199/200")  # a resumed download that reaches the end
    assert not completes("GET", 206, "bytes 0-99/200")
    assert not completes("GET", 416, "bytes */200")


def _stored(server: Server) -> dict[tuple[str, str], int]:
    async def read() -> dict:
        async with server.platform.db.read() as conn:
            rows = await conn.execute(sa.select(downloads.c.subdir, downloads.c.filename, downloads.c.count))
            return {(r.subdir, r.filename): r.count for r in rows}

    return server.call(read())


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_completed_downloads_count(server: Server, api: Api, tmp_path: Path, channel: str) -> None:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    a = build_conda_package(tmp_path, "tool", "1.0", "0")
    b = build_conda_package(tmp_path, "tool", "2.0", "0", subdir="linux-64")
    api.upload(channel, a, b)
    repo = f"{server.url}/api/repo/{channel}"
    url_a = f"{repo}/noarch/{a.name}"
    size = a.stat().st_size

    full = requests.get(url_a, timeout=30)
    assert full.status_code == 200 and full.content == a.read_bytes()
    assert requests.get(f"{repo}/linux-64/{b.name}", timeout=30).status_code == 200
    assert requests.head(url_a, timeout=30).status_code == 200  # not counted
    assert requests.get(url_a, headers={"If-None-Match": full.headers["ETag"]}, timeout=30).status_code == 304
    part = requests.get(url_a, headers={"Range": "bytes=0-9"}, timeout=30)
    assert part.status_code == 206 and len(part.content) == 10  # not counted: the download goes on
    rest = requests.get(url_a, headers={"Range": f"bytes=10-{size - 1}"}, timeout=30)
    assert rest.status_code == 206  # counted: the resumed download is complete

    # the REST download (what `conda-platform package download` uses) counts too
    assert api.get(f"{channel_api(channel)}/files/noarch/{a.name}/download").content == a.read_bytes()
    api.request("HEAD", f"{channel_api(channel)}/files/noarch/{a.name}/download")

    # nothing written yet: counts live in memory until a flush, and reads include them
    assert _stored(server) == {}
    base = channel_api(channel)
    assert api.get(f"{base}/artifacts/conda/tool").json()["downloads"] == 4
    files = {f["filename"]: f["downloads"] for f in api.get(f"{base}/artifacts/conda/tool/files").json()["items"]}
    assert files == {a.name: 3, b.name: 1}
    assert api.get(f"{base}/files/noarch/{a.name}").json()["downloads"] == 3
    badge = api.get(f"{base}/artifacts/conda/tool/badges/downloads.svg").content
    assert ET.fromstring(badge).get("aria-label") == "downloads: 4"

    # one flush writes every pending count in one transaction
    assert server.call(server.platform.downloads.flush()) == 2
    assert _stored(server) == {("noarch", a.name): 3, ("linux-64", b.name): 1}
    requests.get(url_a, timeout=30)
    assert api.get(f"{base}/artifacts/conda/tool").json()["downloads"] == 5  # stored 4 + pending 1

    # shutdown flushes what is pending: the counts survive a restart
    server.restart()
    assert _stored(server) == {("noarch", a.name): 4, ("linux-64", b.name): 1}
    api = Api(server)
    assert api.get(f"{base}/artifacts/conda/tool").json()["downloads"] == 5
    assert api.get(f"{base}/files/linux-64/{b.name}").json()["downloads"] == 1


def test_the_flusher_runs_on_its_clock(server: Server, api: Api,
                                                                        tmp_path: Path) -> None:
    create(api, "team")
    pkg = build_conda_package(tmp_path, "tool", "1.0")
    api.upload("team", pkg)
    counter = server.platform.downloads
    ticks: asyncio.Queue = asyncio.Queue()
    flushed = asyncio.Event()

    async def sleep(_seconds: float) -> None:  # the test's clock: one tick per put
        if counter._task is not None and not counter.pending:
            flushed.set()
        await ticks.get()

    counter._sleep = sleep
    url = f"{server.url}/api/repo/team/noarch/{pkg.name}"
    assert requests.get(url, timeout=30).status_code == 200  # starts the flusher, which waits for a tick
    assert _stored(server) == {}
    server.call(ticks.put(None))
    server.call(asyncio.wait_for(flushed.wait(), 30))
    assert _stored(server) == {("noarch", pkg.name): 1}

    # a channel deleted before the flush: its counts go with it, the others are written
    create(api, "gone")
    api.upload("gone", pkg)
    requests.get(url, timeout=30)
    requests.get(f"{server.url}/api/repo/gone/noarch/{pkg.name}", timeout=30)
    api.request("DELETE", "/api/channels/gone")
    assert server.call(counter.flush()) == 1
    assert _stored(server) == {("noarch", pkg.name): 2}
    assert counter.pending == {}


def test_on_demand_fetches_count_only_when_complete(server: Server, tmp_path: Path) -> None:
    up = UpstreamChannel(tmp_path / "up")
    up.add("remote", files={"share/remote/data.bin": os.urandom(1 << 20)})
    up.index()
    up.start()
    try:
        repo = publish_passive(server, up, "team")
        rel = next(p.relative_to(up.root).as_posix() for p in up.root.glob("noarch/remote-*.conda"))
        size = (up.root / rel).stat().st_size
        # the upstream cuts the body in half: the client's download is cut short and is not counted
        up.fault(rel, "truncate", after=size // 2, times=1)
        try:
            bad = requests.get(f"{repo}/{rel}", timeout=60)
            assert bad.status_code != 200 or len(bad.content) != size
        except requests.RequestException:
            pass
        ok = requests.get(f"{repo}/{rel}", timeout=60)  # fetched again, streamed whole: counted
        assert ok.status_code == 200 and ok.content == (up.root / rel).read_bytes()
        assert requests.get(f"{repo}/{rel}", timeout=60).status_code == 200  # from the blob store now
        assert Api(server).get("/api/channels/team/artifacts/conda/remote").json()["downloads"] == 2
    finally:
        up.stop()
