"""Publish benchmark: render a conda-forge-sized subdir, then publish single uploads into it.

    python bench/bench_publish.py                      # SQLite in a temp data dir under bench/out/
    python bench/bench_publish.py --database-url postgres          # a throwaway PostgreSQL (tests/pg.py)
    python bench/bench_publish.py --database-url postgresql+asyncpg://user@host/db

(a) Full render. 500,000 linux-64 records (``make-big-repodata``, cached in bench/out/) are loaded
    as file rows of one channel in one new generation (setup, not measured), then
    ``Publisher.publish`` of that generation is measured: wall time and peak RSS above the start.
    Baseline, measured in the same run: ``orjson.dumps`` of the same repodata dict + zstd of the
    bytes with the renderer's own settings (``render.index_compressor()``: level 1, one thread per
    core), i.e. the least any renderer must do to produce repodata.json and .zst.
    Goals: ≤ 3× the baseline's time; peak RSS ≤ 2× the size of repodata.json.
(b) Incremental publish: one real upload (a package built with tests/builders.py) into that subdir
    through ``Platform.ingest``, timed from the bytes arriving to the new generation published.
    Twice: a new name, then a new version of an existing name. Goal: ≤ 0.5 s each.

``cpu_s`` is the CPU time of the publishing process (all its threads) in the measured part: the
machine has 2 cores shared with other work, so wall times above ``cpu_s`` / 2 are time spent waiting
for a core (the table's title gives the load average).

The setup (JSON parse, row insert, baseline) runs in a child process so that the publish starts in
a process whose RSS holds no parsed repodata: its peak RSS delta is the publish's own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import msgpack  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import zstandard  # noqa: E402

from bench.harness import MB, PeakRSS, print_table  # noqa: E402
from proxy.config import Config  # noqa: E402
from proxy.ingest import Received  # noqa: E402
from proxy.platform import Platform  # noqa: E402
from proxy.store.channels import ChannelStore  # noqa: E402
from proxy.store.db import Database  # noqa: E402
from proxy.store.render import INDEX_ZSTD_LEVEL, index_compressor  # noqa: E402
from proxy.store.tables import channels, files  # noqa: E402

OUT = ROOT / "bench" / "out"
MAKE_BIG = ROOT.parent / "shared" / "tools" / "make-big-repodata"
SUBDIR = "linux-64"
INSERT_BATCH = 5000
GOAL_TIME_RATIO = 3.0
GOAL_RSS_RATIO = 2.0
GOAL_INCREMENTAL_S = 0.5


def big_repodata(records: int) -> Path:
    """The synthetic repodata.json, generated once and cached in bench/out/ (gitignored)."""
    out = OUT / f"big{records}"
    path = out / SUBDIR / "repodata.json"
    if not path.is_file():
        print(f"generating {records:,} records with {MAKE_BIG.name} (cached in {out}) …", flush=True)
        subprocess.run([sys.executable, str(MAKE_BIG), "--records", str(records), "--subdir", SUBDIR,
                        "--out", str(out)], check=True)
    return path


def _row(cid: int, gen: int, now: float, fn: str, rec: dict) -> dict:
    return {
        "channel_id": cid, "type": "conda", "subdir": SUBDIR, "filename": fn, "name": rec["name"],
        "version": str(rec.get("version", "")), "build": str(rec.get("build", "")),
        "sha256": rec.get("sha256") or "", "md5": rec.get("md5") or "", "size": int(rec.get("size") or 0),
        "record": orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), "license": str(rec.get("license") or ""),
        "summary": "", "uploaded_at": now, "added_gen": gen,
    }


# --------------------------------------------------------------------------- setup (child process)


async def _setup(args: argparse.Namespace) -> dict:
    """Load the records as file rows of a new channel (one generation); measure the baseline."""
    path = Path(args.repodata)
    json_size = path.stat().st_size
    t0 = time.perf_counter()
    doc = orjson.loads(path.read_bytes())
    parse_s = time.perf_counter() - t0

    # Baseline: the least work that produces repodata.json + .zst from records in memory.
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        raw = orjson.dumps(doc)
        t1 = time.perf_counter()
        zst = index_compressor().compress(raw)
        t2 = time.perf_counter()
    baseline = {"dumps_s": t1 - t0, "zstd_s": t2 - t1, "rss_delta_mb": mem.delta_mb,
                "json_mb": len(raw) / MB, "zst_mb": len(zst) / MB}
    del raw, zst

    config = Config(data_dir=Path(args.data_dir), database_url=args.database_url)
    platform = await Platform.open(config)
    try:
        ch = await platform.create_channel(args.channel)
        t0 = time.perf_counter()
        now = time.time()
        count = 0
        async with platform.db.write() as conn:
            gen = await ChannelStore.new_generation(conn, ch.id, "bench: load 500k records")
            batch: list[dict] = []
            for section in ("packages", "packages.conda"):
                for fn, rec in doc.get(section, {}).items():
                    batch.append(_row(ch.id, gen, now, fn, rec))
                    if len(batch) >= INSERT_BATCH:
                        await conn.execute(files.insert(), batch)
                        count += len(batch)
                        batch = []
            if batch:
                await conn.execute(files.insert(), batch)
                count += len(batch)
        if platform.db.engine.dialect.name == "postgresql":
            # What autovacuum does within a minute of a bulk insert; SQLite gets no statistics, as in
            # a real deployment, whose database never runs ANALYZE.
            async with platform.db.write() as conn:
                await conn.execute(sa.text("ANALYZE files"))
        load_s = time.perf_counter() - t0
    finally:
        await platform.close()
    return {"channel_id": ch.id, "gen": gen, "records": count, "json_size": json_size, "parse_s": parse_s,
            "load_s": load_s, "baseline": baseline}


# --------------------------------------------------------------------------- measured part


def _received(platform: Platform, package: Path) -> Received:
    writer = platform.blobs.writer(platform.config.max_upload_bytes)
    with open(package, "rb") as f:
        while chunk := f.read(1 << 20):
            writer.write(chunk)
    return Received(package.name, writer.finish())


async def _shard_has(platform: Platform, cid: int, gen: int, name: str, filename: str) -> bool:
    """Is ``filename`` in the CEP-16 shard of ``name`` in the rendered generation?"""
    dctx = zstandard.ZstdDecompressor()
    index_path = platform.publisher.subdir_dir(cid, SUBDIR, gen) / "repodata_shards.msgpack.zst"
    index = msgpack.unpackb(dctx.decompress(index_path.read_bytes()))
    digest = index["shards"].get(name)
    if digest is None:
        return False
    data = await platform.publisher.shard(cid, SUBDIR, gen, digest.hex())
    if data is None or hashlib.sha256(data).digest() != digest:
        return False
    shard = msgpack.unpackb(dctx.decompress(data))
    return filename in shard["packages.conda"] or filename in shard["packages"]


async def _published_gen(platform: Platform, cid: int) -> int:
    async with platform.db.read() as conn:
        return (await conn.execute(sa.select(channels.c.published_gen).where(channels.c.id == cid))).scalar_one()


async def _measure(args: argparse.Namespace, setup: dict) -> list[dict]:
    from builders import build_conda_package

    cid, gen = setup["channel_id"], setup["gen"]
    config = Config(data_dir=Path(args.data_dir), database_url=args.database_url)
    # Not Platform.open(): its crash recovery would publish the loaded generation before we measure.
    platform = Platform(config, await Database.open(config.database_url))
    rows: list[dict] = []
    try:
        gc.collect()
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            published = await platform.publisher.publish(cid)
            full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert published == gen, (published, gen)
        rendered = platform.publisher.subdir_dir(cid, SUBDIR, gen)
        size = (rendered / "repodata.json").stat().st_size
        base = setup["baseline"]
        base_s = base["dumps_s"] + base["zstd_s"]
        json_size = setup["json_size"]
        rows.append({
            "what": f"full publish, {setup['records']:,} records",
            "seconds": full_s,
            "baseline_s": base_s,
            "x_baseline": full_s / base_s,
            "cpu_s": full_cpu,
            "goal": f"≤ {GOAL_TIME_RATIO:g}× baseline",
            "time_ok": "yes" if full_s <= GOAL_TIME_RATIO * base_s else "NO",
            "rss_delta_mb": mem.delta_mb,
            "rss_goal_mb": round(GOAL_RSS_RATIO * json_size / MB, 1),
            "rss_ok": "yes" if mem.delta_mb * MB <= GOAL_RSS_RATIO * json_size else "NO",
        })
        print(f"rendered repodata.json: {size / MB:.1f} MB (input {json_size / MB:.1f} MB), "
              f"repodata.json.zst: {(rendered / 'repodata.json.zst').stat().st_size / MB:.1f} MB", flush=True)

        # The publish listeners' background work (the dependents index of 500,000 records) belongs to
        # the full publish: timed here, and finished before the uploads are timed.
        t0 = time.perf_counter()
        await platform.dependents.drain()
        print(f"background after the full publish (dependents index): {time.perf_counter() - t0:.1f} s", flush=True)

        # (b) incremental: real packages, built before the clock starts
        pkg_dir = Path(tempfile.mkdtemp(prefix="pkgs-", dir=args.data_dir))
        uploads = [
            ("new name", build_conda_package(pkg_dir, "bench-incremental", "1.0", "h0_0", subdir=SUBDIR)),
            ("new version of numpy", build_conda_package(pkg_dir, "numpy", "99.0", "py312h0_0", subdir=SUBDIR,
                                                          depends=["python >=3.12"])),
        ]
        channel_name = args.channel
        for label, package in uploads:
            before_gen = await _published_gen(platform, cid)
            before_size = (platform.publisher.subdir_dir(cid, SUBDIR, before_gen) / "repodata.json").stat().st_size
            t0, c0 = time.perf_counter(), time.process_time()
            received = await asyncio.to_thread(_received, platform, package)
            result = await platform.ingest(channel_name, [received], expect_subdir=SUBDIR)
            inc_s, inc_cpu = time.perf_counter() - t0, time.process_time() - c0
            await platform.dependents.drain()  # its few-ms update, outside the timed publish
            new_gen = await _published_gen(platform, cid)
            assert new_gen == result["generation"] == before_gen + 1, (new_gen, result["generation"], before_gen)
            after = platform.publisher.subdir_dir(cid, SUBDIR, new_gen) / "repodata.json"
            name = result["files"][0].name
            present = await _shard_has(platform, cid, new_gen, name, package.name)
            grew = after.stat().st_size - before_size
            rows.append({
                "what": f"upload → published ({label})",
                "seconds": inc_s,
                "cpu_s": inc_cpu,
                "goal": f"≤ {GOAL_INCREMENTAL_S:g} s",
                "time_ok": "yes" if inc_s <= GOAL_INCREMENTAL_S else "NO",
                "verified": f"in shard, +{grew} B" if present and grew > 0 else f"FAILED (shard {present}, +{grew} B)",
            })
    finally:
        await platform.close()
    return rows


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL (an empty database is best), or 'postgres' to start a throwaway "
                             "PostgreSQL; default: SQLite in the data dir")
    parser.add_argument("--work-dir", default=str(OUT),
                        help="where the run's data dir is made (default bench/out/); e.g. /dev/shm to take the "
                             "disk out of the figures")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (WORK_DIR/publish-*)")
    parser.add_argument("--setup", help=argparse.SUPPRESS)  # internal: run the setup child with these args
    args = parser.parse_args()

    if args.setup:  # child process
        child = argparse.Namespace(**json.loads(args.setup))
        print(json.dumps(asyncio.run(_setup(child))), flush=True)
        return 0

    repodata = big_repodata(args.records)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="publish-", dir=work))
    with ExitStack() as stack:
        if args.database_url == "postgres":
            from pg import create_database_sync, postgres_unavailable_reason, start_postgres

            reason = postgres_unavailable_reason()
            if reason:
                print(f"PostgreSQL unavailable: {reason}")
                return 1
            server = stack.enter_context(start_postgres(data_dir / "pg"))
            args.database_url = create_database_sync(server, f"bench_{uuid.uuid4().hex[:8]}")
        db_label = "SQLite" if not args.database_url else args.database_url.split(":")[0]
        run = {"repodata": str(repodata), "data_dir": str(data_dir), "database_url": args.database_url,
               "channel": f"bench-{uuid.uuid4().hex[:8]}"}
        print(f"setup: parsing {repodata.stat().st_size / MB:.0f} MB, baseline, loading rows into {db_label} …",
              flush=True)
        out = subprocess.run([sys.executable, __file__, "--setup", json.dumps(run)], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        setup = json.loads(out.strip().splitlines()[-1])
        b = setup["baseline"]
        print(f"setup: parse {setup['parse_s']:.1f} s, {setup['records']:,} rows loaded in {setup['load_s']:.1f} s; "
              f"baseline orjson.dumps {b['dumps_s']:.2f} s + zstd {b['zstd_s']:.2f} s (level {INDEX_ZSTD_LEVEL}, "
              f"multi-threaded: the renderer's settings) "
              f"({b['json_mb']:.0f} MB → {b['zst_mb']:.0f} MB, RSS +{b['rss_delta_mb']:.0f} MB)", flush=True)
        try:
            rows = asyncio.run(_measure(argparse.Namespace(**run), setup))
        finally:
            if not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
        where = f"{db_label}, data dir in {work}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        print_table(f"Full publish ({where}): {setup['records']:,} records in {SUBDIR}", rows[:1])
        print_table(f"Incremental publish ({where}): one upload into that subdir", rows[1:])
        failed = [r["what"] for r in rows if "NO" in (r.get("time_ok"), r.get("rss_ok"))
                  or str(r.get("verified", "")).startswith("FAILED")]
        if failed:
            print("goals missed: " + "; ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
