"""Signing benchmark: what signing every record costs the subdir renderer.

    python bench/bench_signing.py                  # 100,000 records (make-big-repodata, cached in bench/out/)
    python bench/bench_signing.py --records 500000

Renders the same records (rows as the publisher feeds them: grouped by name, stored canonical
bytes) with ``SubdirRenderer``, in a temp dir under bench/out/:

- baseline: a full render without signing, and the signing primitive alone (canonical JSON +
  ed25519 per record, ``trust.sign``'s work without the cache), measured in the same run;
- full render, signed, cold cache (every record signed; what the first publish after ``trust init``
  or a pkg_mgr rotation costs), then warm cache (signatures read back: a full render of already
  signed records, e.g. after a policy change);
- incremental render of one changed name into the signed render (what one upload costs), against
  the same without signing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from itertools import groupby
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.bench_publish import SUBDIR, big_repodata  # noqa: E402
from bench.harness import print_table  # noqa: E402
from conda_platform_plugin import trust  # noqa: E402
from proxy.store.render import Previous, SubdirRenderer  # noqa: E402
from proxy.store.signing import Signer  # noqa: E402


def _rows(path: Path) -> dict[str, list[tuple]]:
    doc = orjson.loads(path.read_bytes())
    rows = []
    for key in ("packages", "packages.conda"):
        for fn, rec in doc.get(key, {}).items():
            raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
            rows.append((rec["name"], fn, raw, rec["version"], None, 0.0, 0))
    rows.sort(key=lambda r: (r[0], r[1]))
    return {name: list(g) for name, g in groupby(rows, key=lambda r: r[0])}


def _full(out: Path, gen: int, groups: dict, sign) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    r = SubdirRenderer(out / str(gen), gen, SUBDIR, None, full=True, sign=sign)
    for name, rows in groups.items():
        r.feed_name(name, rows)
    r.finish()
    return time.perf_counter() - t0


def _incremental(out: Path, prev_gen: int, gen: int, groups: dict, name: str, sign) -> float:  # noqa: ANN001
    rows = list(groups[name])
    last = rows[-1]
    rec = orjson.loads(last[2])
    rec["build_number"] = int(rec.get("build_number", 0)) + 1000
    fn = last[1].replace(".tar.bz2", "_x.tar.bz2").replace(".conda", "_x.conda")
    rows.append((name, fn, orjson.dumps(rec, option=orjson.OPT_SORT_KEYS), rec["version"], None, 0.0, 0))
    t0 = time.perf_counter()
    r = SubdirRenderer(out / str(gen), gen, SUBDIR, Previous.load(out / str(prev_gen)), full=False, sign=sign)
    r.skip([name])
    r.feed_name(name, sorted(rows, key=lambda x: x[1]))
    r.finish()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    groups = _rows(big_repodata(args.records))
    records = sum(len(g) for g in groups.values())
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ROOT / "bench" / "out", prefix="signing-"))
    try:
        key = trust.new_private_key()
        sample = [orjson.loads(r[2]) for g in list(groups.values())[:2000] for r in g][:5000]
        t0 = time.perf_counter()
        for rec in sample:
            trust.sign(key, trust.canonical_json(rec))
        per_record = (time.perf_counter() - t0) / len(sample)
        unsigned = _full(tmp / "plain", 1, groups, None)
        signer = Signer(key, tmp / "cache")
        cold = _full(tmp / "signed", 1, groups, signer.signatures)
        warm = _full(tmp / "signed", 2, groups, signer.signatures)
        name = sorted(groups, key=lambda n: -len(groups[n]))[len(groups) // 2]
        inc_plain = _incremental(tmp / "plain", 1, 3, groups, name, None)
        inc_signed = _incremental(tmp / "signed", 2, 3, groups, name, signer.signatures)
        size = (tmp / "signed" / "2" / "repodata.json").stat().st_size
        plain_size = (tmp / "plain" / "1" / "repodata.json").stat().st_size
        print_table(f"signing: {records:,} records in {len(groups):,} names", [
            {"what": "baseline: full render, unsigned", "s": round(unsigned, 2), "repodata MB": round(plain_size / 1e6, 1)},
            {"what": "baseline: sign alone (canonical JSON + ed25519) x records", "s": round(per_record * records, 2),
             "us/record": round(per_record * 1e6, 1)},
            {"what": "full render, signed, cold cache", "s": round(cold, 2), "repodata MB": round(size / 1e6, 1)},
            {"what": "full render, signed, warm cache", "s": round(warm, 2)},
            {"what": "incremental (1 name), unsigned", "s": round(inc_plain, 3)},
            {"what": "incremental (1 name), signed", "s": round(inc_signed, 3)},
        ])
        signer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
