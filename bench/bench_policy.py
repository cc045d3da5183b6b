"""Policy benchmark: a policy with every rule kind over a conda-forge-sized subdir, on one core.

    python bench/bench_policy.py                 # 500,000 linux-64 records (make-big-repodata, cached)
    python bench/bench_policy.py --records 100000

The records are the synthetic 500k-record linux-64 repodata of ``make-big-repodata`` (real
records replicated under new names, cached in bench/out/). The policy has one rule of each kind:
subdir, name (globs), signature (a signature map covering 95% of the records), age (a 30-day
cooldown and a not-before date), version (conda MatchSpecs), license (families, deny list,
unknown licenses denied), cve (the 133 real PYSEC advisories of shared/data) and keep_newest 3.

Measured, in one process and one thread:
  baseline  orjson.loads of repodata.json; a plain Python loop that reads name, version, license
            and timestamp of every record (the least any evaluation must do)
  policy    CompiledPolicy.exclusions over the whole subdir, cold (a fresh compile: empty caches)
            and warm (the same compiled policy again, as the next render of the same channel), and
            per package-name group (how the publisher calls it)
Goal: >= 200,000 records/s cold, whole subdir.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.bench_publish import SUBDIR, big_repodata  # noqa: E402
from bench.harness import print_table  # noqa: E402
from conda_platform_plugin.cves import CveIndex, parse_advisory, read_path  # noqa: E402
from conda_platform_plugin.policy import Policy, summarize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
GOAL = 200_000
NOW = 1_717_200_000.0  # 2024-06-01: a fixed clock, so the cooldown excludes the same records every run

RULES = [
    {"kind": "subdir", "allow": ["linux-64", "noarch"]},
    {"kind": "name", "exclude": ["*-dbg", "_*", "*-r13*"]},
    {"kind": "signature"},
    {"kind": "age", "min_days": 30, "not_before": "2016-01-01"},
    {"kind": "version", "deny": ["python <3.8", "openssl 1.0.*", "setuptools <60", "python-r7 <3.10",
                                 "numpy 1.11.* *_0"]},
    {"kind": "license", "allow_families": ["MIT", "BSD", "APACHE", "PSF", "MOZILLA", "PUBLIC-DOMAIN", "LGPL",
                                           "OTHER"],
     "deny": ["AGPL-3.0-only"], "unknown": "deny"},
    {"kind": "cve", "min_severity": "medium", "unscored": "exclude", "only_fixed": True},
    {"kind": "keep_newest", "count": 3},
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    args = parser.parse_args()
    path = big_repodata(args.records)
    raw = path.read_bytes()

    t0 = time.perf_counter()
    doc = orjson.loads(raw)
    parse_s = time.perf_counter() - t0
    records = {**doc.get("packages", {}), **doc.get("packages.conda", {})}
    n = len(records)
    del raw

    t0 = time.perf_counter()
    touched = 0
    for rec in records.values():
        touched += len(rec.get("name", "")) + len(rec.get("version", "")) + len(rec.get("license") or "") + \
            (rec.get("timestamp") or 0) % 2
    loop_s = time.perf_counter() - t0

    cves = CveIndex(parse_advisory(d) for _, d in read_path(DATA / "osv" / "pysec"))
    signatures = {fn: {"key": {"signature": "00"}} for i, fn in enumerate(records) if i % 20}
    policy = Policy.from_json({"name": "every-rule", "rules": RULES})
    assert {r["kind"] for r in policy.rules} == {"subdir", "name", "signature", "age", "version", "license", "cve",
                                                 "keep_newest"}

    rows = [
        {"what": "baseline: orjson.loads of repodata.json", "records": n, "seconds": parse_s,
         "records_per_s": n / parse_s},
        {"what": "baseline: plain loop reading 4 fields", "records": n, "seconds": loop_s,
         "records_per_s": n / loop_s},
    ]

    gc.collect()
    t0 = time.perf_counter()
    compiled = policy.compile(cves=cves, now=NOW)
    cold = compiled.exclusions(SUBDIR, records, signatures)
    cold_s = time.perf_counter() - t0
    rows.append({"what": "policy, cold (compile + evaluate), whole subdir", "records": n, "seconds": cold_s,
                 "records_per_s": n / cold_s, "goal_ok": "yes" if n / cold_s >= GOAL else "NO"})

    t0 = time.perf_counter()
    warm = compiled.exclusions(SUBDIR, records, signatures)
    warm_s = time.perf_counter() - t0
    rows.append({"what": "policy, warm (same compiled policy), whole subdir", "records": n, "seconds": warm_s,
                 "records_per_s": n / warm_s, "goal_ok": "yes" if n / warm_s >= GOAL else "NO"})
    assert warm == cold

    groups: dict[str, dict] = defaultdict(dict)
    for fn, rec in records.items():
        groups[rec.get("name", "")][fn] = rec
    fresh = policy.compile(cves=cves, now=NOW)
    t0 = time.perf_counter()
    per_name: dict = {}
    for recs in groups.values():
        per_name.update(fresh.exclusions(SUBDIR, recs, signatures))
    group_s = time.perf_counter() - t0
    rows.append({"what": f"policy, cold, per name group ({len(groups):,} calls)", "records": n, "seconds": group_s,
                 "records_per_s": n / group_s, "goal_ok": "yes" if n / group_s >= GOAL else "NO"})
    assert per_name == cold, "per-name evaluation must give the whole-subdir answer"

    print_table(f"Policy evaluation, one thread: {n:,} {SUBDIR} records, {len(policy.rules)} rules "
                f"({', '.join(r['kind'] for r in policy.rules)})", rows)
    counts = summarize(cold.values())
    print(f"excluded {len(cold):,} of {n:,} records ({len(cold) / n:.1%}): "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
