"""Vulnerability data: OSV advisories, matched against conda package records (pure).

OSV records (https://ossf.github.io/osv-schema/) name packages in an ecosystem (PyPI, CRAN …).
A conda package is mapped to its ecosystem by name: ``r-<x>`` is CRAN package ``<x>``, a
Python package (one that depends on ``python`` or is ``noarch: python``) is the PyPI project of
the same normalised name. Versions are compared in the ecosystem's order (PEP 440 for PyPI), so
``2.3.0`` of a conda record is the same version the advisory speaks of. CVSS v2/v3/v4 vectors
are scored with the ``cvss`` library; an advisory's score is the one of its newest CVSS version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from cvss import CVSS2, CVSS3, CVSS4
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import BadRequest
from .names import subdir_type
from .versions import version_key

SEVERITIES = ("none", "low", "medium", "high", "critical")
#: conda package names whose PyPI project is named differently
PYPI_NAMES = {"pytorch": "torch", "msgpack-python": "msgpack", "matplotlib-base": "matplotlib",
              "py-opencv": "opencv-python", "pyqt": "pyqt5", "tensorflow-base": "tensorflow",
              "jupyterlab_server": "jupyterlab-server", "libcst": "libcst"}
MAX_DOCUMENT = 8 << 20


def severity_of(score: float | None) -> str | None:
    """CVSS qualitative rating of a base score."""
    if score is None:
        return None
    if score == 0:
        return "none"
    return "low" if score < 4 else "medium" if score < 7 else "high" if score < 9 else "critical"


def severity_rank(level: str | None) -> int:
    if level is None:
        return -1
    level = level.lower()
    level = {"moderate": "medium", "important": "high"}.get(level, level)
    if level not in SEVERITIES:
        raise BadRequest(f"unknown severity {level!r}; known: {', '.join(SEVERITIES)}")
    return SEVERITIES.index(level)


def cvss_score(kind: str, vector: str) -> float | None:
    """The base score of a CVSS vector (None when the vector cannot be parsed)."""
    try:
        if kind == "CVSS_V4" or vector.startswith("CVSS:4"):
            return float(CVSS4(vector).base_score)
        if kind == "CVSS_V3" or vector.startswith("CVSS:3"):
            return float(CVSS3(vector).base_score)
        if kind == "CVSS_V2":
            return float(CVSS2(vector).base_score)
    except Exception:  # noqa: BLE001 - the cvss library raises its own errors per version
        return None
    return None


# -- versions per ecosystem ----------------------------------------------------------------------
@lru_cache(maxsize=200_000)
def _pypi_key(version: str) -> tuple:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


@lru_cache(maxsize=200_000)
def _cran_key(version: str) -> tuple:
    parts = re.split(r"[.-]", version)
    return (1, tuple(int(p) if p.isdigit() else -1 for p in parts)) if all(parts) else (0, version)


def ecosystem_key(ecosystem: str):  # noqa: ANN201 - a sort-key function
    if ecosystem == "PyPI":
        return _pypi_key
    if ecosystem == "CRAN":
        return _cran_key
    return version_key


def _normal_version(ecosystem: str, version: str) -> str:
    if ecosystem == "PyPI":
        try:
            return str(Version(version))
        except InvalidVersion:
            return version
    return version


# -- ecosystems of conda names --------------------------------------------------------------------
def is_python_record(record: Mapping) -> bool:
    if record.get("noarch") == "python":
        return True
    for dep in record.get("depends") or ():
        head = dep.split(" ", 1)[0]
        if head in ("python", "python_abi"):
            return True
    return False


def ecosystem_of(conda_name: str, record: Mapping | None = None, subdir: str | None = None) -> tuple[str, str] | None:
    """(OSV ecosystem, package name as the ecosystem normalises it) of a conda package, or None
    for a record that is neither an R nor a Python package. Records of python and cran subdirs
    ("pypi", "cran-*") are PyPI and CRAN packages by their own names."""
    kind = subdir_type(subdir) if subdir else None
    if kind == "python":
        return "PyPI", canonicalize_name(conda_name)
    if kind == "cran":
        return "CRAN", conda_name.lower()
    if conda_name.startswith("r-") and len(conda_name) > 2:
        return "CRAN", conda_name[2:].lower()
    if record is not None and not is_python_record(record):
        return None
    return "PyPI", canonicalize_name(PYPI_NAMES.get(conda_name, conda_name))


def package_key(ecosystem: str, name: str) -> tuple[str, str]:
    if ecosystem == "PyPI":
        return ecosystem, canonicalize_name(name)
    if ecosystem == "CRAN":
        return ecosystem, name.lower()
    return ecosystem, name


# -- advisories -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """One ECOSYSTEM/SEMVER range: ordered events introduced / fixed / last_affected / limit."""

    type: str
    events: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        parts, current = [], None
        for kind, v in self.events:
            if kind == "introduced":
                current = [f">={v}"] if v != "0" else []
                parts.append(current)
            elif current is not None and kind == "fixed":
                current.append(f"<{v}")
            elif current is not None and kind == "last_affected":
                current.append(f"<={v}")
        return " | ".join(",".join(p) or "*" for p in parts)


@dataclass(frozen=True)
class Affected:
    ecosystem: str
    name: str  # normalised (package_key)
    ranges: tuple[Range, ...]
    versions: frozenset[str]


@dataclass(frozen=True)
class Finding:
    """An advisory as it concerns one version of one package."""

    advisory: Advisory
    affected: bool
    range: str
    fixed: str | None  # the first fixed version after this one (None: not affected, or no fix known)
    fixed_versions: list[str] = field(default_factory=list)  # every fix the advisory names for the package

    def to_json(self) -> dict:
        return {**self.advisory.summary_json(), "affected": self.affected, "affected_range": self.range,
                "fixed_version": self.fixed, "fixed_versions": self.fixed_versions}


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    details: str
    published: str
    modified: str
    score: float | None
    severity: str | None
    cvss: tuple[dict, ...]
    affected: tuple[Affected, ...]
    raw: dict = field(compare=False, hash=False, repr=False)

    @property
    def cve_ids(self) -> list[str]:
        return [a for a in (self.id, *self.aliases) if a.startswith("CVE-")]

    def packages(self) -> list[tuple[str, str]]:
        return sorted({(a.ecosystem, a.name) for a in self.affected})

    def summary_json(self) -> dict:
        return {"id": self.id, "aliases": list(self.aliases), "cve": (self.cve_ids or [None])[0],
                "score": self.score, "severity": self.severity, "summary": self.summary or _first_line(self.details),
                "published": self.published, "modified": self.modified}

    def to_json(self) -> dict:
        return {**self.summary_json(), "details": self.details, "cvss": list(self.cvss),
                "packages": [{"ecosystem": e, "name": n} for e, n in self.packages()],
                "affected": [{"ecosystem": a.ecosystem, "name": a.name,
                              "ranges": [r.describe() for r in a.ranges], "versions": sorted(a.versions)}
                             for a in self.affected]}

    def finding(self, ecosystem: str, name: str, version: str) -> Finding | None:
        """How this advisory concerns ``version`` of the package (None: it names another package)."""
        key = ecosystem_key(ecosystem)
        v = key(version)
        normal = _normal_version(ecosystem, version)
        concerned = False
        affected = False
        ranges: list[str] = []
        fixed: list[str] = []
        fixes: list[str] = []
        for a in self.affected:
            if (a.ecosystem, a.name) != (ecosystem, name):
                continue
            concerned = True
            if version in a.versions or normal in a.versions:
                affected = True
            for r in a.ranges:
                ranges.append(r.describe())
                fixes += [ver for kind, ver in r.events if kind == "fixed"]
                hit, fix = _in_range(r, v, key)
                affected |= hit
                if fix is not None:
                    fixed.append(fix)
        if not concerned:
            return None
        first_fix = min(fixed, key=key) if fixed else None
        return Finding(self, affected, " | ".join(dict.fromkeys(x for x in ranges if x)),
                       first_fix if affected else None, sorted(set(fixes), key=key))


def _first_line(text: str) -> str:
    line = (text or "").strip().split("\n", 1)[0]
    return line[:300]


def _in_range(r: Range, v: tuple, key) -> tuple[bool, str | None]:  # noqa: ANN001 - a sort-key function
    """OSV's evaluation: walk the events in version order; (affected, first fixing version after v)."""
    def order(e: tuple[str, str]) -> tuple:
        return (0,) if e == ("introduced", "0") else (1, key(e[1]))

    here = (1, v)
    affected = False
    later: list[str] = []
    for kind, ver in sorted(r.events, key=order):
        kv = order((kind, ver))
        if kind == "introduced" and kv <= here:
            affected = True
        elif kind in ("fixed", "limit"):
            if kv <= here:
                affected = False
            elif kind == "fixed":
                later.append(ver)
        elif kind == "last_affected" and kv < here:
            affected = False
    return affected, (later[0] if affected and later else None)


