"""CRAN mirrors (mirror type ``cran``): the source of a CRAN-style repository URL (contract 5).

Each subdir's index is ``<url>/<contrib path>/PACKAGES.gz`` (else ``PACKAGES``), fetched with
conditional GETs through the engine's IndexCache; a package's bytes are at
``<url>/<contrib path>/NAME_VERSION.tar.gz`` (or the stanza's ``Path``/``DownloadURL``).

CRAN's PACKAGES gives an ``MD5sum`` but neither a sha256 nor a size, and blobs are stored by
sha256. So a mirrored file whose sha256 is not known yet gets a *placeholder* in its row
(``0`` × 32 + its md5: no blob ever has that name) and size 0:

- passive mirrors: the first request of the file downloads it once per server process
  (:func:`resolve`), checks its MD5sum (and SHA256 when the index gave one), commits the blob and
  puts the real sha256 and size into every row that had the placeholder (the record itself does
  not change, so later runs see no change). This is the deliberate design for indexes without
  sha256: the one fetcher (:mod:`proxy.mirror.fetch`) names downloads, their cross-process locks,
  part files and blobs by the sha256 it verifies, which such a file does not have before its
  bytes are read. So :func:`resolve` reads the body itself through the same ``Upstream`` and
  ``HashingWriter``: single-flight within one process, the first client answered once the blob is
  committed (not streamed), and two processes asking at once download it twice (both verify; the
  blob commit and the row update are idempotent). Every later request is served by the fetcher;
- active mirrors: the run's policy step hashes every kept file it does not know yet (the bytes
  are streamed through the hashes, not kept) so the rows get real sha256s and the engine's
  download step fetches them verified like any other type: a first active run downloads each
  new file twice. What was learnt is kept in the IndexCache by (URL, MD5sum), so no run hashes a
  file twice and a passive download teaches the active runs too.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import orjson
import sqlalchemy as sa

from conda_platform_plugin.errors import BadRequest, TooLarge, UpstreamError
from conda_platform_plugin.names import is_cran_subdir
from conda_platform_plugin.rformats import R_FILENAME, parse_dcf

from ..repo.cran_index import SRC_SUBDIR, CranDependencyIndex, contrib_path, cran_record, squash
from ..store.files import record_digest
from ..store.tables import files
from .http import Upstream, UpstreamNotFound, redact
from .kinds import SOURCES
from .records import Prepared, canonical
from .report import INDEXES
from .source import Index, IndexCache, Source

if TYPE_CHECKING:
    from ..platform import Platform

PLACEHOLDER = "0" * 32
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
VARIANTS = ("PACKAGES.gz", "PACKAGES")
#: binary file name endings by the os part of a subdir
_BINARY_EXT = {"windows": ".zip", "macosx": ".tgz"}


def is_unresolved(sha256: str) -> bool:
    return sha256.startswith(PLACEHOLDER)


def _learnt_key(url: str, md5: str) -> str:
    return f"cran-file\n{url}\n{md5}"


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
        self.mode = mirror.mode
        self.concurrency = max(1, int(getattr(mirror, "concurrency", 4) or 4))
        self._loop: asyncio.AbstractEventLoop | None = None

    async def subdirs(self) -> list[str]:
        return [SRC_SUBDIR]

    async def fetch(self, subdir: str) -> Index:
        self._loop = asyncio.get_running_loop()
        base = f"{self.url}/{contrib_path(subdir)}"
        for variant in VARIANTS:
            try:
                return await self._fetch(subdir, variant, f"{base}/{variant}")
            except UpstreamNotFound:
                continue
        return Index(subdir, "missing", url=f"{base}/PACKAGES")

    def prepare(self, index: Index, policy: object | None) -> Prepared:
        """Blocking: parse PACKAGES, filter, and (active mode) learn the sha256 of new files."""
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
        learnt = self._learnt(records, urls)
        for fn, rec in records.items():
            raw = canonical(rec)
            sha256, size = learnt.get(fn) or (PLACEHOLDER + (rec["md5"] or hashlib.md5(urls[fn].encode()).hexdigest()),
                                             0)
            out.wanted[fn] = record_digest(raw, urls[fn])
            out.kept[fn] = (raw, rec["name"], rec["version"], "", sha256, rec["md5"], size, rec["license"][:400],
                            urls[fn])
            out.extras[fn] = {"about": orjson.dumps({"license": rec["license"]}), "summary": rec.get("title", "")}
        return out

    def _learnt(self, records: dict[str, dict], urls: dict[str, str]) -> dict[str, tuple[str, int]]:
        """(sha256, size) of the kept files already learnt; active mode: of all of them (hashing the new)."""
        known: dict[str, tuple[str, int]] = {}
        unknown = []
        for fn, rec in records.items():
            hit = self.cache.cache.get(_learnt_key(urls[fn], rec["md5"] or rec.get("sha256", "")))
            if hit:
                known[fn] = (hit["sha256"], hit["size"])
            elif self.mode == "active":
                unknown.append(fn)
        if unknown and self._loop is not None:
            hashed = asyncio.run_coroutine_threadsafe(self._hash_all(unknown, records, urls), self._loop).result()
            known.update(hashed)
        return known

    async def _hash_all(self, names: list[str], records: dict[str, dict],
                        urls: dict[str, str]) -> dict[str, tuple[str, int]]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(fn: str) -> tuple[str, tuple[str, int]]:
            async with gate:
                sha256, md5, size = await _hash_url(self.upstream, urls[fn], self.max_bytes)
            _verify(records[fn], urls[fn], sha256, md5)
            await asyncio.to_thread(learn, self.cache, urls[fn], records[fn], sha256, size)
            return fn, (sha256, size)

        return dict(await asyncio.gather(*(one(fn) for fn in names)))


def _parse(index: Index) -> list[dict[str, str]]:
    body = index.body
    try:
        if index.variant.endswith(".gz"):
            body = gzip.decompress(body)
        return parse_dcf(body.decode("utf-8", errors="replace"))
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise UpstreamError(f"{redact(index.url)} is not a PACKAGES file: {e}") from None


def _filtered(out: Prepared, fn: str, name: str, version: str, rule: str, reason: str) -> None:
    out.filtered.append({"filename": fn[:400], "name": name[:200], "version": version[:100], "rule": rule[:64],
                         "reason": reason})
    out.by_rule[rule] += 1


def learn(cache: IndexCache, url: str, record: dict, sha256: str, size: int) -> None:
    cache.cache.set(_learnt_key(url, record.get("md5") or record.get("sha256", "")), {"sha256": sha256, "size": size})


def _verify(record: dict, url: str, sha256: str, md5: str) -> None:
    if (record.get("md5") and md5 != record["md5"]) or (record.get("sha256") and sha256 != record["sha256"]):
        raise UpstreamError(f"upstream sent bytes that do not match the index for {redact(url)} "
                            f"(md5 {md5}, sha256 {sha256})", detail={"url": redact(url)})


async def _hash_url(upstream: Upstream, url: str, limit: int) -> tuple[str, str, int]:
    """Stream a body through sha256 and md5 without keeping it (active runs learn the sha256s)."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    async with upstream.get(url, {"Accept-Encoding": "identity"}) as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise _too_large(url, limit)
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


