"""The shard worker process of big full renders (proxy/store/render_worker.py): a render whose
shards another process makes from the shard entries stored at ingest (and from the records of rows
stored without one, before migration 0007) gives the very bytes of a render that makes them itself
(every index file, the shard pack, the layout) and the same channeldata partials, on SQLite and
PostgreSQL; a worker that fails fails the render and leaves nothing behind."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from builders import build_conda_package
from conftest import Api, Server

from proxy.store.publish import Publisher
from proxy.store.render_worker import ShardWorker, job_source
from proxy.store.tables import files

SUBDIR = "linux-64"


def _upload_mixed(api: Api, tmp_path: Path) -> None:
    """Names with several versions ("1.0" and "1.0.0" are one version), both formats, licenses from
    index.json and none, timestamps and none: one generation."""
    pk = tmp_path / "pk"
    pkgs = []
    for i, name in enumerate(["alpha", "beta", "gamma-lib", "zeta"]):
        for j, version in enumerate(["1.0", "1.0.0", "0.9", "2.0a1"][: 1 + i]):
            for fmt in (".conda", ".tar.bz2"):
                pkgs.append(build_conda_package(pk, name, version, f"h{j}_0", subdir=SUBDIR, fmt=fmt,
                                                license="" if name == "beta" else "MIT",
                                                timestamp=None if i == 2 else 1_700_000_000_000 + 1000 * j))
    api.post("/api/channels", 201, json={"name": "team"})
    api.upload("team", *pkgs)


def _render(server: Server, root: Path, worker: bool) -> tuple[Path, dict]:
    """Render the channel's published generation of SUBDIR in full into ``root``."""
    platform = server.platform
    publisher = Publisher(platform.db, root)
    publisher.shard_worker_names = 0 if worker else 1 << 60
    publisher.shard_worker_load = float("inf")  # whatever the load of the machine running the tests

    async def run() -> tuple[int, dict]:
        async with platform.db.read() as conn:
            cid, gen = (await conn.execute(sa.text("SELECT id, published_gen FROM channels WHERE name='team'"))).one()
            names = set((await conn.execute(sa.select(files.c.name).where(files.c.channel_id == cid))).scalars())
        if worker:  # the worker can read this database: the render below uses it
            assert job_source(platform.db.engine, sa.select(files.c.name)) is not None
        _, partials, _, full = await publisher._render_subdir(cid, SUBDIR, gen, names, None)
        assert full
        return cid, partials, gen

    cid, partials, gen = server.call(run())
    return publisher.subdir_dir(cid, SUBDIR, gen), partials


def test_worker_render_equals_in_process_render(database_url: str | None, tmp_path: Path) -> None:
    server = Server(tmp_path / "data", database_url).start()
    try:
        _upload_mixed(Api(server), tmp_path)

        async def entries() -> dict[str, int]:
            async with server.platform.db.write() as conn:
                # rows stored before migration 0007 have no shard entry: the worker makes theirs
                await conn.execute(files.update().where(files.c.name == "zeta").values(shard_entry=None,
                                                                                        record_ts=None))
                rows = await conn.execute(sa.select(files.c.name, files.c.shard_entry.is_not(None)))
                return {name: stored for name, stored in rows}

        assert server.call(entries()) == {"alpha": True, "beta": True, "gamma-lib": True, "zeta": False}
        ours, ours_partials = _render(server, tmp_path / "worker", worker=True)
        theirs, their_partials = _render(server, tmp_path / "inline", worker=False)
    finally:
        server.stop()
    names = sorted(os.listdir(theirs))
    assert names == sorted(os.listdir(ours))
    assert {"repodata.json", "repodata.json.zst", "current_repodata.json", "shards.pack", "layout.msgpack",
            "repodata_shards.msgpack.zst"} <= set(names)
    different = [n for n in names if not filecmp.cmp(ours / n, theirs / n, shallow=False)]
    assert different == []
    assert ours_partials == their_partials
    # the newest record timestamp of each name, from the worker
    assert (ours_partials["alpha"][4], ours_partials["zeta"][4]) == (1_700_000_000_000, 1_700_000_003_000)
    assert ours_partials["beta"][5] is None and ours_partials["alpha"][5] == "MIT"