def parse_advisory(doc: Mapping) -> Advisory:
    """One OSV record → Advisory; a record without id or affected packages is a 400."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("id"), str) or not doc["id"].strip():
        raise BadRequest("an OSV record needs a string 'id'")
    vid = doc["id"].strip()
    affected = []
    for a in doc.get("affected") or []:
        pkg = a.get("package") or {}
        eco, name = pkg.get("ecosystem"), pkg.get("name")
        if not isinstance(eco, str) or not isinstance(name, str):
            continue
        eco = eco.split(":", 1)[0]
        ranges = []
        for r in a.get("ranges") or []:
            if r.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue  # GIT ranges name commits, not versions
            events = tuple((k, str(v)) for e in r.get("events") or [] for k, v in e.items()
                           if k in ("introduced", "fixed", "last_affected", "limit"))
            ranges.append(Range(r["type"], events))
        versions = frozenset(str(v) for v in a.get("versions") or [])
        affected.append(Affected(*package_key(eco, name), tuple(ranges), versions))
    if not affected:
        raise BadRequest(f"OSV record {vid} names no affected package")
    cvss = []
    for s in doc.get("severity") or []:
        kind, vector = s.get("type", ""), str(s.get("score", ""))
        cvss.append({"type": kind, "vector": vector, "score": cvss_score(kind, vector)})
    scored = sorted((c for c in cvss if c["score"] is not None), key=lambda c: c["type"], reverse=True)
    score = scored[0]["score"] if scored else None
    severity = severity_of(score)
    if severity is None:
        declared = str((doc.get("database_specific") or {}).get("severity") or "").lower()
        declared = {"moderate": "medium"}.get(declared, declared)
        severity = declared if declared in SEVERITIES else None
    return Advisory(
        id=vid,
        aliases=tuple(str(a) for a in doc.get("aliases") or []),
        summary=str(doc.get("summary") or ""),
        details=str(doc.get("details") or ""),
        published=str(doc.get("published") or ""),
        modified=str(doc.get("modified") or ""),
        score=score,
        severity=severity,
        cvss=tuple(cvss),
        affected=tuple(affected),
        raw=dict(doc),
    )


# -- reading files --------------------------------------------------------------------------------
def parse_documents(data: bytes, filename: str = "") -> list[dict]:
    """OSV records in one JSON or YAML file: one record, a list of them, or {"vulns": [...]}."""
    if len(data) > MAX_DOCUMENT:
        raise BadRequest(f"{filename or 'document'} is larger than {MAX_DOCUMENT} bytes")
    try:
        if filename.endswith((".yaml", ".yml")):
            doc = yaml.safe_load(data)
        else:
            try:
                doc = json.loads(data)
            except ValueError:
                doc = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise BadRequest(f"{filename or 'document'} is neither JSON nor YAML: {e}") from None
    doc = _plain(doc)
    if isinstance(doc, Mapping) and isinstance(doc.get("vulns"), list):
        doc = doc["vulns"]
    docs = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(d, Mapping) for d in docs):
        raise BadRequest(f"{filename or 'document'} does not hold OSV records")
    return [dict(d) for d in docs]


def _plain(value: Any) -> Any:
    """YAML reads unquoted times as datetimes: OSV means text (RFC 3339 allows the space separator),
    so a YAML record and its JSON twin import as the same record."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):  # "2023-11-14 21:15:00+00:00", as json.dump(default=str) writes it
        return str(value)
    return value


