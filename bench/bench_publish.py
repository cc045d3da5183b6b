"""Publish benchmark: render a conda-forge-sized subdir, then publish single uploads into it.

    python bench/bench_publish.py                      # SQLite in a temp data dir under bench/out/
    python bench/bench_publish.py --database-url postgres          # a throwaway PostgreSQL (tests/pg.py)
    python bench/bench_publish.py --database-url postgresql+asyncpg://user@host/db

(a) Full render. 500,000 linux-64 records (``make-big-repodata``, cached in bench/out/) are loaded
    as file rows of one channel in one new generation (setup, not measured), then
    ``Publisher.publish`` of that generation is measured: wall time and peak RSS above the start
    (this process's, plus the peak of its child processes: a big full render makes its shards in a
    worker process). Baseline: ``orjson.dumps`` of the same repodata dict + zstd of the bytes with
    the renderer's own settings (``render.index_compressor()``: level 1, one thread per core), i.e.
    the least any renderer must do to produce repodata.json and .zst.
    Goals: ≤ 3× the baseline's time; peak RSS ≤ 2× the size of repodata.json.
    Beside them, each round measures the floor under any renderer that reads its records from the
    row store (``store_read_x``): reading the subdir's (name, filename, record) rows in name order
    through the plain driver, with nothing done to them, as a multiple of the same round's baseline.
(b) Incremental publish: one real upload (a package built with tests/builders.py) into that subdir
    through ``Platform.ingest``, timed from the bytes arriving to the new generation published:
    a new name, and a new version of an existing name. Goal: ≤ 0.5 s each.

The machine is shared and noisy, so both are measured ``--rounds`` times (default 3), the baseline
interleaved with the full publishes (each round: baseline, then a full publish of the same
generation from scratch: published pointer, render rows and index files reset before the clock
starts); the tables show medians, with every round's figure beside them.

``cpu_s`` is the CPU time of the publishing process (all its threads) in the measured part: the
machine has 2 cores shared with other work, so wall times above ``cpu_s`` / 2 are time spent waiting
for a core (the table's title gives the load average).

The setup (JSON parse, row insert) runs in a child process so that the publish starts in a process
whose RSS holds no parsed repodata: its peak RSS delta is the publish's own. That child stays alive,
holding the parsed records, and measures the baseline whenever asked (one line on its stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, closing, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import msgpack  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import zstandard  # noqa: E402

from bench.harness import MB, PeakRSS, _rss_of, print_table  # noqa: E402
from proxy.config import Config  # noqa: E402
from proxy.ingest import Received  # noqa: E402
from proxy.platform import Platform  # noqa: E402
from proxy.store.channels import ChannelStore  # noqa: E402
from proxy.store.db import Database  # noqa: E402
from proxy.store.render import INDEX_ZSTD_LEVEL, index_compressor, shard_entry  # noqa: E402
from proxy.store.tables import channels, files, renders  # noqa: E402

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
    """A file row as ingest stores it (with its shard entry: files.with_shard_entry)."""
    record = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
    entry, timestamp = shard_entry(record)
    return {
        "channel_id": cid, "type": "conda", "subdir": SUBDIR, "filename": fn, "name": rec["name"],
        "version": str(rec.get("version", "")), "build": str(rec.get("build", "")),
        "sha256": rec.get("sha256") or "", "md5": rec.get("md5") or "", "size": int(rec.get("size") or 0),
        "record": record, "license": str(rec.get("license") or ""),
        "summary": "", "uploaded_at": now, "added_gen": gen, "shard_entry": entry, "record_ts": timestamp,
    }


# --------------------------------------------------------------------------- setup (child process)


def _baseline(doc: dict) -> dict:
    """The least work that produces repodata.json + .zst from records in memory."""
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        raw = orjson.dumps(doc)
        t1 = time.perf_counter()
        zst = index_compressor().compress(raw)
        t2 = time.perf_counter()
    return {"dumps_s": t1 - t0, "zstd_s": t2 - t1, "rss_delta_mb": mem.delta_mb,
            "json_mb": len(raw) / MB, "zst_mb": len(zst) / MB}


async def _setup(args: argparse.Namespace, doc: dict) -> dict:
    """Load the records as file rows of a new channel (one generation)."""
    json_size = Path(args.repodata).stat().st_size
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
    return {"channel_id": ch.id, "gen": gen, "records": count, "json_size": json_size, "load_s": load_s}


def _setup_child(args: argparse.Namespace) -> None:
    """The setup, then a baseline for each line read from stdin (until EOF), one JSON line each."""
    t0 = time.perf_counter()
    doc = orjson.loads(Path(args.repodata).read_bytes())
    parse_s = time.perf_counter() - t0
    print(json.dumps({**asyncio.run(_setup(args, doc)), "parse_s": parse_s}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(_baseline(doc)), flush=True)


class _Baselines:
    """The setup child, asked for one baseline at a time (interleaved with our measurements)."""

    def __init__(self, run: dict):
        self.proc = subprocess.Popen([sys.executable, __file__, "--setup", json.dumps(run)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.setup = json.loads(self._line())

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the setup process ended ({self.proc.wait()})")
        return line

    def measure(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("baseline\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


class _ChildrenPeakRSS:
    """Peak of the summed RSS of this process's child processes (the shard worker) while running."""

    def __init__(self, exclude: int, interval: float = 0.005):
        self.exclude, self.interval, self.peak = exclude, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            with suppress(OSError):  # a thread that just ended
                pids += [int(p) for p in (task / "children").read_text().split()]
        return [p for p in pids if p != self.exclude]

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_rss_of(p) or 0 for p in self._children()))
            self._stop.wait(self.interval)

    def __enter__(self) -> _ChildrenPeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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


