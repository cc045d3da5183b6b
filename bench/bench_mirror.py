"""Mirror benchmark: passive sync of a 500,000-record upstream subdir, then a no-change re-sync.

    python bench/bench_mirror.py                      # SQLite in a temp data dir under bench/out/
    python bench/bench_mirror.py --records 100000     # a smaller subdir
    python bench/bench_mirror.py --database-url postgres   # a throwaway PostgreSQL (tests/pg.py)

The upstream is ``make-big-repodata``'s linux-64 (cached in bench/out/, as bench_publish.py makes
it), compressed once to repodata.json.zst (what real channels serve, and what mirrors prefer),
served by nginx (bench/harness.py) or, without nginx, by a plain aiohttp static server.

(a) Full sync: a passive mirror's first run (fetch .zst, parse, filter, write 500,000 file rows in
    one generation, publish = full render of the subdir). Wall time and peak RSS above the start.
    Goal: ≤ 60 s. Baseline, measured in the same run: download + decompress + orjson.loads of the
    same index — the least any mirror must do before writing anything.
(b) No-change re-sync: the second run; the upstream answers 304. Goal: ≤ 1 s, no new generation.
(c) A typical daily re-sync: the upstream dropped 1,000 records and gained 1,000 new ones (its
    repodata.json.zst is replaced in place). The whole index is fetched and parsed again, but only
    2,000 rows change and the publish is incremental.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import orjson  # noqa: E402
import zstandard  # noqa: E402

from bench.bench_publish import OUT, big_repodata  # noqa: E402
from bench.harness import MB, PeakRSS, Unavailable, free_port, print_table, start_nginx  # noqa: E402
from proxy.config import Config  # noqa: E402
from proxy.platform import Platform  # noqa: E402

GOAL_FULL_S = 60.0
GOAL_NOCHANGE_S = 1.0


def source_dir(records: int) -> Path:
    """bench/out/mirror-src<N>/: linux-64/repodata.json(.zst) and an empty noarch, made once."""
    src = OUT / f"mirror-src{records}"
    zst = src / "linux-64" / "repodata.json.zst"
    if not zst.is_file():
        big = big_repodata(records)
        (src / "linux-64").mkdir(parents=True, exist_ok=True)
        (src / "noarch").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(big, src / "linux-64" / "repodata.json")
        tmp = zst.with_suffix(".tmp")
        with big.open("rb") as fin, tmp.open("wb") as fout:
            zstandard.ZstdCompressor(level=10, threads=-1).copy_stream(fin, fout)
        tmp.replace(zst)
        empty = orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}})
        (src / "noarch" / "repodata.json").write_bytes(empty)
        (src / "noarch" / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(empty))
    return src


CHANGED = 1000


def changed_dir(records: int) -> Path:
    """bench/out/mirror-src<N>-changed/: the source minus CHANGED records plus CHANGED new ones."""
    src = OUT / f"mirror-src{records}-changed"
    zst = src / "linux-64" / "repodata.json.zst"
    if not zst.is_file():
        base = source_dir(records)
        doc = orjson.loads((base / "linux-64" / "repodata.json").read_bytes())
        key = "packages.conda" if len(doc.get("packages.conda", {})) > 2 * CHANGED else "packages"
        part = doc[key]
        names = list(part)
        for fn in names[:CHANGED]:
            del part[fn]
        for i, fn in enumerate(names[CHANGED:2 * CHANGED]):
            rec = dict(part[fn], build=f"bench_{i}", sha256=f"{i:064x}")
            stem, ext = (fn[:-6], ".conda") if fn.endswith(".conda") else (fn[:-8], ".tar.bz2")
            part[f"{stem.rsplit('-', 1)[0]}-bench_{i}{ext}"] = rec
        (src / "linux-64").mkdir(parents=True, exist_ok=True)
        shutil.copytree(base / "noarch", src / "noarch", dirs_exist_ok=True)
        tmp = zst.with_suffix(".tmp")
        tmp.write_bytes(zstandard.ZstdCompressor(level=10, threads=-1).compress(orjson.dumps(doc)))
        tmp.replace(zst)
    return src


@contextlib.contextmanager
def serve(root: Path) -> Iterator[tuple[str, str]]:
    """(base URL, server name): nginx when installed, else an aiohttp static server in a thread."""
    try:
        with start_nginx(root) as url:
            yield url, "nginx"
            return
    except Unavailable:
        pass
    from aiohttp import web

    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_static("/", root)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", "aiohttp static"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


def baseline(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{url}/linux-64/repodata.json.zst") as r:
        body = r.read()
    with zstandard.ZstdDecompressor().stream_reader(body) as reader:
        doc = orjson.loads(reader.read())
    n = len(doc.get("packages", {})) + len(doc.get("packages.conda", {}))
    del doc
    assert n > 0
    return time.perf_counter() - t0


async def measure(url: str, served: Path, args: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="mirror-", dir=args.work_dir))
    rows = []
    try:
        config = Config(data_dir=work / "data", database_url=args.database_url, mirror_tick_interval=0)
        platform = await Platform.open(config)
        await platform.mirrors.engine.start()
        try:
            await platform.create_channel("bench")
            await platform.mirrors.create("bench", {"name": "big", "source_url": url, "subdirs": ["linux-64"]})
            mirror = await platform.mirrors.get("bench", "big")
            for label, goal in (("full sync", GOAL_FULL_S), ("no-change re-sync", GOAL_NOCHANGE_S),
                                (f"changed re-sync (-{CHANGED:,} +{CHANGED:,})", None)):
                if label.startswith("changed"):  # the upstream publishes a new index
                    link = served / "linux-64" / "repodata.json.zst.new"
                    os.link(changed_dir(args.records) / "linux-64" / "repodata.json.zst", link)
                    os.replace(link, served / "linux-64" / "repodata.json.zst")
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    run = await platform.mirrors.engine.start_run(mirror)
                    run = await platform.mirrors.engine.wait(run.id, timeout=3600)
                    took = time.perf_counter() - t0
                assert run.status == "completed", (run.status, run.reason)
                fig = run.figures
                rows.append({"step": label, "records": fig.get("records_published"), "added": fig.get("added"),
                             "removed": fig.get("removed"), "generation": run.generation,
                             "seconds": round(took, 2), "goal_s": goal, "ok": None if goal is None else took <= goal,
                             **mem.figures(),
                             "steps_s": " ".join(f"{k}={v:.1f}" for k, v in fig.get("seconds", {}).items())})
        finally:
            await platform.mirrors.engine.shutdown()
            await platform.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--database-url", default=None, help="a database URL, or 'postgres' for a throwaway one")
    parser.add_argument("--work-dir", default=str(OUT), help="where the temp data dir goes (default bench/out)")
    args = parser.parse_args()
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.database_url == "postgres":
            from pg import create_database_sync, start_postgres

            server_url = stack.enter_context(start_postgres(Path(tempfile.mkdtemp(prefix="pg-", dir=args.work_dir))))
            args.database_url = create_database_sync(server_url, f"bench_{uuid.uuid4().hex[:8]}")
        src = source_dir(args.records)
        changed_dir(args.records)
        served = Path(tempfile.mkdtemp(prefix="mirror-served-", dir=args.work_dir))  # hard links, swapped in (c)
        stack.callback(shutil.rmtree, served, True)
        for sub in ("linux-64", "noarch"):
            (served / sub).mkdir()
            for f in (src / sub).glob("repodata.json.zst"):
                os.link(f, served / sub / f.name)
        url, server = stack.enter_context(serve(served))
        zst_mb = (src / "linux-64" / "repodata.json.zst").stat().st_size / MB
        json_mb = (src / "linux-64" / "repodata.json").stat().st_size / MB
        print(f"upstream: {args.records:,} records, repodata.json {json_mb:.0f} MB, .zst {zst_mb:.0f} MB, "
              f"served by {server}; database: {'PostgreSQL' if args.database_url else 'SQLite'}", flush=True)
        base = baseline(url)
        rows = asyncio.run(measure(url, served, args))
    rows.insert(0, {"step": "baseline: download + decompress + parse", "records": args.records,
                    "seconds": round(base, 2)})
    print_table("passive mirror sync", rows)


if __name__ == "__main__":
    main()
