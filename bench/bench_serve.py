"""Serving benchmark: the platform server against Debian's nginx on the very same files.

    python bench/bench_serve.py [--seconds 10] [--concurrency 32] [--size-mb 20]

A real platform server runs in its own process (``conda-platform serve`` when the CLI has it,
else ``proxy.app.serve(Config(...))`` through ``python -c``), so that it and the load generator
(this process) do not share a GIL. A channel is created and a package with a 20 MB
incompressible payload is uploaded over HTTP. nginx (``harness.start_nginx``: sendfile, 2 workers)
then serves byte-identical copies of the package file and of the rendered
``linux-64/repodata.json.zst`` from its own root, and both servers get the same load
(``harness.load``, keep-alive, 32 connections):

(i)  GET of the package file: MB/s and req/s. Goal: ≥ 0.8× nginx's MB/s.
(ii) conditional GET of repodata.json.zst with If-None-Match = that server's ETag → 304: req/s.
     Goal: ≥ 0.25× nginx's req/s.

When nginx is missing the nginx column is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402

from bench.harness import MB, Unavailable, free_port, load, print_table, start_nginx, wait_for_port  # noqa: E402

OUT = ROOT / "bench" / "out"
SUBDIR = "linux-64"
GOAL_MB_S = 0.8
GOAL_REQ_S = 0.25


def _cli_has_serve() -> bool:
    exe = shutil.which("conda-platform")
    if exe is None:
        return False
    probe = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60, check=False)
    return probe.returncode == 0 and "--data-dir" in probe.stdout


def start_server(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str, str]:
    """Start the platform server in a subprocess; return (process, base URL, how it was started)."""
    port = free_port()
    if _cli_has_serve():
        cmd = [shutil.which("conda-platform") or "conda-platform", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir)]
        how = "conda-platform serve"
    else:
        code = ("import sys; from pathlib import Path; from proxy.app import serve; from proxy.config import Config; "
                "serve(Config(data_dir=Path(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2])))")
        cmd = [sys.executable, "-c", code, str(data_dir), str(port)]
        how = "python -c 'proxy.app.serve(Config(...))' (no `conda-platform serve` yet)"
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}", how


def _admin_token(log_path: Path) -> str | None:
    """The admin token a server prints on its first start, when it has access control."""
    for _ in range(50):
        found = re.search(r"\b(cpt_[A-Za-z0-9_\-]+)", log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if "serving" in log_path.read_text(errors="replace"):
            return None
        time.sleep(0.1)
    return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_package(out_dir: Path, size_mb: int) -> Path:
    from builders import build_conda_package

    payload = os.urandom(size_mb * MB)  # incompressible: the archive is as big as the payload
    return build_conda_package(out_dir, "bench-big", "1.0", "h0_0", subdir=SUBDIR,
                               files={"share/bench-big/payload.bin": payload})


async def measure(url: str, *, concurrency: int, seconds: float, headers: dict | None = None,
                  expect: int = 200) -> dict:
    await load(url, concurrency=concurrency, duration=min(2.0, seconds), headers=headers, expect_status=expect)  # warm-up
    return await load(url, concurrency=concurrency, duration=seconds, headers=headers, expect_status=expect)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case and server")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size-mb", type=int, default=20, help="payload size of the package")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (bench/out/serve-*)")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve-", dir=OUT))
    proc = None
    try:
        proc, base, how = start_server(work / "data", work / "server.log")
        print(f"platform server: {how} at {base}", flush=True)
        http = requests.Session()
        token = _admin_token(work / "server.log")
        if token:  # access control: the first start prints an admin token; the channel stays public
            http.headers["Authorization"] = f"Bearer {token}"
        r = http.post(f"{base}/api/channels", json={"name": "bench"}, timeout=60)
        r.raise_for_status()
        package = build_package(work / "pkgs", args.size_mb)
        with open(package, "rb") as f:
            r = http.post(f"{base}/api/channels/bench/files", params={"subdir": SUBDIR},
                          files=[("file", (package.name, f, "application/octet-stream"))], timeout=300)
        r.raise_for_status()
        sha256 = r.json()["files"][0]["sha256"]
        pkg_url = f"{base}/api/repo/bench/{SUBDIR}/{package.name}"
        zst_url = f"{base}/api/repo/bench/{SUBDIR}/repodata.json.zst"

        # nginx's root: byte-identical copies of what the platform serves, at the same paths
        root = work / "nginx-root"
        target = root / "api" / "repo" / "bench" / SUBDIR
        target.mkdir(parents=True)
        shutil.copyfile(package, target / package.name)
        zst_resp = http.get(zst_url, timeout=60)
        zst_resp.raise_for_status()
        (target / "repodata.json.zst").write_bytes(zst_resp.content)
        got = hashlib.sha256(http.get(pkg_url, timeout=120).content).hexdigest()
        assert got == sha256 == hashlib.sha256(package.read_bytes()).hexdigest(), "served bytes differ"
        size = package.stat().st_size
        print(f"package {package.name}: {size / MB:.1f} MB; repodata.json.zst: {len(zst_resp.content):,} B", flush=True)

        cases: dict[str, dict[str, dict]] = {}
        platform_etag = zst_resp.headers.get("ETag")
        assert platform_etag, "the platform sent no ETag for repodata.json.zst"
        cases["platform"] = asyncio.run(_run_cases(pkg_url, zst_url, platform_etag, args))
        nginx_reason = None
        try:
            with start_nginx(root) as nginx:
                n_pkg = f"{nginx}/api/repo/bench/{SUBDIR}/{package.name}"
                n_zst = f"{nginx}/api/repo/bench/{SUBDIR}/repodata.json.zst"
                nginx_etag = requests.head(n_zst, timeout=10).headers.get("ETag")
                assert nginx_etag, "nginx sent no ETag"
                cases["nginx"] = asyncio.run(_run_cases(n_pkg, n_zst, nginx_etag, args))
        except Unavailable as exc:
            nginx_reason = str(exc)
    finally:
        if proc is not None:
            stop(proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report(cases, args, size, nginx_reason)
    return 0


async def _run_cases(pkg_url: str, zst_url: str, etag: str, args: argparse.Namespace) -> dict[str, dict]:
    return {
        "get": await measure(pkg_url, concurrency=args.concurrency, seconds=args.seconds),
        "304": await measure(zst_url, concurrency=args.concurrency, seconds=args.seconds,
                             headers={"If-None-Match": etag}, expect=304),
    }


def report(cases: dict, args: argparse.Namespace, size: int, nginx_reason: str | None) -> None:
    p, n = cases["platform"], cases.get("nginx")
    rows = []
    for key, label, metric, goal in (
        ("get", f"GET package ({size / MB:.0f} MB)", "mb_s", GOAL_MB_S),
        ("get", f"GET package ({size / MB:.0f} MB)", "req_s", None),
        ("304", "GET repodata.json.zst, If-None-Match → 304", "req_s", GOAL_REQ_S),
    ):
        row = {"case": label, "figure": metric.replace("_", "/"), "platform": p[key][metric]}
        if n is not None:
            row["nginx"] = n[key][metric]
            ratio = p[key][metric] / n[key][metric] if n[key][metric] else float("nan")
            row["ratio"] = round(ratio, 2)
            if goal is not None:
                row["goal"] = f"≥ {goal:g}× nginx"
                row["ok"] = "yes" if ratio >= goal else "NO"
        row["p50_ms"] = p[key]["p50_ms"]
        row["p99_ms"] = p[key]["p99_ms"]
        if n is not None:
            row["nginx_p50_ms"] = n[key]["p50_ms"]
            row["nginx_p99_ms"] = n[key]["p99_ms"]
        row["errors"] = p[key]["errors"] + (n[key]["errors"] if n is not None else 0)
        rows.append(row)
    print_table(f"Serving benchmark (concurrency {args.concurrency}, {args.seconds:g} s per case, "
                f"{os.cpu_count()} cores; server, nginx and load generator share them)", rows)
    if nginx_reason:
        print(f"nginx column skipped: {nginx_reason}")
    for name, res in cases.items():
        for key, r in res.items():
            if r["errors"]:
                print(f"{name} {key}: {r['errors']} errors, e.g. {r['error_samples']}")


if __name__ == "__main__":
    sys.exit(main())
