"""On-demand fetch benchmark: cold downloads through a passive channel beside the upstream itself.

    python bench/bench_fetch.py [--size-mb 50] [--rounds 3] [--concurrent 100] [--concurrent-mb 10]

A real upstream conda channel (tests/upstream.py ``UpstreamChannel``, aiohttp with sendfile) holds
a package with an incompressible ``--size-mb`` payload; the platform server runs in its own process
(``bench_serve.start_server``) over a data dir whose channel ``mirror`` holds the upstream's files
passively (rows with their upstream URL, no blobs: what a passive mirror run leaves).

(i)  cold download of the big package through the server (the server fetches it from the upstream
     while it streams it) beside the same download straight from the upstream, both with curl, in
     alternating rounds (the blob is removed between rounds so every download through the server
     is cold). Goal: ≤ 1.2× the direct time. nginx serving the upstream's files is shown too.
(ii) ``--concurrent`` simultaneous cold requests for one ``--concurrent-mb`` package. Goal:
     exactly one upstream fetch and every download complete and correct (sha256 checked).
(iii) the same, spread over two server processes on the one data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.bench_serve import start_server, stop  # noqa: E402
from bench.harness import MB, Unavailable, print_table, start_nginx  # noqa: E402

OUT = ROOT / "bench" / "out"
GOAL_RATIO = 1.2


def curl(url: str) -> tuple[float, float, int]:
    """(seconds to the first byte, seconds in all, bytes) of one download with curl."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total} "
                          "%{size_download} %{http_code}", url], capture_output=True, text=True, check=True,
                         timeout=600).stdout.split()
    if out[3] != "200":
        raise RuntimeError(f"{url}: HTTP {out[3]}")
    return float(out[0]), float(out[1]), int(out[2])


def prepare(work: Path, size_mb: int, concurrent_mb: int):  # noqa: ANN201 - (UpstreamChannel, {name: path})
    from upstream import UpstreamChannel

    channel = UpstreamChannel(work / "upstream")
    big = channel.add("bench-big", files={"share/bench-big/payload.bin": os.urandom(size_mb * MB)})
    crowd = channel.add("bench-crowd", files={"share/bench-crowd/payload.bin": os.urandom(concurrent_mb * MB)})
    crowd2 = channel.add("bench-crowd2", files={"share/bench-crowd2/payload.bin": os.urandom(concurrent_mb * MB)})
    channel.index()
    channel.start()
    return channel, {"big": big, "crowd": crowd, "crowd2": crowd2}


async def publish_passive(data_dir: Path, channel) -> None:  # noqa: ANN001 - an UpstreamChannel
    """The state a passive mirror run leaves, written before the server starts."""
    from proxy.config import Config
    from proxy.platform import Platform

    platform = await Platform.open(Config(data_dir=data_dir))
    try:
        ch = await platform.create_channel("mirror")
        await platform.files.add(ch, channel.passive_files(("noarch",)), "passive mirror")
        await platform.publisher.publish(ch.id)
    finally:
        await platform.close()


