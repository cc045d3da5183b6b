"""CRAN files fetched through the one on-demand fetcher although their index gives only an MD5sum:
streamed to the first client as they land, one upstream download for all clients and server
processes, a wrong body cut short and never stored, an active run reading each new file once.

The upstream is a real CRAN-style repository on 127.0.0.1 (tests/upstream.py with fault injection
and per-path hit counters); ``big`` is a source package of about 2 MB (random bytes: gzip keeps
them), so that clients get bytes before the upstream has sent them all."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests
from aiohttp import web
from conftest import Api, Server
from rbuilders import _sources, build_r_source, description, write_cran_repo, write_tar_gz
from test_cran_mirror import BASE, mirror, wait_run
from test_mirror_fetch import _serve_process, in_flight, wait_until
from upstream import UpstreamChannel

from proxy.mirror.fetch import md5_key

MB = 1 << 20
BIG, SMALL = "src/contrib/big_1.0.tar.gz", "src/contrib/rdep_0.2.1.tar.gz"


@pytest.fixture
def cran_up(tmp_path: Path) -> Iterator[UpstreamChannel]:
    pkgs = tmp_path / "pkgs"
    big = write_tar_gz(pkgs / "big_1.0.tar.gz",
                       {**_sources("big", description("big", "1.0")), "big/inst/extdata/data.bin": os.urandom(2 * MB)})
    up = UpstreamChannel(tmp_path / "up", prefix="/cran")
    write_cran_repo(up.root, [big, build_r_source(pkgs, "rdep", "0.2.1")])
    up.start()
    yield up
    up.stop()


@pytest.fixture
def db_server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """These tests run on SQLite and on PostgreSQL."""
    s = Server(tmp_path / "data", database_url).start()
    yield s
    s.stop()


def body(up: UpstreamChannel, rel: str = BIG) -> bytes:
    return (up.root / rel).read_bytes()


def key_of(up: UpstreamChannel, rel: str = BIG) -> str:
    return md5_key(hashlib.md5(body(up, rel)).hexdigest())


def row(api: Api, rel: str = BIG) -> dict:
    return api.get(f"/api/channels/mc/files/cran-src/{rel.rsplit('/', 1)[1]}").json()


def settled(api: Api, up: UpstreamChannel, rel: str = BIG) -> None:
    """The rows learn the real sha256 and size once the blob is committed, which follows the
    response's last bytes (the handler records them then, without another request)."""
    want = body(up, rel)
    wait_until(lambda: (row(api, rel)["sha256"], row(api, rel)["size"]) == (hashlib.sha256(want).hexdigest(),
                                                                            len(want)))


