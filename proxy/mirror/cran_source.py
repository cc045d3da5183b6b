"""CRAN mirrors (mirror type ``cran``): the source of a CRAN-style repository URL (contract 5).

Each subdir's index is ``<url>/<contrib path>/PACKAGES.gz`` (else ``PACKAGES``), fetched with
conditional GETs through the engine's IndexCache; a package's bytes are at
``<url>/<contrib path>/NAME_VERSION.tar.gz`` (or the stanza's ``Path``/``DownloadURL``).

CRAN's PACKAGES gives an ``MD5sum`` but neither a sha256 nor a size, and blobs are stored by
sha256. So a mirrored file's row names its bytes by a *download key* until they are read: the
stanza's SHA256 when the index has one (R-hub's do), else an MD5 key (``0`` × 32 + its MD5sum, see
:func:`proxy.mirror.fetch.md5_key`: no blob ever has that name), and size 0 (not known).

The one fetcher (:mod:`proxy.mirror.fetch`) downloads such a file like any other: once for all the
server processes, streamed to its first clients as it lands, verified by the key (an MD5 key by its
md5, in the leader and in followers alike; a wrong body cuts the clients' downloads and stores
nothing), and committed under the sha256 hashed while it streamed. Whoever sees it stored then
:func:`proxy.store.files.settle` s the rows: their real sha256 and size (idempotent; the record
itself does not change, so later runs see no change). Passive mirrors do that on the first request
(``proxy.repo.conda.serve_file``, every route's), active mirrors in the engine's download step,
which reads each new file once.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import Any
from urllib.parse import urljoin

import orjson

from conda_platform_plugin.errors import BadRequest, UpstreamError
from conda_platform_plugin.names import is_cran_subdir
from conda_platform_plugin.rformats import R_FILENAME, parse_dcf

from ..repo.cran_index import SRC_SUBDIR, CranDependencyIndex, contrib_path, cran_record, squash
from ..store.files import record_digest
from .fetch import md5_key
from .http import Upstream, UpstreamNotFound, redact
from .kinds import SOURCES
from .records import Prepared, canonical
from .report import INDEXES
from .source import Index, IndexCache, Source

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
VARIANTS = ("PACKAGES.gz", "PACKAGES")
#: binary file name endings by the os part of a subdir
_BINARY_EXT = {"windows": ".zip", "macosx": ".tgz"}


def check_subdirs(value: object) -> list[str] | None:
    """A cran mirror's subdirs: ``cran-src`` and/or ``cran-bin-<os>-<R x.y>`` (null: sources only)."""
    if value is None or value == "all":
        return None
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise BadRequest("'subdirs' of a cran mirror must be a list like [\"cran-src\", \"cran-bin-windows-4.2\"]")
    unknown = [s for s in value if not is_cran_subdir(s)]
    if unknown:
        raise BadRequest(f"unknown cran subdir(s): {', '.join(unknown)} (use 'cran-src' or 'cran-bin-<os>-<R x.y>')",
                         detail={"subdirs": unknown})
    return sorted(set(value))


class CranSource(Source):
    type = "cran"

    def __init__(self, upstream: Upstream, cache: IndexCache, mirror: Any, *, max_bytes: int):  # noqa: ANN401
        super().__init__(upstream, cache, mirror.source_url, max_bytes=max_bytes)

    async def subdirs(self) -> list[str]:
        return [SRC_SUBDIR]

    async def fetch(self, subdir: str) -> Index:
        base = f"{self.url}/{contrib_path(subdir)}"
        for variant in VARIANTS:
            try:
                return await self._fetch(subdir, variant, f"{base}/{variant}")
            except UpstreamNotFound:
                continue
        return Index(subdir, "missing", url=f"{base}/PACKAGES")

    def prepare(self, index: Index, policy: object | None) -> Prepared:
        """Blocking: parse PACKAGES and filter (no bytes are read: rows name them by a download key)."""
        stanzas = _parse(index)
        out = Prepared(index.subdir, {}, type="cran", seen=len(stanzas))
        base = index.url.rsplit("/", 1)[0]
        ext = _BINARY_EXT.get(index.subdir.removeprefix("cran-bin-").split("-")[0], ".tar.gz") \
            if index.subdir != SRC_SUBDIR else ".tar.gz"
        records: dict[str, dict] = {}
        urls: dict[str, str] = {}
        for fields in stanzas:
            name, version = fields.get("Package", ""), fields.get("Version", "")
            fn = f"{name}_{version}{ext}"
            if not R_FILENAME.match(fn):
                _filtered(out, fn, name, version, "invalid", "not an R package name and version")
                continue
            md5 = squash(fields.get("MD5sum", "")).lower()  # (a folded SHA256 line continues on the next)
            sha = squash(fields.get("SHA256", "")).lower()
            if not _MD5.match(md5) and not _SHA256.match(sha):
                _filtered(out, fn, name, version, "checksum", "no MD5sum or SHA256: its bytes could not be verified")
                continue
            try:
                records[fn] = cran_record(fields, md5=md5 if _MD5.match(md5) else "", size=0,
                                          sha256=sha if _SHA256.match(sha) else None, timestamp=0)
            except ValueError as e:
                _filtered(out, fn, name, version, "invalid", str(e))
                continue
            url = fields.get("DownloadURL") or f"{base}/{fields['Path'].strip('/') + '/' if fields.get('Path') else ''}{fn}"
            urls[fn] = urljoin(index.url, url)
        if policy is not None:
            for fn, verdict in policy.exclusions(index.subdir, records).items():  # type: ignore[attr-defined]
                if fn in records:
                    rec = records.pop(fn)
                    _filtered(out, fn, rec["name"], rec["version"], verdict.rule, verdict.reason)
        for fn, rec in records.items():
            raw = canonical(rec)
            key = rec.get("sha256") or md5_key(rec["md5"])  # (the stronger check when the index has both)
            out.wanted[fn] = record_digest(raw, urls[fn])
            out.kept[fn] = (raw, rec["name"], rec["version"], "", key, rec["md5"], 0, rec["license"][:400], urls[fn])
            out.extras[fn] = {"about": orjson.dumps({"license": rec["license"]}), "summary": rec.get("title", "")}
        return out


def _parse(index: Index) -> list[dict[str, str]]:
    body = index.body
    try:
        # the gzip magic, not the name: a PACKAGES.gz its server labels Content-Encoding: gzip
        # arrives already decoded (Upstream.read); gzip.decompress reads every member
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        return parse_dcf(body.decode("utf-8", errors="replace"))
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise UpstreamError(f"{redact(index.url)} is not a PACKAGES file: {e}") from None


def _filtered(out: Prepared, fn: str, name: str, version: str, rule: str, reason: str) -> None:
    out.filtered.append({"filename": fn[:400], "name": name[:200], "version": version[:100], "rule": rule[:64],
                         "reason": reason})
    out.by_rule[rule] += 1


SOURCES["cran"] = CranSource
INDEXES["cran"] = CranDependencyIndex  # dependency reports of cran mirrors
