"""PyPI serving benchmark: project pages and cold wheel fetches, beside proxpi and devpi-server.

    python bench/bench_pypi.py [--projects 200] [--versions 5] [--rounds 3] [--seconds 5] [--concurrency 32]
    python bench/bench_pypi.py --servers ours,proxpi      # a subset
    python bench/bench_pypi.py --ours hosted              # our server as a hosted channel of the same files
    python bench/bench_pypi.py --no-venv                  # proxpi/devpi from this environment
    python bench/bench_pypi.py --work-dir /dev/shm        # the proxies' data on tmpfs

Setup (not measured): ``pypi_upstream.make_upstream`` writes a static PEP 503 index of N tiny
projects × V versions (a wheel with its PEP 658 ``.metadata`` and an sdist per version) plus five
projects of one 20 MB wheel each, cached under bench/out/; nginx (``harness.start_nginx``) serves
it on 127.0.0.1. Three proxies of that SAME upstream are then started, each in its own process with
a fresh data dir:

- ours: ``conda-platform serve`` (``bench_serve.start_server``) with a channel holding a passive
  python mirror of the upstream limited to its projects (run once before measuring: its pages are
  rendered when the run publishes); ``--ours hosted`` uploads the same files instead;
- proxpi: in its own venv (bench/out/venv-proxpi, made by this script from the package index),
  run by gunicorn as its Dockerfile does (``--preload proxpi.server:app``), with the gthread worker
  and 32 threads so that one process serves 32 keep-alive connections like the others;
- devpi-server: in its own venv (bench/out/venv-devpi), ``devpi-init --no-root-pypi`` then
  ``root/pypi`` created as a mirror of the upstream through its REST API (login, PUT).

Measured (the cold fetches first straight from the upstream: their baseline):

(i)   cold project pages: the first GET of each project page, one after another (proxpi and devpi
      fetch it from the upstream; ours serves the page its mirror run rendered): p50/p99;
(ii)  a warm project page, HTML (``Accept: text/html``, what PEP 503 clients and pip < 22.2 send):
      req/s, p50, p99 with ``harness.load`` (32 keep-alive connections, 2 s warm-up, then 5 s),
      the proxy's CPU seconds and its requests per CPU second; the runs of all proxies are
      interleaved over 3 rounds and the median is reported (the machine is shared);
(iii) the same page as PEP 691 JSON (uv's Accept, which current pip's resembles);
(iv)  cold wheel fetches: the first GET of K distinct small wheels (links read from each proxy's
      own project page) and of each 20 MB wheel: time to the full body (redirects followed) and
      to its first byte, sha256 checked against the upstream file; the proxy's CPU time per small wheel;
      then the same small wheels again, from the proxy's cache.

Goal: ours ≥ 1.0× both proxies (req/s; for cold fetches, their time / our time).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.bench_serve import _admin_token, start_server, stop  # noqa: E402
from bench.harness import MB, free_port, load, print_table, start_nginx, wait_for_port  # noqa: E402
from bench.pypi_upstream import Upstream, make_upstream  # noqa: E402

OUT = ROOT / "bench" / "out"
GOAL = 1.0
DIRECT = "upstream, direct"  # the cold fetches without a proxy: their baseline
HTML_HEADERS = {"Accept": "text/html", "Accept-Encoding": "gzip, deflate"}
JSON_HEADERS = {  # what uv sends (pip >= 22.2 sends the same preference order)
    "Accept": "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
    "Accept-Encoding": "gzip, deflate",
}
VENVS = {
    "proxpi": ["proxpi", "gunicorn"],
    "devpi": ["devpi-server"],
}


@dataclass
class Proxy:
    """One running proxy: its process, the URL prefix of its project pages, and how it was set up."""

    name: str
    proc: subprocess.Popen | None  # None: the upstream itself (the cold-fetch baseline)
    simple: str  # ends with "/": simple + "<project>/" is a project page
    version: str
    notes: list[str] = field(default_factory=list)
    mode: str = "proxy"  # ours: "mirror" (pages rendered by its run) or "hosted"


# --------------------------------------------------------------------------- environments


def ensure_venv(name: str, packages: list[str]) -> Path:
    """bench/out/venv-<name> with ``packages`` pip-installed from the package index (made once)."""
    venv = OUT / f"venv-{name}"
    marker = venv / ".bench-installed"
    want = " ".join(packages)
    if not (marker.is_file() and marker.read_text() == want):
        shutil.rmtree(venv, ignore_errors=True)
        print(f"making {venv} ({want}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
                             capture_output=True, text=True, check=False)
        if pip.returncode:
            raise SystemExit(f"pip install {want} into {venv} failed:\n{pip.stdout[-3000:]}{pip.stderr[-3000:]}")
        marker.write_text(want)
    return venv / "bin"


def bin_dir(name: str, use_venv: bool) -> Path:
    """Where the proxy's executables are: its own venv, or this interpreter's (``--no-venv``)."""
    if use_venv:
        return ensure_venv(name, VENVS[name])
    here = Path(sys.executable).parent
    wanted = {"proxpi": "gunicorn", "devpi": "devpi-server"}[name]
    if not (here / wanted).exists():
        raise SystemExit(f"--no-venv: {here / wanted} is missing: pip install {' '.join(VENVS[name])} here, "
                         "or run without --no-venv")
    return here


def dist_version(bindir: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    return subprocess.run([str(bindir / "python"), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd)


# --------------------------------------------------------------------------- the three proxies


def start_proxpi(upstream: str, work: Path, use_venv: bool, workers: int) -> Proxy:
    bindir = bin_dir("proxpi", use_venv)
    port = free_port()
    env = {"PROXPI_INDEX_URL": f"{upstream}/simple/", "PROXPI_CACHE_DIR": str(work / "proxpi-cache"),
           "PROXPI_LOGGING_LEVEL": "WARNING"}
    cmd = [str(bindir / "gunicorn"), "--preload", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
           "--threads", "32", "--workers", str(workers), "proxpi.server:app"]
    proc = _spawn(cmd, work / "proxpi.log", env)
    wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    return Proxy("proxpi", proc, f"http://127.0.0.1:{port}/index/", dist_version(bindir, "proxpi"),
                 [f"gunicorn gthread, {workers} worker(s) × 32 threads"])


def start_devpi(upstream: str, work: Path, use_venv: bool) -> Proxy:
    bindir = bin_dir("devpi", use_venv)
    serverdir = work / "devpi"
    subprocess.run([str(bindir / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi",
                    "--root-passwd", "bench"], check=True, capture_output=True)
    port = free_port()
    proc = _spawn([str(bindir / "devpi-server"), "--serverdir", str(serverdir), "--host", "127.0.0.1",
                   "--port", str(port)], work / "devpi.log")
    wait_for_port("127.0.0.1", port, timeout=120, proc=proc)
    base = f"http://127.0.0.1:{port}"
    http = requests.Session()
    http.headers["Accept"] = "application/json"
    r = http.post(f"{base}/+login", json={"user": "root", "password": "bench"}, timeout=30)
    r.raise_for_status()
    token = r.json()["result"]["password"]
    http.headers["X-Devpi-Auth"] = base64.b64encode(f"root:{token}".encode()).decode()
    r = http.put(f"{base}/root/pypi", json={"type": "mirror", "mirror_url": f"{upstream}/simple/"}, timeout=30)
    r.raise_for_status()
    return Proxy("devpi", proc, f"{base}/root/pypi/+simple/", dist_version(bindir, "devpi-server"),
                 ["waitress, 50 threads (its default)"])


def start_ours(upstream: Upstream, upstream_url: str, work: Path, mode: str) -> Proxy:
    """Our server with channel ``bench``: a passive python mirror of the upstream, or (``hosted``) the same files
    uploaded."""
    proc, base, how = start_server(work / "data", work / "server.log")
    try:
        http = requests.Session()
        token = _admin_token(work / "server.log")
        if token:
            http.headers["Authorization"] = f"Bearer {token}"
        r = http.post(f"{base}/api/channels", json={"name": "bench"}, timeout=60)
        r.raise_for_status()
        setup = setup_our_mirror if mode == "mirror" else setup_our_hosted
        notes = [how, setup(http, base, upstream, upstream_url)]
    except BaseException:
        stop(proc)
        raise
    from importlib.metadata import version

    return Proxy("ours", proc, f"{base}/api/repo/bench/pypi/simple/", version("conda-platform"), notes, mode)


def setup_our_mirror(http: requests.Session, base: str, upstream: Upstream, upstream_url: str) -> str:
    """A passive python mirror of the upstream, limited to its projects, run once; returns a note."""
    t0 = time.perf_counter()
    r = http.post(f"{base}/api/channels/bench/mirrors", timeout=60, json={
        "name": "upstream", "type": "python", "mode": "passive", "source_url": f"{upstream_url}/simple/",
        "projects": upstream.all_projects, "run_now": True})
    if r.status_code >= 400:
        raise SystemExit(f"creating our python mirror failed: {r.status_code} {r.text[:500]}")
    deadline = time.monotonic() + 600
    while True:
        m = http.get(f"{base}/api/channels/bench/mirrors/upstream", timeout=60).json()
        run = m.get("last_run") if not m.get("current_run") else None
        if run and run["status"] in ("completed", "failed", "stopped"):
            break
        if time.monotonic() > deadline:
            raise SystemExit("our python mirror run did not finish in 10 minutes")
        time.sleep(0.25)
    if run["status"] != "completed":
        raise SystemExit(f"our python mirror run {run['status']}: {run.get('reason')}")
    return f"passive python mirror, its first run (setup) {time.perf_counter() - t0:.1f} s"


def setup_our_hosted(http: requests.Session, base: str, upstream: Upstream, upstream_url: str) -> str:
    """The upstream's wheels and sdists uploaded into the channel (no mirror: nothing is fetched cold)."""
    t0 = time.perf_counter()
    paths = sorted(p for p in (upstream.root / "files").rglob("*") if p.suffix in (".whl", ".gz"))
    for i in range(0, len(paths), 100):
        handles = [p.open("rb") for p in paths[i:i + 100]]
        try:
            r = http.post(f"{base}/api/channels/bench/files", timeout=600,
                          files=[("file", (h.name.rsplit("/", 1)[-1], h, "application/octet-stream")) for h in handles])
        finally:
            for h in handles:
                h.close()
        if r.status_code >= 400:
            raise SystemExit(f"uploading to our hosted channel failed: {r.status_code} {r.text[:500]}")
    return (f"HOSTED channel ({len(paths)} files uploaded in {time.perf_counter() - t0:.1f} s): no python mirror; "
            "its 'cold' fetches read local files")


