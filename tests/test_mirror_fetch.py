"""On-demand fetch of a passive channel's package files from a real upstream channel (DESIGN.md §6).

The passive state is built the way a mirror run leaves it, through the store API: file rows from
the upstream's own repodata.json with ``source_url`` set and no blob, then one publish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import rattler
import requests
from conftest import Api, Server
from upstream import UpstreamChannel

from conda_platform_plugin.errors import UpstreamError

MB = 1 << 20
BIG = "big-1.0-0.conda"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamChannel]:
    """big (~2 MB, noarch); liba 2.0 (noarch) and appb 1.0 (linux-64, needs liba) for a real install."""
    channel = UpstreamChannel(tmp_path_factory.mktemp("up"))
    channel.add("big", files={"share/big/data.bin": os.urandom(2 * MB)})
    channel.add("liba", "2.0", files={"share/liba/a.txt": b"two"})
    channel.add("appb", subdir="linux-64", depends=["liba >=2"], files={"bin/appb": b"#!/bin/sh\necho appb\n"},
                fmt=".tar.bz2")
    channel.index()
    channel.start()
    yield channel
    channel.stop()


@pytest.fixture
def up(upstream: UpstreamChannel) -> Iterator[UpstreamChannel]:
    """The module's upstream with fresh counters and no faults."""
    upstream.clear_faults()
    upstream.hits.clear()
    yield upstream
    upstream.clear_faults()


def publish_passive(server: Server, channel: UpstreamChannel, name: str = "mirror", *,
                    unsized: tuple[str, ...] = ()) -> str:
    """Create channel ``name`` holding the upstream's files passively; returns its repository URL.
    ``unsized``: files whose rows have size 0 (an index that gave none)."""
    Api(server).post("/api/channels", 201, json={"name": name})
    rows = [replace(f, size=0) if f.filename in unsized else f for f in channel.passive_files()]

    async def go() -> None:
        platform = server.platform
        ch = await platform.channels.get(name)
        await platform.files.add(ch, rows, "passive mirror")
        await platform.publisher.publish(ch.id)

    server.call(go())
    return f"{server.url}/api/repo/{name}"


@pytest.fixture
def repo(server: Server, up: UpstreamChannel) -> str:
    return publish_passive(server, up)


def expected(channel: UpstreamChannel, rel: str = f"noarch/{BIG}") -> bytes:
    return (channel.root / rel).read_bytes()


def sha256_of(channel: UpstreamChannel, rel: str = f"noarch/{BIG}") -> str:
    return hashlib.sha256(expected(channel, rel)).hexdigest()


def try_download(url: str) -> tuple[int, bytes | None]:
    """(status, body); body None when the transfer broke off (what a client sees as a failed download)."""
    try:
        r = requests.get(url, timeout=60)
    except requests.exceptions.RequestException:
        return 0, None
    return r.status_code, r.content


