"""Badge benchmark: requests per second of served badges beside nginx serving the same SVG as a file.

    python bench/bench_badges.py [--seconds 5] [--concurrency 32]

A real platform server runs in its own process (bench_serve.start_server); a channel gets a small
package, and ``harness.load`` (keep-alive, 32 connections) asks for its badges:

- ``version.svg``: rendered per request (artifact rows from the database, then the SVG);
- ``version.svg`` with the ETag in If-None-Match: the 304 a README page's viewers mostly get;
- ``cves.svg``: the heaviest kind (the artifact's CVE report);

next to nginx (``harness.start_nginx``) serving a byte-identical ``version.svg`` from disk (200, and
304 with its own ETag): the most a static server can do for the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402

from bench.bench_serve import _admin_token, measure, start_server, stop  # noqa: E402
from bench.harness import Unavailable, print_table, start_nginx  # noqa: E402

OUT = ROOT / "bench" / "out"


async def _cases(urls: dict[str, str], etag: str, args: argparse.Namespace) -> dict[str, dict]:
    out = {}
    for name, url in urls.items():
        out[name] = await measure(url, concurrency=args.concurrency, seconds=args.seconds)
    out["304"] = await measure(urls["version"], concurrency=args.concurrency, seconds=args.seconds,
                               headers={"If-None-Match": etag}, expect=304)
    return out


def main() -> int:
    from builders import build_conda_package

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="badges-", dir=OUT))
    proc = None
    results: dict[str, dict] = {}
    nginx_reason = None
    try:
        proc, base, how = start_server(work / "data", work / "server.log")
        print(f"platform server: {how} at {base}", flush=True)
        http = requests.Session()
        token = _admin_token(work / "server.log")
        if token:
            http.headers["Authorization"] = f"Bearer {token}"
        http.post(f"{base}/api/channels", json={"name": "bench"}, timeout=60).raise_for_status()
        package = build_conda_package(work / "pkgs", "bench-tool", "1.2.3", "0", subdir="linux-64")
        with open(package, "rb") as f:
            http.post(f"{base}/api/channels/bench/files", files=[("file", (package.name, f))],
                      timeout=60).raise_for_status()
        badge = f"{base}/api/channels/bench/artifacts/conda/bench-tool/badges"
        first = requests.get(f"{badge}/version.svg", timeout=30)
        first.raise_for_status()
        results["platform"] = asyncio.run(_cases({"version": f"{badge}/version.svg", "cves": f"{badge}/cves.svg"},
                                                 first.headers["ETag"], args))
        root = work / "nginx-root"
        root.mkdir()
        (root / "version.svg").write_bytes(first.content)
        try:
            with start_nginx(root) as nginx:
                etag = requests.head(f"{nginx}/version.svg", timeout=10).headers["ETag"]
                results["nginx"] = asyncio.run(_cases({"version": f"{nginx}/version.svg"}, etag, args))
        except Unavailable as exc:
            nginx_reason = str(exc)
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    p, n = results["platform"], results.get("nginx")
    rows = []
    for key, label in (("version", "GET version.svg → 200"), ("304", "GET version.svg, If-None-Match → 304"),
                       ("cves", "GET cves.svg → 200")):
        row = {"case": label, "platform_req_s": p[key]["req_s"], "platform_p99_ms": p[key]["p99_ms"],
               "errors": p[key]["errors"]}
        if n is not None and key in n:
            row["nginx_req_s"] = n[key]["req_s"]
            row["x_nginx"] = round(p[key]["req_s"] / n[key]["req_s"], 3) if n[key]["req_s"] else None
        rows.append(row)
    print_table(f"badges, {args.concurrency} connections, {args.seconds:g} s per case", rows)
    if nginx_reason:
        print(f"nginx baseline skipped: {nginx_reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