def stored_blobs(server: Server) -> list[Path]:
    return [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"]


def test_the_first_request_is_streamed_as_it_lands(db_server: Server, cran_up: UpstreamChannel) -> None:
    server, api = db_server, Api(db_server)
    mirror(api, cran_up)
    want, url = body(cran_up), f"{server.url}/api/repo/mc/cran/{BIG}"
    assert (row(api)["sha256"], row(api)["size"]) == (key_of(cran_up), 0)  # named by its MD5sum until read
    cran_up.fault(BIG, "slow", chunk_delay=0.02)  # 64 KiB every 20 ms: about 0.7 s for the body
    before = cran_up.bytes_sent
    with requests.get(url, stream=True, timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Length"] == str(len(want))  # the upstream's length
        chunks = r.iter_content(16 * 1024)
        first = next(chunks)
        upstream_sent_at_first_byte = cran_up.bytes_sent - before
        got = first + b"".join(chunks)
    assert upstream_sent_at_first_byte < len(want) / 2 and got == want
    settled(api, cran_up)
    cran_up.clear_faults()
    assert requests.get(url, timeout=30).content == want and cran_up.hits[BIG] == 1
    assert in_flight(server) == []


def test_a_file_fetched_once_serves_every_mirror_of_it(server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    """A mirror made after the download names the file by its MD5 key again: the fetcher knows
    which blob that key turned out to be, so it is served (and its rows settled) with no download."""
    mirror(api, cran_up)
    want = body(cran_up, SMALL)
    assert requests.get(f"{server.url}/api/repo/mc/cran/{SMALL}", timeout=30).content == want
    api.post("/api/channels", 201, json={"name": "later"})
    api.post("/api/channels/later/mirrors", 201, json={"name": "up", "type": "cran", "source_url": cran_up.url,
                                                       "run_now": True})
    wait_until(lambda: (api.get("/api/channels/later/mirrors/up").json()["last_run"] or {}).get("status")
               == "completed")
    theirs = api.get(f"/api/channels/later/files/cran-src/{SMALL.rsplit('/', 1)[1]}").json()
    assert (theirs["sha256"], theirs["size"]) == (key_of(cran_up, SMALL), 0)
    assert requests.get(f"{server.url}/api/repo/later/cran/{SMALL}", timeout=30).content == want
    assert cran_up.hits[SMALL] == 1
    theirs = api.get(f"/api/channels/later/files/cran-src/{SMALL.rsplit('/', 1)[1]}").json()
    assert (theirs["sha256"], theirs["size"]) == (hashlib.sha256(want).hexdigest(), len(want))


#: two different blocks with one MD5 (Wang and Yu's collision, as published by Stevens)
COLLISION = tuple(bytes.fromhex(h) for h in (
    "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b30283e488832571415a"
    "085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0"
    "e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70",
    "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b30283e4888325f1415a"
    "085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0"
    "e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70"))


def colliding(root: Path, tmp_path: Path, data: bytes) -> UpstreamChannel:
    """A CRAN upstream whose rdep file is ``data`` (one of COLLISION), its index giving their md5."""
    up = UpstreamChannel(root, prefix="/cran")
    contrib = write_cran_repo(up.root, [build_r_source(tmp_path / root.name, "rdep", "0.2.1")])
    md5 = hashlib.md5(data).hexdigest()
    text = (contrib / "PACKAGES").read_text().replace(hashlib.md5(body(up, SMALL)).hexdigest(), md5)
    (contrib / "PACKAGES").write_text(text)
    (contrib / "PACKAGES.gz").write_bytes(gzip.compress(text.encode()))
    (up.root / SMALL).write_bytes(data)
    return up.start()


def test_a_file_of_another_upstream_with_the_same_md5_is_its_own(server: Server, api: Api, tmp_path: Path) -> None:
    """MD5 collisions can be made: a blob fetched for one upstream never answers for a row of
    another upstream whose index gives the same md5 (its own bytes are fetched, its rows learn them)."""
    assert COLLISION[0] != COLLISION[1] and len({hashlib.md5(c).hexdigest() for c in COLLISION}) == 1
    one, other = (colliding(tmp_path / name, tmp_path, data) for name, data in zip(("one", "other"), COLLISION))
    try:
        mirror(api, one)
        api.post("/api/channels", 201, json={"name": "later"})
        api.post("/api/channels/later/mirrors", 201, json={"name": "up", "type": "cran", "source_url": other.url,
                                                           "run_now": True})
        wait_until(lambda: (api.get("/api/channels/later/mirrors/up").json()["last_run"] or {}).get("status")
                   == "completed")
        assert requests.get(f"{server.url}/api/repo/mc/cran/{SMALL}", timeout=30).content == COLLISION[0]
        settled(api, one, SMALL)

        def theirs() -> str:
            return api.get(f"/api/channels/later/files/cran-src/{SMALL.rsplit('/', 1)[1]}").json()["sha256"]
        assert theirs() == md5_key(hashlib.md5(COLLISION[1]).hexdigest())  # the other row keeps its key
        assert requests.get(f"{server.url}/api/repo/later/cran/{SMALL}", timeout=30).content == COLLISION[1]
        assert (one.hits[SMALL], other.hits[SMALL]) == (1, 1)
        wait_until(lambda: theirs() == hashlib.sha256(COLLISION[1]).hexdigest())
        assert row(api, SMALL)["sha256"] == hashlib.sha256(COLLISION[0]).hexdigest()  # each row its own
    finally:
        one.stop()
        other.stop()


def test_clients_asking_at_once_share_one_upstream_download(server: Server, api: Api,
                                                            cran_up: UpstreamChannel) -> None:
    mirror(api, cran_up)
    key, url = key_of(cran_up, SMALL), f"{server.url}/api/repo/mc/cran/{SMALL}"
    gate = cran_up.fault(SMALL, "hold")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        asked = [pool.submit(requests.get, url, timeout=60) for _ in range(4)]
        wait_until(lambda: server.platform.fetcher.waiting[key] == 4)  # every client waits for the one download
        gate.release()
        bodies = [f.result().content for f in asked]
    assert bodies == [body(cran_up, SMALL)] * 4 and cran_up.hits[SMALL] == 1


def test_a_wrong_body_cuts_the_client_stores_nothing_and_the_next_request_retries(
        server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    mirror(api, cran_up)
    want, url, key = body(cran_up), f"{server.url}/api/repo/mc/cran/{BIG}", key_of(cran_up)
    cran_up.fault(BIG, "wrong", times=1)  # the last byte flipped: the MD5sum tells, at the very end
    got = bytearray()
    with requests.get(url, stream=True, timeout=60) as r:
        assert r.status_code == 200  # streamed: the headers went out before the body could be checked
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in r.iter_content(64 * 1024):
                got += chunk
    assert 0 < len(got) < len(want)  # cut short, never a complete download of the wrong bytes
    wait_until(lambda: in_flight(server) == [])
    assert stored_blobs(server) == [] and not server.platform.fetcher.present(key, f"{cran_up.url}/{BIG}")
    assert (row(api)["sha256"], row(api)["size"]) == (key, 0)  # the row unchanged
    assert requests.get(url, timeout=60).content == want  # the next asker fetches again
    assert cran_up.hits[BIG] == 2
    settled(api, cran_up)


def test_a_wrong_small_body_is_a_502_before_anything_is_sent(server: Server, api: Api,
                                                            cran_up: UpstreamChannel) -> None:
    """Smaller than what the fetcher holds back until the check: the client gets the error itself."""
    mirror(api, cran_up)
    cran_up.fault(SMALL, "wrong", times=1)
    r = requests.get(f"{server.url}/api/repo/mc/cran/{SMALL}", timeout=30)
    assert r.status_code == 502 and "do not match" in r.json()["error"]["message"]
    assert row(api, SMALL)["sha256"] == key_of(cran_up, SMALL) and stored_blobs(server) == []


def test_two_server_processes_download_once(server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    mirror(api, cran_up)
    want, key = body(cran_up), key_of(cran_up)
    gate = cran_up.fault(BIG, "hold")
    with _serve_process(server.data_dir) as (other, _proc):
        async def clients() -> list[bytes]:
            async with aiohttp.ClientSession() as session:
                async def one(base: str) -> bytes:
                    async with session.get(f"{base}/api/repo/mc/cran/{BIG}") as r:
                        assert r.status == 200
                        return await r.read()

                theirs = [asyncio.create_task(one(other)) for _ in range(3)]  # the other process leads
                while cran_up.hits[BIG] < 1:
                    await asyncio.sleep(0.01)
                ours = [asyncio.create_task(one(server.url)) for _ in range(3)]
                while server.platform.fetcher.waiting[key] < 3:
                    await asyncio.sleep(0.01)
                # ours follow the other process's download (and check its md5 themselves)
                assert server.platform.fetcher.download(key, f"{cran_up.url}/{BIG}").followed
                gate.release()
                return await asyncio.gather(*theirs, *ours)

        assert asyncio.run(clients()) == [want] * 6
    assert cran_up.hits[BIG] == 1
    settled(api, cran_up)


def test_a_follower_in_another_process_streams_too(server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    """The leader names the upstream's Content-Length in its lock file: followers stream as well."""
    mirror(api, cran_up)
    want = body(cran_up)
    cran_up.fault(BIG, "slow", chunk_delay=0.02)
    with _serve_process(server.data_dir) as (other, _proc), concurrent.futures.ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(requests.get, f"{other}/api/repo/mc/cran/{BIG}", timeout=60)  # the other process leads
        wait_until(lambda: cran_up.hits[BIG] == 1)
        before = cran_up.bytes_sent
        with requests.get(f"{server.url}/api/repo/mc/cran/{BIG}", stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["Content-Length"] == str(len(want))
            chunks = r.iter_content(16 * 1024)
            first = next(chunks)
            upstream_sent_at_first_byte = cran_up.bytes_sent - before
            assert server.platform.fetcher.download(key_of(cran_up), f"{cran_up.url}/{BIG}").followed
            got = first + b"".join(chunks)
        assert theirs.result().content == want
    assert upstream_sent_at_first_byte < len(want) / 2 and got == want and cran_up.hits[BIG] == 1
    settled(api, cran_up)


def test_a_wrong_body_led_by_another_process_fails_our_followers(server: Server, api: Api,
                                                                 cran_up: UpstreamChannel) -> None:
    mirror(api, cran_up)
    want, key = body(cran_up), key_of(cran_up)
    fault = cran_up.fault(BIG, "wrong", wait=True)
    with _serve_process(server.data_dir) as (other, _proc):
        async def clients() -> list[bytes | None]:
            async with aiohttp.ClientSession() as session:
                async def one(base: str) -> bytes | None:
                    try:
                        async with session.get(f"{base}/api/repo/mc/cran/{BIG}") as r:
                            return await r.read() if r.status == 200 else None
                    except aiohttp.ClientError:
                        return None

                theirs = asyncio.create_task(one(other))
                while cran_up.hits[BIG] < 1:
                    await asyncio.sleep(0.01)
                ours = [asyncio.create_task(one(server.url)) for _ in range(3)]
                while server.platform.fetcher.waiting[key] < 3:
                    await asyncio.sleep(0.01)
                fault.release()
                return await asyncio.gather(theirs, *ours)

        for got in asyncio.run(clients()):
            assert got is None or len(got) < len(want)  # nobody completes a download of the wrong bytes
    wait_until(lambda: in_flight(server) == [])
    assert stored_blobs(server) == [] and row(api)["sha256"] == key
    cran_up.clear_faults()
    assert requests.get(f"{server.url}/api/repo/mc/cran/{BIG}", timeout=60).content == want


def test_an_active_run_reads_each_new_file_once(db_server: Server, cran_up: UpstreamChannel) -> None:
    server, api = db_server, Api(db_server)
    run = mirror(api, cran_up, mode="active")
    assert run["figures"]["files_done"] == 2 and run["figures"]["bytes_done"] == len(body(cran_up)) + len(
        body(cran_up, SMALL)), run["figures"]
    for rel in (BIG, SMALL):
        assert cran_up.hits[rel] == 1, rel  # one read: downloaded, hashed and stored at once
        assert (row(api, rel)["sha256"], row(api, rel)["size"]) == (hashlib.sha256(body(cran_up, rel)).hexdigest(),
                                                                    len(body(cran_up, rel)))
    again = wait_run(api, "up", api.post(f"{BASE}/up/run", 202).json()["id"])  # nothing new: nothing read
    assert again["status"] == "completed" and again["figures"]["files_present"] == 2, again["figures"]
    assert cran_up.hits[BIG] == 1 and cran_up.hits[SMALL] == 1
    cran_up.stop()  # stored: served without the upstream
    assert requests.get(f"{server.url}/api/repo/mc/cran/{BIG}", timeout=30).content == body(cran_up)


def test_an_active_run_with_a_wrong_body_stores_nothing_of_it(server: Server, api: Api,
                                                             cran_up: UpstreamChannel) -> None:
    api.post("/api/channels", 201, json={"name": "mc"})
    cran_up.fault(BIG, "wrong", times=1)
    api.post(BASE, 201, json={"name": "up", "type": "cran", "mode": "active", "source_url": cran_up.url,
                              "run_now": True})
    run = wait_run(api, "up")
    assert run["status"] == "failed" and "do not match" in run["description"], run
    assert row(api)["sha256"] == key_of(cran_up) and row(api, SMALL)["size"] == len(body(cran_up, SMALL))
    assert [p.name for p in stored_blobs(server)] == [hashlib.sha256(body(cran_up, SMALL)).hexdigest()]
    again = wait_run(api, "up", api.post(f"{BASE}/up/run", 202).json()["id"])  # the next run fetches it
    assert again["status"] == "completed" and cran_up.hits[BIG] == 2 and cran_up.hits[SMALL] == 1
    assert row(api)["sha256"] == hashlib.sha256(body(cran_up)).hexdigest()


class ChunkedUpstream(UpstreamChannel):
    """Sends package bodies chunked, without a Content-Length (as some servers do)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.path.removeprefix(f"{self.prefix}/")
        if not rel.endswith(".tar.gz"):
            return await super()._handle(request)
        self.hits[rel] += 1
        data = (self.root / rel).read_bytes()
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 64 * 1024):
            await resp.write(data[i:i + 64 * 1024])
        await resp.write_eof()
        return resp


def test_a_body_without_content_length_is_served_once_stored(server: Server, api: Api, tmp_path: Path) -> None:
    """No size from the index nor from the upstream: the clients wait for the verified blob."""
    up = ChunkedUpstream(tmp_path / "chunked", prefix="/cran")
    write_cran_repo(up.root, [build_r_source(tmp_path / "p", "rdep", "0.2.1")])
    up.start()
    try:
        mirror(api, up)
        url, want = f"{server.url}/api/repo/mc/cran/{SMALL}", body(up, SMALL)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            got = [f.result() for f in [pool.submit(requests.get, url, timeout=60) for _ in range(3)]]
        assert [(r.status_code, r.headers["Content-Length"], r.content) for r in got] == \
            [(200, str(len(want)), want)] * 3
        assert up.hits[SMALL] == 1
        settled(api, up, SMALL)
    finally:
        up.stop()


def test_upgrade_names_rows_of_sha256_indexes_by_their_sha256(tmp_path: Path) -> None:
    """Rows the older code wrote for an index with SHA256 lines were named by a stand-in
    (``"0"*32 + md5``, or ``+ md5(url)`` without an MD5sum); migration 0010 names them by the
    index's sha256, which the fetcher then checks, and the file is served."""
    import sqlalchemy as sa

    from proxy.store.tables import files

    pkgs = tmp_path / "pkgs"
    up = UpstreamChannel(tmp_path / "up", prefix="/cran")
    write_cran_repo(up.root, [build_r_source(pkgs, "rdep", "0.2.1")], sha256=True)
    up.start()
    server = Server(tmp_path / "data").start()
    try:
        api = Api(server)
        mirror(api, up)
        want = hashlib.sha256(body(up, SMALL)).hexdigest()
        assert row(api, SMALL)["sha256"] == want  # named by the index's sha256 now
        stand_in = "0" * 32 + hashlib.md5(f"{up.url}/{SMALL}".encode()).hexdigest()

        async def as_before() -> None:
            async with server.platform.db.write() as conn:
                await conn.execute(files.update().where(files.c.type == "cran").values(sha256=stand_in))
                await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0009'"))

        server.call(as_before())
        server.restart()
        api = Api(server)
        assert row(api, SMALL)["sha256"] == want
        r = requests.get(f"{server.url}/api/repo/mc/cran/{SMALL}", timeout=30)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == want
    finally:
        server.stop()
        up.stop()
