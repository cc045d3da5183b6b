"""Dependents benchmark: build the reverse dependency index of a 500,000-record channel.

    python bench/bench_dependents.py                   # SQLite in a temp data dir under bench/out/
    python bench/bench_dependents.py --records 100000
    python bench/bench_dependents.py --database-url postgres       # a throwaway PostgreSQL (tests/pg.py)

Setup (not measured): the records of ``make-big-repodata`` (cached in bench/out/, as
bench_publish.py makes them) are loaded as file rows of one channel in one generation, which is
marked published (rendering is bench_publish.py's business).

Measured, in the same run:
- **full build**: ``DependentsIndex.update`` from nothing to that generation — what the publish
  listener does after a mirror's first sync: read the file rows, parse each record's ``depends``,
  write one index row per (file, spec), all in one transaction.
- **in-memory part** of it: ``index_rows`` over the same rows already fetched (parse + name
  extraction, no database).
- **baseline**: a plain ``dict`` reverse index (name → [(filename, spec)]) built from the already
  parsed repodata with ``spec.split()[0]`` — the least any reverse index must do.
- **incremental**: one new file in a new generation, then ``update`` (what each upload costs).
- **query**: ``DependentsIndex.of`` for the name with the most dependents.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.bench_publish import OUT, SUBDIR, _row, big_repodata  # noqa: E402
from bench.harness import PeakRSS, print_table  # noqa: E402
from proxy.store.channels import ChannelStore  # noqa: E402
from proxy.store.db import Database  # noqa: E402
from proxy.store.dependents import DependentsIndex, index_rows, spec_name  # noqa: E402
from proxy.store.tables import channels, files  # noqa: E402


async def _load(db: Database, doc: dict) -> tuple[int, int]:
    """One channel with every record as a file row in one generation, marked published."""
    now = time.time()
    async with db.write() as conn:
        cid = (await conn.execute(channels.insert().values(name="big", created_at=now, updated_at=now)
                                  .returning(channels.c.id))).scalar_one()
        gen = await ChannelStore.new_generation(conn, cid, "bench: load records")
        batch: list[dict] = []
        for section in ("packages", "packages.conda"):
            for fn, rec in doc.get(section, {}).items():
                batch.append(_row(cid, gen, now, fn, rec))
                if len(batch) >= 5000:
                    await conn.execute(files.insert(), batch)
                    batch = []
        if batch:
            await conn.execute(files.insert(), batch)
        await conn.execute(channels.update().where(channels.c.id == cid).values(published_gen=gen, head_gen=gen))
        if db.engine.dialect.name == "postgresql":
            await conn.execute(sa.text("ANALYZE files"))
    return cid, gen


def _baseline(doc: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    index: dict[str, list] = defaultdict(list)
    for section in ("packages", "packages.conda"):
        for fn, rec in doc.get(section, {}).items():
            for spec in rec.get("depends") or ():
                index[spec.split()[0]].append((fn, spec))
    return time.perf_counter() - t0, sum(len(v) for v in index.values())


async def _run(args: argparse.Namespace, database_url: str) -> list[dict]:
    path = big_repodata(args.records)
    doc = orjson.loads(path.read_bytes())
    records = sum(len(doc.get(s, {})) for s in ("packages", "packages.conda"))
    base_s, base_rows = _baseline(doc)
    busiest = Counter(n for s in ("packages", "packages.conda") for rec in doc.get(s, {}).values()
                      for spec in rec.get("depends") or () if (n := spec_name(spec))).most_common(1)[0][0]
    db = await Database.open(database_url)
    try:
        t0 = time.perf_counter()
        cid, gen = await _load(db, doc)
        print(f"setup: {records:,} file rows loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        del doc
        gc.collect()

        async with db.read() as conn:
            fetched = (await conn.execute(sa.select(files.c.id, files.c.subdir, files.c.name, files.c.version,
                                                    files.c.record).where(files.c.channel_id == cid))).all()
        t0 = time.perf_counter()
        parsed = index_rows(cid, fetched)
        parse_s = time.perf_counter() - t0
        del fetched, parsed
        gc.collect()

        index = DependentsIndex(db)
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            written = await index.update(cid)
            full_s, full_cpu = time.perf_counter() - t0, time.process_time() - c0

        async with db.write() as conn:  # one more file, one more generation
            gen2 = await ChannelStore.new_generation(conn, cid, "bench: one upload")
            rec = {"name": "newcomer", "version": "1.0", "build": "0", "build_number": 0,
                   "depends": [busiest, "python >=3.9"], "subdir": SUBDIR}
            await conn.execute(files.insert(), [_row(cid, gen2, time.time(), "newcomer-1.0-0.conda", rec)])
            await conn.execute(channels.update().where(channels.c.id == cid).values(published_gen=gen2))
        t0 = time.perf_counter()
        added = await index.update(cid)
        incr_s = time.perf_counter() - t0
        assert added == 2, added

        t0 = time.perf_counter()
        found = await index.of(cid, busiest)
        query_s = time.perf_counter() - t0
    finally:
        await db.close()
    return [
        {"what": f"full build, {records:,} records", "seconds": full_s, "cpu_s": full_cpu,
         "index_rows": written, "peak_rss_mb": mem.delta_mb, "baseline_s": base_s,
         "x_baseline": full_s / base_s},
        {"what": "  of which parse (no database)", "seconds": parse_s, "index_rows": written,
         "baseline_s": base_s, "x_baseline": parse_s / base_s},
        {"what": "baseline: dict over parsed records", "seconds": base_s, "index_rows": base_rows},
        {"what": "incremental: one new file", "seconds": incr_s, "index_rows": added},
        {"what": f"query: dependents of {busiest}", "seconds": query_s, "index_rows": len(found)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--database-url", default=None, help="'postgres' for a throwaway PostgreSQL, or a URL")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="dependents-", dir=OUT))
        stack.callback(shutil.rmtree, tmp, True)
        url = args.database_url or f"sqlite+aiosqlite:///{tmp / 'platform.db'}"
        if url == "postgres":
            from pg import create_database_sync, start_postgres

            base = stack.enter_context(start_postgres(tmp / "pg"))
            url = create_database_sync(base, "bench_dependents")
        rows = asyncio.run(_run(args, url))
    load = ", ".join(f"{x:.2f}" for x in __import__("os").getloadavg())
    print_table(f"dependents index ({'PostgreSQL' if 'postgres' in url else 'SQLite'}; load average {load})", rows)


if __name__ == "__main__":
    main()