def wait_until(condition, timeout: float = 30.0) -> None:  # noqa: ANN001 - a callable returning bool
    """Wait for a state another thread reaches (polling the condition, not sleeping a guessed time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.exceptions.ConnectionError:
        return False


def in_flight(server: Server) -> list[Path]:
    """Lock files of downloads and their part files."""
    return [*(server.data_dir / "cache" / "inflight").iterdir(), *(server.data_dir / "blobs" / "tmp").iterdir()]


def committed(server: Server, sha256: str) -> None:
    """Clients get their last bytes once the body is verified; the fsync and commit follow."""
    wait_until(lambda: server.platform.blobs.exists(sha256))
    wait_until(lambda: in_flight(server) == [])


def no_leftovers(server: Server, sha256: str) -> None:
    assert not server.platform.blobs.exists(sha256)
    assert in_flight(server) == []


# -- the first request fetches, later ones do not ----------------------------------------------


def test_first_request_fetches_and_later_ones_are_local(server: Server, up: UpstreamChannel, repo: str) -> None:
    url = f"{repo}/noarch/{BIG}"
    head = requests.head(url, timeout=30)  # a probe answers from the record, without a download
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(expected(up))
    assert up.hits[f"noarch/{BIG}"] == 0
    first = requests.get(url, timeout=60)
    assert first.status_code == 200 and first.content == expected(up)
    assert first.headers["Content-Length"] == str(len(expected(up)))
    assert up.hits[f"noarch/{BIG}"] == 1
    committed(server, sha256_of(up))
    second = requests.get(url, timeout=60)
    assert second.content == expected(up)
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=60)
    assert ranged.status_code == 206 and ranged.content == expected(up)[10:20]
    assert up.hits[f"noarch/{BIG}"] == 1


def test_fetch_on_both_databases(tmp_path: Path, database_url: str | None, up: UpstreamChannel) -> None:
    server = Server(tmp_path / "data", database_url=database_url).start()
    try:
        repo = publish_passive(server, up)
        assert try_download(f"{repo}/noarch/{BIG}") == (200, expected(up))
        committed(server, sha256_of(up))
        server.restart()  # the stored blob serves after a restart, without the upstream
        assert try_download(f"{server.url}/api/repo/mirror/noarch/{BIG}") == (200, expected(up))
        assert up.hits[f"noarch/{BIG}"] == 1
    finally:
        server.stop()


def test_range_on_a_missing_blob_fetches_then_serves_the_range(server: Server, up: UpstreamChannel,
                                                               repo: str) -> None:
    r = requests.get(f"{repo}/noarch/{BIG}", headers={"Range": "bytes=100-199"}, timeout=60)
    assert r.status_code == 206 and r.content == expected(up)[100:200]
    assert server.platform.blobs.exists(sha256_of(up)) and up.hits[f"noarch/{BIG}"] == 1  # fetched first


def test_a_file_without_blob_or_source_is_still_a_404(server: Server, up: UpstreamChannel, repo: str) -> None:
    sha = sha256_of(up)
    requests.get(f"{repo}/noarch/{BIG}", timeout=60)
    committed(server, sha)
    server.platform.blobs.remove(sha)

    async def forget_source() -> None:
        import sqlalchemy as sa

        from proxy.store.tables import files

        async with server.platform.db.write() as conn:
            await conn.execute(sa.update(files).values(source_url=None))

    server.call(forget_source())
    r = requests.get(f"{repo}/noarch/{BIG}", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_file_of_unknown_size_gets_at_most_the_servers_maximum(tmp_path: Path, up: UpstreamChannel) -> None:
    """A row without a size (0) downloads at most max_upload_bytes, whichever route asks for it: a
    bigger upstream body is refused and nothing is stored; a HEAD tells no Content-Length."""
    server = Server(tmp_path / "data", max_upload_bytes=MB).start()  # BIG is about 2 MB
    try:
        url = f"{publish_passive(server, up, unsized=(BIG,))}/noarch/{BIG}"
        head = requests.head(url, timeout=30)
        assert head.status_code == 200 and "Content-Length" not in head.headers and up.hits[f"noarch/{BIG}"] == 0
        r = requests.get(url, timeout=60)
        assert r.status_code == 502 and f"the limit of {MB} bytes" in r.json()["error"]["message"]
        wait_until(lambda: in_flight(server) == [])
        no_leftovers(server, sha256_of(up))
    finally:
        server.stop()


def test_a_row_of_unknown_size_learns_it_from_its_first_download(server: Server, up: UpstreamChannel) -> None:
    """Every route serves files through the one path that records what a download learnt."""
    url, want = f"{publish_passive(server, up, unsized=(BIG,))}/noarch/{BIG}", expected(up)
    assert requests.get(url, timeout=60).content == want
    wait_until(lambda: Api(server).get(f"/api/channels/mirror/files/noarch/{BIG}").json()["size"] == len(want))
    assert requests.head(url, timeout=30).headers["Content-Length"] == str(len(want)) and up.hits[f"noarch/{BIG}"] == 1


# -- one upstream download, however many clients ------------------------------------------------


def test_fifty_concurrent_clients_one_upstream_fetch(server: Server, up: UpstreamChannel, repo: str) -> None:
    gate = up.fault(f"noarch/{BIG}", "hold")
    sha, url = sha256_of(up), f"{repo}/noarch/{BIG}"

    async def clients() -> list[bytes]:
        async with aiohttp.ClientSession() as session:
            async def one() -> bytes:
                async with session.get(url) as r:
                    assert r.status == 200
                    return await r.read()

            tasks = [asyncio.create_task(one()) for _ in range(50)]
            # every client is waiting on the one held download before the upstream answers
            while server.platform.fetcher.waiting[sha] < 50:
                assert not any(t.done() for t in tasks)
                await asyncio.sleep(0.01)
            gate.release()
            return await asyncio.gather(*tasks)

    bodies = asyncio.run(clients())
    assert len(bodies) == 50 and all(b == expected(up) for b in bodies)
    assert up.hits[f"noarch/{BIG}"] == 1


def test_ensure_blob_is_single_flight_and_verified(server: Server, up: UpstreamChannel, repo: str) -> None:
    fetcher, sha, size = server.platform.fetcher, sha256_of(up), len(expected(up))
    url = f"{up.url}/noarch/{BIG}"

    async def many() -> None:
        await asyncio.gather(*(fetcher.ensure_blob(url, sha, size) for _ in range(20)))

    server.call(many())
    assert up.hits[f"noarch/{BIG}"] == 1 and server.platform.blobs.path(sha).read_bytes() == expected(up)
    server.call(fetcher.ensure_blob(url, sha, size))  # present: returns at once
    assert up.hits[f"noarch/{BIG}"] == 1

    other = f"{up.url}/noarch/liba-2.0-0.conda"
    with pytest.raises(UpstreamError, match="do not match the record"):
        server.call(fetcher.ensure_blob(other, "0" * 64, None))  # bytes whose sha256 is not the record's
    with pytest.raises(UpstreamError, match="bytes for"):
        server.call(fetcher.ensure_blob(other, "1" * 64, 5))  # the upstream's length is not the record's
    no_leftovers(server, "0" * 64)


# -- clients get bytes as they land --------------------------------------------------------------


def test_bytes_reach_clients_before_the_upstream_finishes(server: Server, up: UpstreamChannel, repo: str) -> None:
    size = len(expected(up))
    up.fault(f"noarch/{BIG}", "slow", chunk_delay=0.02)  # 64 KiB every 20 ms: about 0.7 s for the body
    before = up.bytes_sent
    with requests.get(f"{repo}/noarch/{BIG}", stream=True, timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Length"] == str(size)
        chunks = r.iter_content(16 * 1024)
        first = next(chunks)
        upstream_sent_at_first_byte = up.bytes_sent - before
        body = first + b"".join(chunks)
    assert upstream_sent_at_first_byte < size / 2
    assert body == expected(up)


def test_a_client_that_leaves_does_not_stop_the_download(server: Server, up: UpstreamChannel, repo: str) -> None:
    up.fault(f"noarch/{BIG}", "slow", chunk_delay=0.01)
    with requests.get(f"{repo}/noarch/{BIG}", stream=True, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_content(1024))
    # the client hung up after its first bytes; the download goes on and is committed
    committed(server, sha256_of(up))
    assert requests.get(f"{repo}/noarch/{BIG}", timeout=60).content == expected(up)
    assert up.hits[f"noarch/{BIG}"] == 1


def test_a_download_stopped_midway_keeps_nothing(server: Server, up: UpstreamChannel, repo: str) -> None:
    """What the platform's close() does to downloads still running (after aiohttp's graceful shutdown)."""
    up.fault(f"noarch/{BIG}", "slow", chunk_delay=0.02)
    sha = sha256_of(up)
    with requests.get(f"{repo}/noarch/{BIG}", stream=True, timeout=60) as r:
        next(r.iter_content(1024))
        server.call(server.platform.fetcher.close())
        with pytest.raises(requests.exceptions.RequestException):
            b"".join(r.iter_content(64 * 1024))  # the client's download is cut short
    no_leftovers(server, sha)
    up.clear_faults()
    assert try_download(f"{repo}/noarch/{BIG}") == (200, expected(up))


# -- bad bodies, failing and slow upstreams ------------------------------------------------------


@pytest.mark.parametrize("kind", ["wrong", "truncate", "reset"])
def test_a_bad_upstream_body_fails_every_client_and_is_not_stored(server: Server, up: UpstreamChannel, repo: str,
                                                                  kind: str) -> None:
    sha, url, size = sha256_of(up), f"{repo}/noarch/{BIG}", len(expected(up))
    fault = up.fault(f"noarch/{BIG}", kind, after=size // 2, wait=True, times=1)

    async def clients() -> list[tuple[int, bytes | None]]:
        async with aiohttp.ClientSession() as session:
            async def one() -> tuple[int, bytes | None]:
                try:
                    async with session.get(url) as r:
                        return r.status, await r.read()
                except aiohttp.ClientError:
                    return 0, None

            tasks = [asyncio.create_task(one()) for _ in range(5)]
            while server.platform.fetcher.waiting[sha] < 5:
                await asyncio.sleep(0.01)
            fault.release()
            return await asyncio.gather(*tasks)

    results = asyncio.run(clients())
    for status, body in results:
        assert body is None or status != 200 or len(body) != size, "a client got a complete download of bad bytes"
        assert body != expected(up)
    assert up.hits[f"noarch/{BIG}"] == 1
    no_leftovers(server, sha)
    up.clear_faults()
    status, body = try_download(url)  # the next request tries again
    assert status == 200 and body == expected(up)
    assert up.hits[f"noarch/{BIG}"] == 2


@pytest.mark.parametrize("status", [500, 404])
def test_an_upstream_error_status_is_a_502(server: Server, up: UpstreamChannel, repo: str, status: int) -> None:
    up.fault(f"noarch/{BIG}", "status", status=status)
    r = requests.get(f"{repo}/noarch/{BIG}", timeout=30)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_error" and str(status) in r.json()["error"]["message"]
    no_leftovers(server, sha256_of(up))
    up.clear_faults()
    assert try_download(f"{repo}/noarch/{BIG}") == (200, expected(up))


def test_an_upstream_token_never_shows_in_errors(server: Server, tmp_path: Path) -> None:
    private = UpstreamChannel(tmp_path / "private", token="s3cr3t-token")
    private.add("big", files={"share/big/data.bin": os.urandom(100_000)})
    private.index()
    private.start()
    try:
        repo = publish_passive(server, private, "private-mirror")
        assert try_download(f"{repo}/noarch/{BIG}") == (200, (private.root / "noarch" / BIG).read_bytes())
        committed(server, sha256_of(private))
        server.platform.blobs.remove(sha256_of(private))
        private.fault(f"noarch/{BIG}", "status", status=503)
        r = requests.get(f"{repo}/noarch/{BIG}", timeout=30)
        assert r.status_code == 502 and "/t/***/" in r.text and "s3cr3t-token" not in r.text
    finally:
        private.stop()


def test_an_upstream_that_is_down_is_a_502_and_the_next_request_tries_again(server: Server,
                                                                            tmp_path: Path) -> None:
    channel = UpstreamChannel(tmp_path / "down")
    channel.add("big", files={"share/big/data.bin": os.urandom(100_000)})
    channel.index()
    channel.start()
    try:
        repo = publish_passive(server, channel, "down-mirror")
        channel.stop()  # nothing listens on its port any more
        started = time.monotonic()
        r = requests.get(f"{repo}/noarch/{BIG}", timeout=30)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
        assert time.monotonic() - started < 5
        no_leftovers(server, sha256_of(channel))
        channel.start()  # back, on the same port
        assert try_download(f"{repo}/noarch/{BIG}") == (200, expected(channel))
    finally:
        channel.stop()


def test_a_slow_upstream_is_a_504_within_the_timeout(tmp_path: Path, up: UpstreamChannel) -> None:
    server = Server(tmp_path / "data", upstream_read_timeout=0.5).start()
    try:
        repo = publish_passive(server, up)
        up.fault(f"noarch/{BIG}", "hold")  # no answer at all
        started = time.monotonic()
        r = requests.get(f"{repo}/noarch/{BIG}", timeout=30)
        took = time.monotonic() - started
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert took < 5
        no_leftovers(server, sha256_of(up))
        up.clear_faults()
        up.fault(f"noarch/{BIG}", "slow", chunk_delay=2.0)  # headers, then stalls mid-body
        status, body = try_download(f"{repo}/noarch/{BIG}")
        assert body is None or len(body) < len(expected(up))
        no_leftovers(server, sha256_of(up))
        up.clear_faults()
        assert try_download(f"{repo}/noarch/{BIG}") == (200, expected(up))
    finally:
        server.stop()


def test_the_timeouts_of_a_served_process_come_from_the_environment(server: Server, up: UpstreamChannel,
                                                                   tmp_path: Path) -> None:
    repo = publish_passive(server, up)
    up.fault(f"noarch/{BIG}", "hold")
    with _serve_process(server.data_dir, CONDA_PLATFORM_UPSTREAM_READ_TIMEOUT="0.5") as (other, _proc):
        started = time.monotonic()
        r = requests.get(f"{repo.replace(server.url, other)}/noarch/{BIG}", timeout=30)
        assert r.status_code == 504 and time.monotonic() - started < 5
    bad = subprocess.run([str(Path(sys.executable).with_name("conda-platform")), "serve", "--data-dir",
                          str(tmp_path / "unused")], env={**os.environ, "CONDA_PLATFORM_UPSTREAM_READ_TIMEOUT": "soon"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "CONDA_PLATFORM_UPSTREAM_READ_TIMEOUT" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


# -- two server processes on one data dir ---------------------------------------------------------


@pytest.fixture
def second_process(server: Server) -> Iterator[str]:
    """The same data dir served by a second, separate server process (its URL)."""
    with _serve_process(server.data_dir) as (url, _proc):
        yield url


@contextlib.contextmanager
def _serve_process(data_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("conda-platform")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        wait_until(lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{port}/api/channels"), timeout=60)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)


def test_two_server_processes_fetch_once(server: Server, up: UpstreamChannel, second_process: str) -> None:
    repo = publish_passive(server, up)
    other = repo.replace(server.url, second_process)
    sha, rel = sha256_of(up), f"noarch/{BIG}"
    gate = up.fault(rel, "hold")

    async def clients() -> list[bytes]:
        async with aiohttp.ClientSession() as session:
            async def one(base: str) -> bytes:
                async with session.get(f"{base}/{rel}") as r:
                    assert r.status == 200
                    return await r.read()

            # the other process leads: its request reaches the upstream first
            theirs = [asyncio.create_task(one(other)) for _ in range(5)]
            while up.hits[rel] < 1:
                await asyncio.sleep(0.01)
            ours = [asyncio.create_task(one(repo)) for _ in range(5)]
            while server.platform.fetcher.waiting[sha] < 5:
                await asyncio.sleep(0.01)
            # our five clients share one follower of the other process's download (one sha256 check)
            assert server.platform.fetcher._downloads[sha].followed
            gate.release()
            return await asyncio.gather(*theirs, *ours)

    bodies = asyncio.run(clients())
    assert len(bodies) == 10 and all(b == expected(up) for b in bodies)
    assert up.hits[rel] == 1
    committed(server, sha)


def test_a_bad_body_fetched_by_another_process_fails_our_clients_too(server: Server, up: UpstreamChannel,
                                                                      second_process: str) -> None:
    repo = publish_passive(server, up)
    sha, rel, size = sha256_of(up), f"noarch/{BIG}", len(expected(up))
    fault = up.fault(rel, "wrong", wait=True)

    async def clients() -> list[bytes | None]:
        async with aiohttp.ClientSession() as session:
            async def one(base: str) -> bytes | None:
                try:
                    async with session.get(f"{base}/{rel}") as r:
                        return await r.read() if r.status == 200 else None
                except aiohttp.ClientError:
                    return None

            theirs = asyncio.create_task(one(repo.replace(server.url, second_process)))
            while up.hits[rel] < 1:
                await asyncio.sleep(0.01)
            ours = [asyncio.create_task(one(repo)) for _ in range(3)]
            while server.platform.fetcher.waiting[sha] < 3:
                await asyncio.sleep(0.01)
            fault.release()
            return await asyncio.gather(theirs, *ours)

    for body in asyncio.run(clients()):
        assert body is None or len(body) < size  # nobody completes a download of the wrong bytes
    # (our clients that had got nothing yet may have started the download again, which failed too)
    assert up.hits[rel] in (1, 2)
    no_leftovers(server, sha)
    up.clear_faults()
    assert try_download(f"{repo}/{rel}") == (200, expected(up))


def test_a_leader_process_that_dies_is_taken_over(server: Server, up: UpstreamChannel) -> None:
    repo = publish_passive(server, up)
    sha, rel = sha256_of(up), f"noarch/{BIG}"
    gate = up.fault(rel, "hold")
    with _serve_process(server.data_dir) as (other, proc), concurrent.futures.ThreadPoolExecutor(4) as pool:
        pool.submit(try_download, f"{repo.replace(server.url, other)}/{rel}")
        wait_until(lambda: up.hits[rel] == 1)  # the other process leads, and waits for the upstream
        ours = [pool.submit(try_download, f"{repo}/{rel}") for _ in range(3)]
        wait_until(lambda: server.platform.fetcher.waiting[sha] == 3)
        proc.kill()  # its flock goes with it; its part file stays behind
        proc.wait(30)
        gate.release()
        assert [f.result(60) for f in ours] == [(200, expected(up))] * 3
    assert up.hits[rel] == 2  # one of our clients started the download again
    committed(server, sha)


def test_start_up_removes_what_dead_downloads_left(server: Server, up: UpstreamChannel) -> None:
    """A process killed mid-download leaves its lock file (flock released) and its part file."""
    sha = sha256_of(up)
    part = server.data_dir / "blobs" / "tmp" / "upload-dead"
    part.write_bytes(b"half a package")
    (server.data_dir / "cache" / "inflight" / f"{sha}.lock").write_text(part.name)
    server.restart()
    assert in_flight(server) == []


def test_ensure_blob_waits_for_another_process(server: Server, up: UpstreamChannel, second_process: str) -> None:
    repo = publish_passive(server, up)
    sha, rel, size = sha256_of(up), f"noarch/{BIG}", len(expected(up))
    gate = up.fault(rel, "hold")
    theirs = requests.Session()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        their_download = pool.submit(lambda: theirs.get(f"{repo.replace(server.url, second_process)}/{rel}",
                                                        timeout=60))
        wait_until(lambda: up.hits[rel] == 1)  # the other process leads
        ours = asyncio.run_coroutine_threadsafe(
            server.platform.fetcher.ensure_blob(f"{up.url}/{rel}", sha, size), server._loop)
        wait_until(lambda: server.platform.fetcher.waiting[sha] == 1)
        assert not ours.done()
        gate.release()
        ours.result(60)
        assert their_download.result().content == expected(up)
    assert up.hits[rel] == 1 and server.platform.blobs.path(sha).read_bytes() == expected(up)


# -- a real conda client ---------------------------------------------------------------------------


def test_rattler_installs_through_a_passive_channel(server: Server, up: UpstreamChannel, repo: str,
                                                    tmp_path: Path) -> None:
    def install(n: int) -> Path:
        prefix = tmp_path / f"env{n}"

        async def go() -> None:
            records = await rattler.solve([repo], ["appb"], platforms=["linux-64", "noarch"],
                                          gateway=rattler.Gateway(cache_dir=tmp_path / f"rd{n}"))
            await rattler.install(records, prefix, cache_dir=tmp_path / f"pkgs{n}", show_progress=False)

        asyncio.run(go())
        return prefix

    prefix = install(1)
    assert (prefix / "share/liba/a.txt").read_bytes() == b"two"
    assert (prefix / "bin/appb").read_bytes().startswith(b"#!/bin/sh")
    fetched = {k: v for k, v in up.hits.items() if k.endswith((".conda", ".tar.bz2"))}
    assert fetched == {"noarch/liba-2.0-0.conda": 1, "linux-64/appb-1.0-0.tar.bz2": 1}
    prefix = install(2)  # a second client, cold caches: served without touching the upstream
    assert (prefix / "share/liba/a.txt").read_bytes() == b"two"
    assert {k: v for k, v in up.hits.items() if k.endswith((".conda", ".tar.bz2"))} == fetched
    assert not any(k.endswith("repodata.json") for k in up.hits)  # indexes come from the server alone