def _too_large(url: str, limit: int) -> UpstreamError:
    return UpstreamError(f"{redact(url)} is larger than {limit} bytes")


# -- passive: the first request of a file -----------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """A file row's download fields (as FileStore.published() gives them) once its sha256 is known."""

    sha256: str
    size: int
    md5: str
    type: str
    source_url: str


_resolving: dict[tuple[int, str], asyncio.Future] = {}
#: (platform, placeholder) → callers of resolve() waiting right now (what an operator or a test can watch)
waiting: Counter[tuple[int, str]] = Counter()


async def resolve(platform: Platform, name: str, placeholder: str, url: str, md5: str) -> Resolved:
    """Download a passive CRAN file whose sha256 is not known yet, once per process however many
    ask; verify it against its index's MD5sum/SHA256; commit the blob; fill in the rows.

    Outside the fetcher by design (see the module docstring): it keys its downloads by the sha256
    it verifies, unknown here until the body has been read."""
    key = (id(platform), placeholder)
    task = _resolving.get(key)
    if task is None:
        task = _resolving[key] = asyncio.ensure_future(_resolve(platform, name, placeholder, url, md5))
        task.add_done_callback(lambda _t: _resolving.pop(key, None))
    waiting[key] += 1
    try:
        sha256, size = await asyncio.shield(task)
    finally:
        waiting[key] -= 1
        if waiting[key] <= 0:
            del waiting[key]
    return Resolved(sha256, size, md5, "cran", url)


async def _resolve(platform: Platform, name: str, placeholder: str, url: str, md5: str) -> tuple[str, int]:
    mine = (files.c.name == name) & (files.c.sha256 == placeholder)
    async with platform.db.read() as conn:
        rec = (await conn.execute(sa.select(files.c.record).where(mine).limit(1))).scalar()
    record = orjson.loads(rec) if rec else {"md5": md5}
    limit = platform.config.max_upload_bytes
    writer = platform.blobs.writer(limit)  # hashes sha256 and md5 as it writes
    try:
        async with platform.upstream.get(url, {"Accept-Encoding": "identity"}) as resp:
            async for chunk in resp.content.iter_chunked(1 << 20):
                await asyncio.to_thread(writer.write, chunk)
        blob = await asyncio.to_thread(writer.finish)
        _verify(record, url, blob.sha256, blob.md5)
    except TooLarge:
        writer.abort()
        raise _too_large(url, limit) from None
    except BaseException:
        writer.abort()  # (also removes a finished temp file that failed the check)
        raise
    await asyncio.to_thread(platform.blobs.commit, blob)
    async with platform.db.write() as conn:  # the bytes are known now: the same record, its real sha256
        await conn.execute(files.update().where(mine).values(sha256=blob.sha256, size=blob.size))
    await asyncio.to_thread(learn, platform.mirrors.engine.cache, url, record, blob.sha256, blob.size)
    return blob.sha256, blob.size


SOURCES["cran"] = CranSource
INDEXES["cran"] = CranDependencyIndex  # dependency reports of cran mirrors
