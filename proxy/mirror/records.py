"""From an upstream repodata document to what a mirror stores: kept records, filtered ones and why.

Pure CPU work on one subdir, run off the event loop. Memory stays at about one parsed copy of the
subdir: records are not copied, canonical bytes are made only to digest them (and again, batch by
batch, for the rows that are actually written).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from conda_platform_plugin.names import split_conda_filename

from ..store.files import NewFile, record_digest
from .source import Index, file_url

NO_SHA256 = "record has no sha256: it cannot be stored content-addressed"


@dataclass
class Prepared:
    subdir: str
    records: dict[str, dict]  # every upstream record, by filename (.tar.bz2 and .conda)
    info: dict
    wanted: dict[str, bytes] = field(default_factory=dict)  # kept filename -> record digest
    filtered: list[dict] = field(default_factory=list)  # mirror_filtered rows (without mirror/subdir)
    by_rule: Counter = field(default_factory=Counter)


def canonical(record: dict) -> bytes:
    """The stored form of a record, as uploads store theirs (proxy/platform.py _new_file)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def prepare(index: Index, policy: object | None) -> Prepared:
    doc = index.parse()
    records: dict[str, dict] = {}
    for key in ("packages", "packages.conda"):
        part = doc.get(key)
        if isinstance(part, dict):
            records.update(part)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    del doc
    out = Prepared(index.subdir, records, info)
    valid: dict[str, dict] = {}
    for fn, rec in records.items():
        if not isinstance(rec, dict) or split_conda_filename(fn) is None or "/" in fn:
            _filter(out, fn, rec if isinstance(rec, dict) else {}, "invalid", "not a conda package record")
        elif not rec.get("sha256"):
            _filter(out, fn, rec, "sha256", NO_SHA256)
        else:
            valid[fn] = rec
    if policy is not None:
        verdicts = policy.exclusions(index.subdir, valid, None)  # type: ignore[attr-defined] - contract A
        for fn, verdict in verdicts.items():
            if fn in valid:
                _filter(out, fn, valid.pop(fn), verdict.rule, verdict.reason)
    out.wanted = {fn: record_digest(canonical(rec)) for fn, rec in valid.items()}
    return out


def _filter(out: Prepared, fn: str, rec: dict, rule: str, reason: str) -> None:
    parts = split_conda_filename(fn)
    out.filtered.append({"filename": fn[:400], "name": str(rec.get("name") or (parts[0] if parts else fn))[:200],
                         "version": str(rec.get("version") or (parts[1] if parts else ""))[:100],
                         "rule": rule[:64], "reason": reason})
    out.by_rule[rule] += 1


def new_files(prepared: Prepared, names: list[str], *, source: str, repodata_url: str, mirror_id: int) -> list[NewFile]:
    """File rows (without blobs) for some kept records."""
    rows = []
    for fn in names:
        rec = prepared.records[fn]
        raw = canonical(rec)
        rows.append(NewFile(
            type="conda", subdir=prepared.subdir, filename=fn, name=str(rec.get("name") or ""),
            version=str(rec.get("version") or ""), build=str(rec.get("build") or ""),
            sha256=str(rec["sha256"]), md5=str(rec.get("md5") or ""), size=int(rec.get("size") or 0),
            record=raw, license=str(rec.get("license") or ""), mirror_id=mirror_id,
            source_url=file_url(source, prepared.subdir, repodata_url, prepared.info, fn),
        ))
    return rows