def test_a_failing_worker_fails_the_render(tmp_path: Path) -> None:
    import asyncio

    async def run() -> None:
        job = {"sqlite": str(tmp_path / "missing.db"), "sql": "SELECT 1", "params": []}
        worker = await ShardWorker.start(job, 1, tmp_path / "shards.pack")
        await worker.result()

    with pytest.raises(RuntimeError, match="shard worker failed"):
        asyncio.run(run())


def test_a_failing_worker_leaves_no_render_behind(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        _upload_mixed(Api(server), tmp_path)
        root = tmp_path / "broken"
        publisher = Publisher(server.platform.db, root)
        publisher.shard_worker_names = 0
        publisher.shard_worker_load = float("inf")

        async def run() -> None:
            # a stored record that is not JSON, without a shard entry: only the worker parses it, and fails
            async with server.platform.db.write() as conn:
                await conn.execute(files.update().where(files.c.name == "gamma-lib").values(
                    record=b"{not json", shard_entry=None))
            await publisher._render_subdir(1, SUBDIR, 1, {"alpha"}, None)

        with pytest.raises(RuntimeError, match="shard worker failed"):
            server.call(run())
        assert [p for p in root.rglob("*") if p.is_file()] == [], "nothing of the failed render is left"
    finally:
        server.stop()


def test_shards_from_entries_equal_parsed_shards(tmp_path: Path) -> None:
    """Shards joined from stored shard entries (and from records without one) are the bytes of
    shards encoded from parsed records, whatever the map sizes (msgpack fixmap, map16, map32)."""
    import msgspec
    import orjson

    from proxy.store.render import encoded_shard, shard_entry, shard_records

    encode = msgspec.msgpack.Encoder().encode
    for n_tar, n_conda in [(0, 0), (1, 0), (15, 16), (17, 300), (70_000, 1)]:
        records = [(f"a-{i}-0.tar.bz2", orjson.dumps({"name": "a", "sha256": f"{i:064x}", "md5": f"{i:032x}",
                                                    "timestamp": i, "depends": ["b >=1"]})) for i in range(n_tar)]
        records += [(f"a-{i}-0.conda", orjson.dumps({"name": "a", "sha256": "not hex", "timestamp": "12",
                                                   "size": i})) for i in range(n_conda)]
        tar, conda, newest = shard_records([((None, fn), orjson.loads(raw)) for fn, raw in records])
        entries = [(fn, shard_entry(raw)) for fn, raw in records]
        joined = encoded_shard([(fn, e) for fn, (e, _) in entries if not fn.endswith(".conda")],
                               [(fn, e) for fn, (e, _) in entries if fn.endswith(".conda")])
        assert joined == encode({"packages": tar, "packages.conda": conda, "removed": []})
        assert max([ts for _, (_, ts) in entries], default=0) == newest

    # a whole render: rows with entries (and one name without) give the files of a render that parses
    from proxy.store.render import SubdirRenderer

    def render(out: Path, entries: bool) -> Path:
        r = SubdirRenderer(out, 1, SUBDIR, None, full=True, entries=entries)
        for n in range(30):
            name = f"pkg{n:02d}"
            rows = []
            for v, ext in [("1.0", ".conda"), ("1.0.0", ".tar.bz2"), ("0.9", ".conda")][: 1 + n % 3]:
                fn = f"{name}-{v}-h{n}_0{ext}"
                raw = orjson.dumps({"name": name, "version": v, "sha256": f"{n:064x}", "timestamp": n * 1000})
                entry, ts = shard_entry(raw) if n != 7 else (None, None)
                rows.append((name, fn, raw, v, None, float(n), n, "MIT", entry, ts))
            r.feed_name(name, sorted(rows, key=lambda row: row[1]))
        r.finish()
        return out

    joined, parsed = render(tmp_path / "joined", True), render(tmp_path / "parsed", False)
    names = sorted(os.listdir(parsed))
    assert [n for n in names if not filecmp.cmp(joined / n, parsed / n, shallow=False)] == []