async def _store_read(platform: Platform, cid: int, gen: int) -> float:
    """The floor under any renderer that reads the records from the row store: the time to read
    the subdir's (name, filename, record) rows in name order through the plain driver, as the
    full render does (SQLite: its own read-only connection; PostgreSQL: an asyncpg cursor), with
    nothing done to them."""
    from proxy.store.publish import visible_at_unindexed
    from proxy.store.render_worker import BATCH, job_source, sqlite_batches

    query = (sa.select(files.c.name, files.c.filename, files.c.record)
             .where(files.c.channel_id == cid, files.c.subdir == SUBDIR, visible_at_unindexed(gen))
             .order_by(files.c.name, files.c.filename))
    source = job_source(platform.db.engine, query)
    assert source is not None
    t0 = time.perf_counter()
    if "sqlite" in source:
        def read() -> None:
            for _ in sqlite_batches(source["sqlite"], source["sql"], source["params"]):
                pass
        await asyncio.to_thread(read)
    else:
        import asyncpg

        con = await asyncpg.connect(source["postgres"])
        try:
            async with con.transaction(isolation="repeatable_read", readonly=True):
                cursor = await con.cursor(source["sql"], *source["params"])
                while await cursor.fetch(BATCH):
                    pass
        finally:
            await con.close()
    return time.perf_counter() - t0


async def _published_gen(platform: Platform, cid: int) -> int:
    async with platform.db.read() as conn:
        return (await conn.execute(sa.select(channels.c.published_gen).where(channels.c.id == cid))).scalar_one()


async def _reset(platform: Platform, cid: int) -> None:
    """Before a full publish round: nothing of the generation is published or rendered any more."""
    async with platform.db.write() as conn:
        await conn.execute(channels.update().where(channels.c.id == cid).values(published_gen=0))
        await conn.execute(renders.delete().where(renders.c.channel_id == cid))
    shutil.rmtree(platform.publisher.root / str(cid), ignore_errors=True)


def _median_row(rounds: list[dict], keys: tuple[str, ...]) -> dict:
    """The first round's other columns, each key's median, and every round's figure."""
    row = dict(rounds[0])
    for key in keys:
        row[key] = statistics.median(r[key] for r in rounds)
    row["rounds_s"] = " ".join(f"{r['seconds']:.2f}" for r in rounds)
    return row