def _wanted(name: str) -> bool:
    return name.endswith((".json", ".yaml", ".yml")) and not Path(name).name.startswith(".")


def read_path(path: Path) -> Iterator[tuple[str, dict]]:
    """(source name, OSV record) from a file, a directory tree or a zip archive of them."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and _wanted(p.name):
                for d in parse_documents(p.read_bytes(), p.name):
                    yield str(p.relative_to(path)), d
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.is_dir() or not _wanted(info.filename):
                    continue
                if info.file_size > MAX_DOCUMENT:
                    raise BadRequest(f"{info.filename} in {path.name} is larger than {MAX_DOCUMENT} bytes")
                for d in parse_documents(z.read(info), info.filename):
                    yield info.filename, d
    elif path.is_file():
        for d in parse_documents(path.read_bytes(), path.name):
            yield path.name, d
    else:
        raise BadRequest(f"{path} is not a file, directory or zip archive")


def read_bytes(data: bytes, filename: str) -> list[dict]:
    """Records of an uploaded file (zip archives included)."""
    if data[:4] == b"PK\x03\x04":
        return [d for _, d in read_path_like_zip(data)]
    return parse_documents(data, filename)


def read_path_like_zip(data: bytes) -> Iterator[tuple[str, dict]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if not info.is_dir() and _wanted(info.filename):
                for d in parse_documents(z.read(info), info.filename):
                    yield info.filename, d


# -- the index the policy and the views use --------------------------------------------------------
class CveIndex:
    """Advisories by (ecosystem, package): what concerns a conda record, cached per version."""

    def __init__(self, advisories: Iterable[Advisory] = (), stamp: str | None = None):
        self.advisories: dict[str, Advisory] = {}
        self.by_package: dict[tuple[str, str], list[Advisory]] = {}
        for a in advisories:
            self.advisories[a.id] = a
        for a in self.advisories.values():
            for pkg in a.packages():
                self.by_package.setdefault(pkg, []).append(a)
        self._names = {name for _, name in self.by_package} | {f"r-{n}" for e, n in self.by_package if e == "CRAN"}
        self.stamp = stamp or hashlib.sha256(
            "\n".join(f"{a.id} {a.modified}" for a in sorted(self.advisories.values(), key=lambda a: a.id)).encode()
        ).hexdigest()[:16]
        self._cache: dict[tuple[str, str, str], list[Finding]] = {}

    def __len__(self) -> int:
        return len(self.advisories)

    def may_concern(self, conda_name: str) -> bool:
        """A fast pre-check: could any advisory name this conda package?"""
        return canonicalize_name(PYPI_NAMES.get(conda_name, conda_name)) in self._names or conda_name in self._names

    def findings(self, conda_name: str, version: str, record: Mapping | None = None,
                 subdir: str | None = None) -> list[Finding]:
        """Every advisory that names this package, with whether ``version`` is affected."""
        eco = ecosystem_of(conda_name, record, subdir)
        if eco is None or eco not in self.by_package:
            return []
        ck = (*eco, version)
        hit = self._cache.get(ck)
        if hit is None:
            hit = [f for a in self.by_package[eco] if (f := a.finding(*eco, version)) is not None]
            hit.sort(key=lambda f: (-(f.advisory.score or -1), f.advisory.id))
            self._cache[ck] = hit
        return hit

    def affecting(self, conda_name: str, version: str, record: Mapping | None = None,
                  subdir: str | None = None) -> list[Finding]:
        return [f for f in self.findings(conda_name, version, record, subdir) if f.affected]


def artifact_report(index: CveIndex, name: str, files: Iterable[tuple[str, str, str, Mapping]]) -> dict:
    """The advisories concerning one package, with each file's verdict: ``files`` are
    (subdir, filename, version, record); what the artifact ``/cves`` endpoint answers."""
    files = list(files)
    by_id: dict[str, dict] = {}
    per_file = []
    eco = None
    for subdir, filename, version, record in files:
        eco = eco or ecosystem_of(name, record, subdir)
        found = index.findings(name, version, record, subdir)
        per_file.append({"subdir": subdir, "filename": filename, "version": version,
                         "cves": [f.advisory.id for f in found if f.affected],
                         "findings": [{"id": f.advisory.id, "affected": f.affected, "fixed_version": f.fixed}
                                      for f in found]})
        for f in found:
            entry = by_id.get(f.advisory.id)
            if entry is None:
                entry = by_id[f.advisory.id] = {**f.to_json(), "affected_files": [], "affected_versions": []}
                entry.pop("affected")
                entry.pop("fixed_version")
            if f.affected:
                entry["affected_files"].append({"subdir": subdir, "filename": filename, "version": version,
                                                "fixed_version": f.fixed})
                if version not in entry["affected_versions"]:
                    entry["affected_versions"].append(version)
    cves = sorted(by_id.values(), key=lambda c: (-(c["score"] or -1), c["id"]))
    for c in cves:
        c["affects_artifact"] = bool(c["affected_files"])
    return {"name": name, "ecosystem": eco[0] if eco else None, "ecosystem_name": eco[1] if eco else None,
            "advisories_known": len(index), "cves": cves, "total": len(cves),
            "affecting": sum(1 for c in cves if c["affects_artifact"]), "files": per_file}
