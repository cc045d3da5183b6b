"""``cve …``: import OSV advisories (files, directories, zip archives; JSON or YAML), list, show;
and ``package cves``: the advisories of a package with each file's verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..client import LocalFileError
from ..cves import read_path
from .common import client, command, group
from .output import Output, one_line

#: records and bytes per import request (the server takes at most 5000 records and 32 MB); few big
#: requests, because each one that changes advisories republishes the channels with CVE rules
BATCH = 4000
BATCH_BYTES = 24 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = group(subparsers, "cve", "import and inspect vulnerability advisories (OSV)")

    p = command(sub, "import", import_, "import OSV records: idempotent, a changed record is updated")
    p.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                   help="an OSV file (JSON or YAML, one record or a list), a directory of them, or a zip archive")

    p = command(sub, "list", list_, "list imported advisories")
    p.add_argument("query", metavar="TEXT", nargs="?", help="text in the id, aliases or summary")
    p.add_argument("--package", help="only advisories naming this package (conda or PyPI/CRAN name)")
    p.add_argument("--ecosystem", help="the ecosystem of --package: PyPI or CRAN (default: from the conda name)")
    p.add_argument("--min-score", type=float, help="CVSS base score at least")
    p.add_argument("--severity", choices=["low", "medium", "high", "critical"])
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--per-page", type=int, default=50)

    p = command(sub, "show", show, "show an advisory (by OSV id or alias, e.g. CVE-2023-32681)")
    p.add_argument("ident", metavar="ID")


def register_package_cves(sub: argparse._SubParsersAction, channel_help: str, add_type) -> None:  # noqa: ANN001
    p = command(sub, "cves", package_cves, "the CVEs of a package, and which of its files they affect")
    p.add_argument("channel", metavar="CH", help=channel_help)
    p.add_argument("name", metavar="NAME", help="package name")
    p.add_argument("--all", action="store_true", help="also advisories that affect none of its files")
    add_type(p)


def import_(args: argparse.Namespace, out: Output) -> int:
    records = []
    for path in args.paths:
        if not path.exists():
            raise LocalFileError(f"{path} does not exist")
        try:
            records.extend(doc for _, doc in read_path(path))
        except OSError as e:
            raise LocalFileError(f"cannot read {path}: {e.strerror or e}") from None
    if not records:
        raise LocalFileError(f"no OSV records (*.json, *.yaml) found in {', '.join(map(str, args.paths))}")
    api = client(args)
    total = {"created": 0, "updated": 0, "unchanged": 0, "total": 0}
    for part in _batches(records):
        done = api.import_cves(part)
        for k in total:
            total[k] += done.get(k, 0)
    out.result(total, f"imported {total['total']} advisories: {total['created']} new, {total['updated']} updated, "
                      f"{total['unchanged']} unchanged")
    return 0


def _batches(records: list[dict]):  # noqa: ANN202 - an iterator of lists
    batch: list[dict] = []
    size = 0
    for r in records:
        n = len(json.dumps(r))
        if batch and (len(batch) >= BATCH or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += n
    if batch:
        yield batch


def _score(c: dict) -> str:
    if c.get("score") is None:
        return c.get("severity") or "-"
    return f"{c['score']:g} {c.get('severity') or ''}".strip()


def list_(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_cves(q=args.query, package=args.package, ecosystem=args.ecosystem,
                                  min_score=args.min_score, severity=args.severity, page=args.page,
                                  per_page=args.per_page)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(c["id"], ", ".join(a for a in c["aliases"] if a.startswith("CVE-")) or "-", _score(c),
             ", ".join(p["name"] for p in c["packages"]), one_line(c.get("summary") or "")[:80])
            for c in data["items"]]
    out.table(["ID", "CVE", "SCORE", "PACKAGES", "SUMMARY"], rows, empty="no advisories found",
              footer=f"{len(rows)} of {data['total']}" if data["total"] > len(rows) else None)
    return 0


def show(args: argparse.Namespace, out: Output) -> int:
    c = client(args).get_cve(args.ident)
    if out.json_mode:
        out.json(c)
        return 0
    out.fields([("id", c["id"]), ("aliases", c["aliases"]), ("score", _score(c)),
                ("vectors", [v["vector"] for v in c.get("cvss", [])]), ("published", c.get("published")),
                ("modified", c.get("modified")),
                ("packages", [f"{a['ecosystem']}/{a['name']} {' | '.join(a['ranges'])}" for a in c["affected"]]),
                ("summary", c.get("summary"))])
    if c.get("details"):
        out.console.print()
        out.console.print(c["details"], markup=False)
    return 0


def package_cves(args: argparse.Namespace, out: Output) -> int:
    r = client(args).artifact_cves(args.channel, args.name, args.type)
    if out.json_mode:
        out.json(r)
        return 0
    shown = [c for c in r["cves"] if args.all or c["affects_artifact"]]
    rows = [(c["cve"] or c["id"], c["id"], _score(c), c["affected_range"] or "-",
             ", ".join(c["fixed_versions"]) or "none", ", ".join(c["affected_versions"]) or "-",
             one_line(c.get("summary") or "")[:60]) for c in shown]
    eco = f" ({r['ecosystem']}: {r['ecosystem_name']})" if r.get("ecosystem") else ""
    out.console.print(f"{r['name']}{eco}: {r['affecting']} of {r['total']} known advisories affect its files",
                      markup=False)
    out.table(["CVE", "ID", "SCORE", "AFFECTED", "FIXED IN", "YOUR VERSIONS", "SUMMARY"], rows,
              empty="no advisory affects any of its files")
    return 0


__all__ = ["register", "register_package_cves"]