async def crowd(urls: list[str], n: int, sha256: str) -> dict:
    """``n`` simultaneous downloads, spread over ``urls`` in turn."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def one(url: str) -> tuple[bool, float]:
            t0 = time.perf_counter()
            digest = hashlib.sha256()
            try:
                async with session.get(url) as r:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        digest.update(chunk)
                    return r.status == 200 and digest.hexdigest() == sha256, time.perf_counter() - t0
            except aiohttp.ClientError:
                return False, time.perf_counter() - t0

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"complete": sum(ok for ok, _ in results), "wall": wall,
            "p50": statistics.median(t for _, t in results), "max": max(t for _, t in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=50, help="payload of the package for the cold download")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of direct and through-server")
    parser.add_argument("--concurrent", type=int, default=100, help="simultaneous cold requests for one file")
    parser.add_argument("--concurrent-mb", type=int, default=10, help="payload of the package they ask for")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (bench/out/fetch-*)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is not installed: apt-get install curl")
        return 1

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=OUT))
    proc = channel = None
    try:
        channel, pkgs = prepare(work, args.size_mb, args.concurrent_mb)
        asyncio.run(publish_passive(work / "data", channel))
        proc, base, how = start_server(work / "data", work / "server.log")
        print(f"platform server: {how} at {base}; upstream {channel.url}", flush=True)
        blobs = work / "data" / "blobs"
        big = pkgs["big"]
        big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
        size = big.stat().st_size
        through = f"{base}/api/repo/mirror/noarch/{big.name}"
        direct = f"{channel.url}/noarch/{big.name}"

        def rounds(tag: str) -> None:
            """Alternate cold-through-server, warm-through-server and direct downloads."""
            for _ in range(args.rounds):
                (blobs / big_sha[:2] / big_sha).unlink(missing_ok=True)
                ttfb, total, got = curl(through)
                assert got == size, f"through the server: {got} bytes, not {size}"
                figures.setdefault(f"server (cold){tag}", []).append((ttfb, total))
                figures.setdefault(f"server (warm){tag}", []).append(curl(through)[:2])
                figures.setdefault(f"upstream{tag}", []).append(curl(direct)[:2])

        figures: dict[str, list[tuple[float, float]]] = {}
        curl(direct)  # warm the page cache of the upstream's file
        rounds("")
        # an upstream at a link's pace (64 KiB per ms, about 50 MB/s), as most real upstreams are
        channel.fault(f"noarch/{big.name}", "slow", chunk_delay=0.001)
        rounds(", paced upstream")
        channel.clear_faults()
        nginx_reason = None
        try:
            with start_nginx(channel.root) as nginx:
                figures["nginx (upstream files)"] = [curl(f"{nginx}/noarch/{big.name}")[:2]
                                                     for _ in range(args.rounds)]
        except Unavailable as exc:
            nginx_reason = str(exc)

        crowd_pkg = pkgs["crowd"]
        crowd_sha = hashlib.sha256(crowd_pkg.read_bytes()).hexdigest()
        crowd_size = crowd_pkg.stat().st_size
        channel.hits.clear()
        result = asyncio.run(crowd([f"{base}/api/repo/mirror/noarch/{crowd_pkg.name}"], args.concurrent, crowd_sha))
        upstream_fetches = channel.hits[f"noarch/{crowd_pkg.name}"]

        # the same over two server processes on one data dir: still one upstream fetch
        proc2, base2, _ = start_server(work / "data", work / "server2.log")
        try:
            crowd2 = pkgs["crowd2"]
            urls = [f"{b}/api/repo/mirror/noarch/{crowd2.name}" for b in (base, base2)]
            result2 = asyncio.run(crowd(urls, args.concurrent, hashlib.sha256(crowd2.read_bytes()).hexdigest()))
            upstream_fetches2 = channel.hits[f"noarch/{crowd2.name}"]
        finally:
            stop(proc2)
    finally:
        if proc is not None:
            stop(proc)
        if channel is not None:
            channel.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = []
    for label, runs in figures.items():
        base = statistics.median(t for _, t in figures["upstream, paced upstream" if "paced" in label else "upstream"])
        total = statistics.median(t for _, t in runs)
        rows.append({"download": f"{label}, {size / MB:.0f} MB", "first byte ms": round(statistics.median(
            f for f, _ in runs) * 1000, 1), "total s": round(total, 3), "MB/s": round(size / MB / total, 1),
            "× upstream": round(total / base, 2)})
    print_table(f"(i) cold on-demand download, median of {args.rounds} (goal: server cold ≤ {GOAL_RATIO}× upstream)",
                rows)
    if nginx_reason:
        print(f"nginx baseline skipped: {nginx_reason}")
    for tag in ("", ", paced upstream"):
        cold = statistics.median(t for _, t in figures[f"server (cold){tag}"]) / statistics.median(
            t for _, t in figures[f"upstream{tag}"])
        print(f"cold through the server / straight from upstream{tag or ', full loopback speed'}: {cold:.2f}× "
              f"({'meets' if cold <= GOAL_RATIO else 'misses'} the goal of ≤ {GOAL_RATIO}×)")
    print_table(f"(ii) {args.concurrent} simultaneous cold requests for one {args.concurrent_mb} MB file", [{
        "upstream fetches": upstream_fetches, "complete+correct": f"{result['complete']}/{args.concurrent}",
        "wall s": round(result["wall"], 2), "p50 s": round(result["p50"], 2), "max s": round(result["max"], 2),
        "MB/s to clients": round(args.concurrent * crowd_size / MB / result["wall"], 1)}])
    print_table(f"(iii) the same over two server processes on one data dir, {args.concurrent // 2} requests each", [{
        "upstream fetches": upstream_fetches2, "complete+correct": f"{result2['complete']}/{args.concurrent}",
        "wall s": round(result2["wall"], 2), "p50 s": round(result2["p50"], 2), "max s": round(result2["max"], 2),
        "MB/s to clients": round(args.concurrent * crowd_size / MB / result2["wall"], 1)}])
    for label, fetches, res in (("one process", upstream_fetches, result), ("two processes", upstream_fetches2, result2)):
        ok = fetches == 1 and res["complete"] == args.concurrent
        print(f"goal (exactly one upstream fetch, {args.concurrent} complete downloads), {label}: "
              f"{'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
