"""CRAN benchmark: render a CRAN-sized ``PACKAGES`` and publish single R uploads into it.

    python bench/bench_cran.py [--packages 21000]

(a) Full render. ``--packages`` R source packages (CRAN has about 21,000; their stanzas are the
    real ones of shared/data/cran/PACKAGES-src.gz with numbered names) are added as file rows of
    one channel in one generation (setup, not measured), then ``Publisher.publish`` is measured:
    the one query of the subdir's rows, the policy-free render of PACKAGES and PACKAGES.gz.
    Baseline, measured in the same run: R itself writing the same records with ``write.dcf`` to
    PACKAGES and a gzip connection to PACKAGES.gz, and ``saveRDS`` to PACKAGES.rds (what
    ``tools::write_PACKAGES`` does once it has read every tarball), started from an already parsed
    matrix (skipped without Rscript).
(b) One real upload (a tiny package built with tests/rbuilders.py) into that channel through
    ``Platform.ingest``: timed from the bytes arriving to the new generation published. Every
    publish renders the whole subdir (no incremental render for R indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import orjson  # noqa: E402

from bench.harness import print_table  # noqa: E402

OUT = ROOT / "bench" / "out"


def _stanzas(n: int) -> list[dict[str, str]]:
    from builders import SHARED_DATA

    from conda_platform_plugin.rformats import parse_dcf

    real = parse_dcf(gzip.decompress((SHARED_DATA / "cran" / "PACKAGES-src.gz").read_bytes()).decode())
    out = []
    for i in range(n):
        s = dict(real[i % len(real)])
        s["Package"] = f"{s['Package']}{i}"
        s["MD5sum"] = hashlib.md5(s["Package"].encode()).hexdigest()
        out.append(s)
    return out


async def _run(args: argparse.Namespace, work: Path) -> dict:
    from rbuilders import build_r_source

    from proxy.config import Config
    from proxy.ingest import Received
    from proxy.platform import Platform
    from proxy.repo.cran_index import cran_record
    from proxy.store.files import NewFile

    platform = await Platform.open(Config(data_dir=work / "data"))
    try:
        ch = await platform.create_channel("bench")
        rows = []
        for s in _stanzas(args.packages):
            rec = cran_record(s, md5=s["MD5sum"], size=1000, sha256=None, timestamp=0)
            fn = f"{s['Package']}_{s['Version']}.tar.gz"
            rows.append(NewFile("cran", "cran-src", fn, s["Package"], s["Version"], "", "0" * 64, s["MD5sum"], 1000,
                                orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), license=rec["license"]))
        await platform.files.add(ch, rows, "bench rows")
        t0 = time.perf_counter()
        await platform.publisher.publish(ch.id)
        full = time.perf_counter() - t0
        served = await platform.serving.lookup("bench")
        packages = platform.publisher.subdir_dir(ch.id, "cran-src", served.subdirs["cran-src"]) / "PACKAGES"
        shutil.copyfile(packages, work / "PACKAGES")
        path = build_r_source(work / "pkgs", "benchnew", "1.0")
        t0 = time.perf_counter()
        writer = platform.blobs.writer(1 << 30)
        writer.write(path.read_bytes())
        await platform.ingest("bench", [Received(path.name, writer.finish())])
        upload = time.perf_counter() - t0
    finally:
        await platform.close()
    return {"full_s": full, "upload_s": upload, "bytes": packages_size(work / "PACKAGES")}


def packages_size(path: Path) -> int:
    return path.stat().st_size


def r_baseline(work: Path) -> float | None:
    """R's write.dcf of the same records to PACKAGES and PACKAGES.gz, timed inside R."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    from conda_platform_plugin.rformats import PACKAGES_FIELDS

    fields = ", ".join(f'"{f}"' for f in PACKAGES_FIELDS)  # write_PACKAGES' column order (read.dcf's differs)
    code = (f'db <- read.dcf("{work / "PACKAGES"}"); db <- db[, intersect(c({fields}), colnames(db))]; '
            't <- proc.time()[["elapsed"]]; '
            f'write.dcf(db, "{work / "R-PACKAGES"}"); con <- gzfile("{work / "R-PACKAGES.gz"}", "wt"); '
            'write.dcf(db, con); close(con); rownames(db) <- db[, "Package"]; '
            f'saveRDS(db, "{work / "R-PACKAGES.rds"}", compress = "xz"); cat(proc.time()[["elapsed"]] - t)')
    done = subprocess.run([rscript, "--vanilla", "-e", code], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    same = (work / "R-PACKAGES").read_bytes() == (work / "PACKAGES").read_bytes()
    print(f"R's write.dcf output is byte-identical to ours: {same}")
    return float(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=21000)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cran-", dir=OUT))
    try:
        ours = asyncio.run(_run(args, work))
        base = r_baseline(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"case": f"full publish, {args.packages} packages", "platform_s": round(ours["full_s"], 3),
             "R_write_dcf_s": round(base, 3) if base is not None else None,
             "x_R": round(ours["full_s"] / base, 2) if base else None},
            {"case": "one upload, published", "platform_s": round(ours["upload_s"], 3)}]
    print_table(f"CRAN PACKAGES ({ours['bytes'] / 1e6:.1f} MB), load average {_load()}", rows)
    if base is None:
        print("R baseline skipped: Rscript is not on PATH")
    return 0


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