async def _full_rounds(args: argparse.Namespace, setup: dict, baselines: _Baselines) -> dict:
    cid, gen = setup["channel_id"], setup["gen"]
    config = Config(data_dir=Path(args.data_dir), database_url=args.database_url)
    rounds: list[dict] = []
    for n in range(args.rounds):
        base = baselines.measure()
        # Not Platform.open(): its crash recovery would publish the loaded generation before we measure.
        platform = Platform(config, await Database.open(config.database_url))
        try:
            store_read_s = await _store_read(platform, cid, gen)
            if n:
                await _reset(platform, cid)
                # the dependents index of 500,000 records (10-40 s of background work after each full
                # publish) is built once, after the first round: not again under the next rounds
                platform.publisher.listeners.remove(platform.dependents.published)
            gc.collect()
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            with PeakRSS() as mem, _ChildrenPeakRSS(exclude=baselines.proc.pid) as children:
                t0, c0 = time.perf_counter(), time.process_time()
                published = await platform.publisher.publish(cid)
                full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0
            children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            assert published == gen, (published, gen)
            rendered = platform.publisher.subdir_dir(cid, SUBDIR, gen)
            size = (rendered / "repodata.json").stat().st_size
            if not n:
                print(f"rendered repodata.json: {size / MB:.1f} MB (input {setup['json_size'] / MB:.1f} MB), "
                      f"repodata.json.zst: {(rendered / 'repodata.json.zst').stat().st_size / MB:.1f} MB",
                      flush=True)
                # The publish listeners' background work (the dependents index of 500,000 records)
                # belongs to the full publish: timed here, and finished before anything else is timed.
                t0 = time.perf_counter()
                await platform.dependents.drain()
                print(f"background after the full publish (dependents index): {time.perf_counter() - t0:.1f} s",
                      flush=True)
        finally:
            await platform.close()
        base_s = base["dumps_s"] + base["zstd_s"]
        worker_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        rss = mem.delta_mb + children.peak / MB
        rounds.append({"seconds": full_s, "baseline_s": base_s, "x_baseline": full_s / base_s,
                       "store_read_s": store_read_s, "store_read_x": store_read_s / base_s,
                       "cpu_s": full_cpu, "worker_cpu_s": worker_cpu, "rss_delta_mb": rss})
        print(f"round {n + 1}: full publish {full_s:.2f} s (CPU {full_cpu:.2f} s + worker {worker_cpu:.2f} s), "
              f"baseline {base_s:.2f} s (dumps {base['dumps_s']:.2f} + zstd {base['zstd_s']:.2f}), "
              f"reading the records from the store {store_read_s:.2f} s ({store_read_s / base_s:.1f}x), "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    row = _median_row(rounds, ("seconds", "baseline_s", "x_baseline", "cpu_s", "worker_cpu_s", "rss_delta_mb",
                               "store_read_s", "store_read_x"))
    json_size = setup["json_size"]
    return {
        "what": f"full publish, {setup['records']:,} records (median of {len(rounds)})",
        "seconds": row["seconds"],
        "baseline_s": row["baseline_s"],
        "x_baseline": row["x_baseline"],
        "store_read_x": row["store_read_x"],
        "cpu_s": row["cpu_s"],
        "worker_cpu_s": row["worker_cpu_s"],
        "goal": f"≤ {GOAL_TIME_RATIO:g}× baseline",
        "time_ok": "yes" if row["x_baseline"] <= GOAL_TIME_RATIO else "NO",
        "rss_delta_mb": max(r["rss_delta_mb"] for r in rounds),
        "rss_goal_mb": round(GOAL_RSS_RATIO * json_size / MB, 1),
        "rss_ok": "yes" if max(r["rss_delta_mb"] for r in rounds) * MB <= GOAL_RSS_RATIO * json_size else "NO",
        "rounds_s": row["rounds_s"],
    }


async def _incremental_rounds(args: argparse.Namespace, setup: dict) -> list[dict]:
    from builders import build_conda_package

    cid = setup["channel_id"]
    config = Config(data_dir=Path(args.data_dir), database_url=args.database_url)
    platform = Platform(config, await Database.open(config.database_url))
    try:
        # real packages, built before the clock starts
        pkg_dir = Path(tempfile.mkdtemp(prefix="pkgs-", dir=args.data_dir))
        kinds = {
            "new name": lambda n: build_conda_package(pkg_dir, f"bench-incremental-{n}", "1.0", "h0_0",
                                                      subdir=SUBDIR),
            "new version of numpy": lambda n: build_conda_package(pkg_dir, "numpy", f"99.{n}", "py312h0_0",
                                                                  subdir=SUBDIR, depends=["python >=3.12"]),
        }
        measured: dict[str, list[dict]] = {label: [] for label in kinds}
        for n in range(args.rounds):
            for label, build in kinds.items():
                package = build(n)
                before_gen = await _published_gen(platform, cid)
                before = platform.publisher.subdir_dir(cid, SUBDIR, before_gen) / "repodata.json"
                before_size = before.stat().st_size
                t0, c0 = time.perf_counter(), time.process_time()
                received = await asyncio.to_thread(_received, platform, package)
                result = await platform.ingest(args.channel, [received], expect_subdir=SUBDIR)
                inc_s, inc_cpu = time.perf_counter() - t0, time.process_time() - c0
                await platform.dependents.drain()  # its few-ms update, outside the timed publish
                new_gen = await _published_gen(platform, cid)
                assert new_gen == result["generation"] == before_gen + 1, (new_gen, result["generation"], before_gen)
                after = platform.publisher.subdir_dir(cid, SUBDIR, new_gen) / "repodata.json"
                present = await _shard_has(platform, cid, new_gen, result["files"][0].name, package.name)
                grew = after.stat().st_size - before_size
                measured[label].append({
                    "seconds": inc_s, "cpu_s": inc_cpu,
                    "verified": f"in shard, +{grew} B" if present and grew > 0 else
                                f"FAILED (shard {present}, +{grew} B)",
                })
        rows = []
        for label, rounds in measured.items():
            row = _median_row(rounds, ("seconds", "cpu_s"))
            failed = [r["verified"] for r in rounds if r["verified"].startswith("FAILED")]
            rows.append({
                "what": f"upload → published ({label}; median of {len(rounds)})",
                "seconds": row["seconds"],
                "cpu_s": row["cpu_s"],
                "goal": f"≤ {GOAL_INCREMENTAL_S:g} s",
                "time_ok": "yes" if row["seconds"] <= GOAL_INCREMENTAL_S else "NO",
                "rounds_s": row["rounds_s"],
                "verified": failed[0] if failed else rounds[0]["verified"],
            })
        return rows
    finally:
        await platform.close()


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
    parser.add_argument("--rounds", type=int, default=3,
                        help="full publishes (each after a baseline) and uploads of each kind; medians are shown")
    parser.add_argument("--setup", help=argparse.SUPPRESS)  # internal: run the setup child with these args
    args = parser.parse_args()

    if args.setup:  # child process
        _setup_child(argparse.Namespace(**json.loads(args.setup)))
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
        print(f"setup: parsing {repodata.stat().st_size / MB:.0f} MB, loading rows into {db_label} …", flush=True)
        baselines = stack.enter_context(closing(_Baselines(run)))
        setup = baselines.setup
        print(f"setup: parse {setup['parse_s']:.1f} s, {setup['records']:,} rows loaded in {setup['load_s']:.1f} s; "
              f"the baseline: orjson.dumps + zstd level {INDEX_ZSTD_LEVEL}, multi-threaded (the renderer's settings)",
              flush=True)
        try:
            measure = argparse.Namespace(**run, rounds=max(1, args.rounds))
            rows = [asyncio.run(_full_rounds(measure, setup, baselines))]
            baselines.close()  # its memory back before the uploads
            rows += asyncio.run(_incremental_rounds(measure, setup))
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