# --------------------------------------------------------------------------- measurements


def timed_get(http: requests.Session, url: str, headers: dict[str, str] | None = None) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    r = http.get(url, headers=headers, timeout=120)
    _ = r.content
    return time.perf_counter() - t0, r


def cold_pages(proxy: Proxy, projects: list[str]) -> dict[str, Any]:
    """First GET of every project page, one after the other (uv's Accept)."""
    http = requests.Session()
    times = []
    for name in projects:
        seconds, r = timed_get(http, f"{proxy.simple}{name}/", JSON_HEADERS)
        r.raise_for_status()
        times.append(seconds)
    times.sort()
    return {"pages": len(times), "p50_ms": round(statistics.median(times) * 1000, 2),
            "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)] * 1000, 2),
            "total_s": round(sum(times), 2)}


def served_type(url: str, headers: dict[str, str]) -> str:
    r = requests.get(url, headers=headers, timeout=60)
    r.raise_for_status()
    return r.headers.get("Content-Type", "?").split(";")[0]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children (gunicorn's workers)."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


async def warm_page(url: str, headers: dict[str, str], args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """Warm-up, then the measured run; adds the proxy's CPU seconds in it and its requests per CPU second."""
    await load(url, concurrency=args.concurrency, duration=min(2.0, args.seconds), headers=headers)  # warm-up
    cpu0 = cpu_seconds(pid)
    res = await load(url, concurrency=args.concurrency, duration=args.seconds, headers=headers)
    res["cpu_s"] = round(cpu_seconds(pid) - cpu0, 2)
    res["req_per_cpu_s"] = round(res["requests"] / res["cpu_s"], 1) if res["cpu_s"] else float("nan")
    return res


def wheel_url(http: requests.Session, page: str, filename: str) -> str:
    """The absolute URL of ``filename`` as linked from a proxy's HTML project page (fragment dropped)."""
    r = http.get(page, headers=HTML_HEADERS, timeout=60)
    r.raise_for_status()
    for href in re.findall(r'href="([^"]+)"', r.text):
        if urlsplit(href).path.rsplit("/", 1)[-1] == filename:
            return urljoin(r.url, href.split("#", 1)[0])
    raise AssertionError(f"{filename} is not linked from {page}")


def fetch_checked(http: requests.Session, url: str, sha256: str) -> tuple[float, int, str, float]:
    """GET ``url`` to the last byte (redirects followed).

    Returns (seconds, bytes, the URL that finally answered, seconds to the first byte of the body).
    """
    t0 = time.perf_counter()
    h = hashlib.sha256()
    size = 0
    first = None
    with http.get(url, stream=True, timeout=300) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            first = first or time.perf_counter()
            h.update(chunk)
            size += len(chunk)
        final = r.url
    seconds = time.perf_counter() - t0
    assert h.hexdigest() == sha256, f"{url}: sha256 {h.hexdigest()} != upstream {sha256}"
    return seconds, size, final, (first or t0) - t0


def cold_wheels(proxy: Proxy, upstream: Upstream, count: int) -> dict[str, Any]:
    """First GET of ``count`` small wheels (one per project, latest version) and of the big wheel.

    ``not_from_proxy`` counts the wheels whose bytes came from another host than the proxy (a link or a
    redirect to the upstream): such a fetch does not measure the proxy.
    """
    http = requests.Session()
    version = f"1.{upstream.versions - 1}.0"
    here = urlsplit(proxy.simple).netloc
    small = []  # (url from the proxy's page, sha256 of the upstream file): pages read before the clock starts
    for name in upstream.projects[-count:]:
        filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        small.append((wheel_url(http, f"{proxy.simple}{name}/", filename), upstream_sha256(upstream, name, filename)))
    times, elsewhere = [], 0
    cpu0 = cpu_seconds(proxy.proc.pid) if proxy.proc is not None else None
    for url, sha256 in small:
        seconds, _, final, _ = fetch_checked(http, url, sha256)
        times.append(seconds)
        elsewhere += urlsplit(final).netloc != here
    times.sort()
    cpu_ms = round((cpu_seconds(proxy.proc.pid) - cpu0) * 1000 / len(times), 1) if cpu0 is not None else None
    time.sleep(1.0)  # the proxy may still be storing the last ones
    cached = sorted(fetch_checked(http, url, sha256)[0] for url, sha256 in small)  # now in the proxy's cache
    big_times, big_first, big_size = [], [], 0
    for project, filename, sha256 in upstream.big:
        url = wheel_url(http, f"{proxy.simple}{project}/", filename)
        seconds, big_size, final, first = fetch_checked(http, url, sha256)
        big_times.append(seconds)
        big_first.append(first)
        elsewhere += urlsplit(final).netloc != here
    time.sleep(1.0)  # the proxy may still be storing the last one (e.g. fsync); a 2nd fetch is a cache hit
    warm_s, *_ = fetch_checked(http, url, sha256)
    big_s = statistics.median(big_times)
    return {"small_n": len(times), "small_p50_ms": round(statistics.median(times) * 1000, 2),
            "small_max_ms": round(times[-1] * 1000, 2), "small_cpu_ms": cpu_ms, "not_from_proxy": elsewhere,
            "small_cached_p50_ms": round(statistics.median(cached) * 1000, 2),
            "big_n": len(big_times), "big_mb": round(big_size / MB), "big_s": round(big_s, 3),
            "big_first_ms": round(statistics.median(big_first) * 1000, 1),
            "big_all_s": " / ".join(f"{t:.2f}" for t in sorted(big_times)),
            "big_mb_s": round(big_size / MB / big_s, 1), "big_warm_s": round(warm_s, 3)}


def upstream_sha256(upstream: Upstream, project: str, filename: str) -> str:
    return hashlib.sha256((upstream.root / "files" / project / filename).read_bytes()).hexdigest()


def measure(proxies: dict[str, Proxy], upstream: Upstream, upstream_url: str,
            args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every figure of every proxy; the warm-page runs interleaved over rounds (medians reported).

    First the same cold fetches straight from the upstream: the baseline of a cold fetch (what any
    proxy must wait for), which also brings the upstream's files into the page cache for all proxies alike.
    """
    direct = Proxy(DIRECT, None, f"{upstream_url}/simple/", "nginx")
    results: dict[str, dict[str, Any]] = {
        DIRECT: {"cold_pages": cold_pages(direct, upstream.all_projects),
                 "cold_wheels": cold_wheels(direct, upstream, args.cold_wheels)}}
    for name, proxy in proxies.items():
        results[name] = {"cold_pages": cold_pages(proxy, upstream.all_projects)}
    page_project = upstream.projects[0]
    cases = (("html", HTML_HEADERS), ("json", JSON_HEADERS))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        for case, headers in cases:
            for name, proxy in proxies.items():
                assert proxy.proc is not None
                res = asyncio.run(warm_page(f"{proxy.simple}{page_project}/", headers, args, proxy.proc.pid))
                runs.setdefault((name, case), []).append(res)
                print(f"  round {rnd + 1}/{args.rounds} {case} {name}: {res['req_s']:,.0f} req/s", flush=True)
    for (name, case), done in runs.items():
        done.sort(key=lambda r: r["req_s"])
        median = dict(done[len(done) // 2])
        median["all_req_s"] = [r["req_s"] for r in done]
        median["errors"] = sum(r["errors"] for r in done)
        median["served"] = served_type(f"{proxies[name].simple}{page_project}/", dict(cases)[case])
        results[name][case] = median
    for name, proxy in proxies.items():
        results[name]["cold_wheels"] = cold_wheels(proxy, upstream, args.cold_wheels)
    return results


# --------------------------------------------------------------------------- report


def _ratio(ours: float | None, theirs: float | None) -> float:
    return round(ours / theirs, 2) if ours and theirs else float("nan")


def report(results: dict[str, dict[str, Any]], proxies: dict[str, Proxy], args: argparse.Namespace,
           upstream: Upstream) -> None:
    rows = []
    for name, res in results.items():
        if name == DIRECT:
            continue
        for case in ("html", "json"):
            r = res[case]
            rows.append({"proxy": name, "case": f"warm page, {case}", "served": r["served"], "req_s": r["req_s"],
                         "req_s of the runs": " / ".join(f"{x:,.0f}" for x in r["all_req_s"]),
                         "body B": round(r["bytes"] / r["requests"]) if r["requests"] else 0,
                         "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["errors"],
                         "proxy cpu_s": r["cpu_s"], "req per cpu_s": r["req_per_cpu_s"],
                         "ours/this": _ratio(results.get("ours", {}).get(case, {}).get("req_s"), r["req_s"])})
    print_table(f"Warm project page (median of {args.rounds} interleaved runs of {args.seconds:g} s, "
                f"{args.concurrency} connections; load average {os.getloadavg()[0]:.1f}; "
                f"{os.cpu_count()} cores shared by proxy, upstream nginx and load generator)", rows)

    rows = []
    for name, res in results.items():
        c, w = res["cold_pages"], res["cold_wheels"]
        rows.append({"proxy": name, "cold page p50_ms": c["p50_ms"], "cold page p99_ms": c["p99_ms"],
                     f"cold small wheel p50_ms (n={w['small_n']})": w["small_p50_ms"],
                     "small max_ms": w["small_max_ms"], "proxy cpu_ms per small wheel": w["small_cpu_ms"],
                     "same wheels cached p50_ms": w["small_cached_p50_ms"],
                     "not from the proxy": w["not_from_proxy"],
                     f"cold {w['big_mb']} MB wheel s (median of {w['big_n']})": w["big_s"], "all s": w["big_all_s"],
                     "first byte ms": w["big_first_ms"],
                     "MB/s": w["big_mb_s"], "cached fetch s (1 s later)": w["big_warm_s"]})
    print_table(f"Cold fetches (first request; {len(upstream.all_projects)} project pages one after another, "
                "sha256 of every wheel checked)", rows)

    for name, proxy in proxies.items():
        print(f"{name} {proxy.version}: {'; '.join(proxy.notes)}")
    if "ours" in proxies and proxies["ours"].mode == "mirror":
        print("ours: its project pages are rendered when the mirror run publishes, so its 'cold page' is already "
              "rendered; proxpi and devpi fetch each page from the upstream on its first request.")
    if "ours" not in results:
        return
    ours = results["ours"]
    rows = []
    for name, res in results.items():
        if name in ("ours", DIRECT):
            continue
        for label, mine, theirs in (
            ("warm page HTML req/s", ours["html"]["req_s"], res["html"]["req_s"]),
            ("warm page JSON req/s", ours["json"]["req_s"], res["json"]["req_s"]),
            ("cold small wheel (1 / p50)", res["cold_wheels"]["small_p50_ms"], ours["cold_wheels"]["small_p50_ms"]),
            ("cold big wheel (1 / median s)", res["cold_wheels"]["big_s"], ours["cold_wheels"]["big_s"]),
        ):
            ratio = _ratio(mine, theirs)
            ok = "yes" if ratio >= GOAL else "NO"
            if label.startswith("cold") and proxies["ours"].mode == "hosted":
                ok = "n/a: ours is hosted (a local file, no upstream fetch)"
            rows.append({"figure": label, "vs": name, "ours/theirs": ratio, "goal": f"≥ {GOAL:g}", "ok": ok})
    print_table("Goals: ours ≥ 1.0× each proxy", rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--big-mb", type=int, default=20, help="payload of each big wheel")
    parser.add_argument("--big-wheels", type=int, default=5, help="big wheels fetched cold (median reported)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per warm-page run")
    parser.add_argument("--rounds", type=int, default=3, help="warm-page runs per case and proxy, interleaved")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cold-wheels", type=int, default=30, help="distinct small wheels fetched cold")
    parser.add_argument("--servers", default="ours,proxpi,devpi")
    parser.add_argument("--ours", choices=("mirror", "hosted"), default="mirror",
                        help="our server as a passive python mirror of the upstream, or a hosted channel of its files")
    parser.add_argument("--no-venv", action="store_true", help="run proxpi/devpi from this environment")
    parser.add_argument("--proxpi-workers", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the proxies keep their data (default bench/out/; /dev/shm takes the disk out)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (bench/out/pypi-*)")
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]

    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    upstream = make_upstream(OUT, args.projects, args.versions, args.big_mb, args.big_wheels)
    print(f"upstream: {len(upstream.projects)} projects × {upstream.versions} versions (wheel + sdist) and "
          f"{args.big_wheels} projects of one {args.big_mb} MB wheel, in {upstream.root} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="pypi-", dir=args.work_dir or OUT))
    results: dict[str, dict[str, Any]] = {}
    proxies: dict[str, Proxy] = {}
    try:
        with start_nginx(upstream.root) as upstream_url:
            for name in servers:
                sub = work / name
                sub.mkdir()
                if name == "ours":
                    proxy = start_ours(upstream, upstream_url, sub, args.ours)
                elif name == "proxpi":
                    proxy = start_proxpi(upstream_url, sub, not args.no_venv, args.proxpi_workers)
                elif name == "devpi":
                    proxy = start_devpi(upstream_url, sub, not args.no_venv)
                else:
                    raise SystemExit(f"unknown server {name!r}")
                proxies[name] = proxy
                print(f"{name} {proxy.version}: {proxy.simple} ({'; '.join(proxy.notes)})", flush=True)
            results = measure(proxies, upstream, upstream_url, args)
    finally:
        for proxy in proxies.values():
            if proxy.proc is not None:
                stop(proxy.proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, proxies, args, upstream)
    for name, res in results.items():
        for case in ("html", "json"):
            if res.get(case, {}).get("errors"):
                print(f"{name} {case}: {res[case]['errors']} errors, e.g. {res[case]['error_samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
