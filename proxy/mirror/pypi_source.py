"""A python mirror's upstream: a PEP 503/691 simple index, limited to a list of projects.

Nobody mirrors all of PyPI: a python mirror names its projects in requirements style
(``["requests>=2", "idna"]``); a specifier keeps only the versions it allows (the others are
filtered with rule ``projects``). Each project's page is fetched with a conditional GET
(IndexCache; JSON preferred, HTML understood), files without a size are asked with HEAD, and the
PEP 658 core metadata of every kept file is read when the upstream offers it (cached: it never
changes), which gives records their license, requirements and summary. All projects together
are the one pseudo-subdir "pypi" of the engine's run.

A **directory of files** works too: when the source has no project pages, its own page (any
directory listing: nginx autoindex, ``python -m http.server``) is read as a flat list of files;
files listed without a sha256 are read once to learn it (and their metadata), cached by URL,
size and ETag/Last-Modified.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import orjson
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from conda_platform_plugin.errors import BadRequest, InvalidPackage, UpstreamError, UpstreamTimeout
from conda_platform_plugin.names import PYPI_SUBDIR
from conda_platform_plugin.pyformats import core_metadata_fields, file_version, read_python_package

from ..ingest.python import python_extras, python_record, wheel_tag
from ..store.files import record_digest
from .http import Upstream, UpstreamNotFound, redact
from .kinds import SOURCES
from .records import Prepared, canonical
from .source import Index, IndexCache

ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.01")
MAX_PROJECTS = 1000
METADATA_LIMIT = 4 << 20
#: HEAD and metadata requests at once
CONCURRENCY = 8
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_projects(value: object) -> list[str]:
    """The ``projects`` of a python mirror: requirement strings (name and optional specifier)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadRequest("'projects' is required for a python mirror: a list of requirements such as "
                         '["requests>=2", "idna"] (nobody mirrors all of PyPI)')
    if len(value) > MAX_PROJECTS:
        raise BadRequest(f"'projects' lists {len(value)} requirements; at most {MAX_PROJECTS}")
    out, seen = [], set()
    for text in value:
        try:
            req = Requirement(text.strip())
        except InvalidRequirement as e:
            raise BadRequest(f"invalid requirement {text!r} in 'projects': {e}", detail={"projects": text}) from None
        if req.marker is not None or req.url:
            raise BadRequest(f"requirement {text!r}: a mirror's project is a name and an optional version "
                             "specifier (no markers or URLs)", detail={"projects": text})
        key = canonicalize_name(req.name)
        if key in seen:
            raise BadRequest(f"project {key!r} appears twice in 'projects'", detail={"projects": text})
        seen.add(key)
        out.append(f"{req.name}{req.specifier}")
    return out


class _Links(HTMLParser):
    """The anchors of a PEP 503 page: (href, attributes)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, dict[str, str | None]]] = []
        self._open: tuple[str, dict] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            a = dict(attrs)
            if a.get("href"):
                self._open, self._text = (str(a["href"]), a), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            href, attrs = self._open
            attrs["_text"] = "".join(self._text).strip()
            self.links.append((href, attrs))
            self._open = None


def parse_project_page(body: bytes, content_type: str, page_url: str) -> list[dict]:
    """The files of a project page (PEP 691 JSON or PEP 503 HTML) in the JSON form: filename,
    url (absolute), hashes, requires-python, yanked, size, upload-time, core-metadata."""
    if "json" in content_type:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise UpstreamError(f"{redact(page_url)} is not valid JSON: {e}") from None
        out = []
        for f in doc.get("files") or ():
            if not isinstance(f, dict) or not isinstance(f.get("filename"), str) or not isinstance(f.get("url"), str):
                continue
            meta = f.get("core-metadata", f.get("dist-info-metadata", False))
            out.append({**f, "url": urljoin(page_url, f["url"]), "core-metadata": meta})
        return out
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    out = []
    for href, attrs in parser.links:
        url, _, fragment = urljoin(page_url, href).partition("#")
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or str(attrs.get("_text") or "")
        hashes = {}
        algo, _, value = fragment.partition("=")
        if algo and value:
            hashes[algo] = value
        meta_attr = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        if meta_attr is None:
            meta: Any = False
        elif "=" in meta_attr:
            k, _, v = meta_attr.partition("=")
            meta = {k: v}
        else:
            meta = True
        yanked = attrs.get("data-yanked")
        out.append({"filename": filename, "url": url, "hashes": hashes,
                    "requires-python": attrs.get("data-requires-python") or None,
                    "yanked": False if yanked is None else (yanked or True), "core-metadata": meta})
    return out


class PypiSource:
    type = "python"

    def __init__(self, upstream: Upstream, cache: IndexCache, url: str, projects: list[str], *, max_bytes: int):
        self.upstream = upstream
        self.cache = cache
        self.url = url.rstrip("/")
        self.requirements = [Requirement(p) for p in projects]
        self.max_bytes = max_bytes

    async def subdirs(self) -> list[str]:
        return [PYPI_SUBDIR]

    async def fetch(self, subdir: str) -> Index:
        """Every project's page (conditional GETs), and what the kept files need (sizes,
        metadata): one Index whose body is the JSON of all of it."""
        gate = asyncio.Semaphore(CONCURRENCY)
        pages = await asyncio.gather(*(self._page(f"{self.url}/{canonicalize_name(r.name)}/", gate)
                                       for r in self.requirements))
        index_url = f"{self.url}/"
        if all(p is None for p in pages):  # no project pages: maybe a directory listing of files
            flat = await self._page(index_url, gate)
            if flat is not None:
                pages = [(flat[0], [f for f in flat[1] if (file_version(f["filename"]) or ("",))[0]
                                    == canonicalize_name(r.name)]) for r in self.requirements]
                pages = [p if p[1] else None for p in pages]
        if all(p is None for p in pages):
            return Index(subdir, "missing", url=index_url)
        projects: dict[str, Any] = {}
        for req, page in zip(self.requirements, pages):
            if page is None:
                projects[canonicalize_name(req.name)] = None
                continue
            projects[canonicalize_name(req.name)] = {"requirement": str(req), "files": page[1]}
        await asyncio.gather(*(self._complete(f, req, gate) for req, p in zip(self.requirements, pages)
                               if p is not None for f in p[1]))
        body = orjson.dumps({"projects": projects}, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(body).hexdigest()
        changed = any(p is not None and p[0] == "fetched" for p in pages)
        return Index(subdir, "fetched" if changed else "unchanged", index_url, "json", body, digest)

    async def _page(self, url: str, gate: asyncio.Semaphore) -> tuple[str, list[dict]] | None:
        """(fetched | unchanged, the files a page links) by a conditional GET; None for a 404."""
        async with gate:
            cached = await asyncio.to_thread(self.cache.get, url)
            headers = {"Accept": ACCEPT}
            if cached:
                if cached.get("etag"):
                    headers["If-None-Match"] = cached["etag"]
                if cached.get("last_modified"):
                    headers["If-Modified-Since"] = cached["last_modified"]
            try:
                status, resp_headers, body = await self.upstream.read(url, limit=self.max_bytes, headers=headers,
                                                                      ok=(200, 304))
            except UpstreamNotFound:
                return None
            if status == 304 and cached:
                return "unchanged", parse_project_page(cached["body"], cached["content_type"], cached["url"])
            if status == 304:
                status, resp_headers, body = await self.upstream.read(url, limit=self.max_bytes,
                                                                      headers={"Accept": ACCEPT})
        h = {k.lower(): v for k, v in resp_headers.items()}
        entry = {"etag": h.get("etag"), "last_modified": h.get("last-modified"), "body": body,
                 "content_type": h.get("content-type", "text/html"), "url": url}
        same = bool(cached) and cached.get("body") == body
        await asyncio.to_thread(self.cache.put, url, entry)
        return "unchanged" if same else "fetched", parse_project_page(body, entry["content_type"], url)

    def _wanted(self, f: dict, req: Requirement) -> bool:
        parsed = file_version(f["filename"])
        return parsed is not None and parsed[0] == canonicalize_name(req.name) and _allows(req, parsed[1])

    async def _complete(self, f: dict, req: Requirement, gate: asyncio.Semaphore) -> None:
        """A kept file's size (HEAD when the page has none) and core metadata (PEP 658); a file
        the page gives no sha256 for (a directory listing) is read once to learn it."""
        if not self._wanted(f, req):
            return
        if not _SHA256.fullmatch(str((f.get("hashes") or {}).get("sha256", "")).lower()):
            async with gate:
                await self._learn(f)
            return
        async with gate:
            if not isinstance(f.get("size"), int):
                f["size"] = await self._size(f["url"], f["hashes"]["sha256"])
            meta = f.get("core-metadata")
            if meta:
                f["_metadata"] = await self._metadata(f["url"] + ".metadata",
                                                      meta.get("sha256") if isinstance(meta, dict) else None)

    async def _size(self, url: str, sha256: str) -> int | None:
        """A file's size by HEAD, kept by URL and sha256 (the same bytes never change size)."""
        key = f"size:{url}:{sha256}"
        hit = await asyncio.to_thread(self.cache.get, key)
        if hit is not None:
            return hit["size"]
        try:
            async with self.upstream.get(url, method="HEAD") as resp:
                size = resp.content_length
        except (UpstreamError, UpstreamTimeout):  # no size: the file is filtered with the reason
            return None
        if size:
            await asyncio.to_thread(self.cache.put, key, {"size": size})
        return size

    async def _learn(self, f: dict) -> None:
        """sha256, size and core metadata of a file by reading it, cached by URL, size and the
        upstream's validator (ETag or Last-Modified): later runs only ask a HEAD."""
        url = f["url"]
        try:
            async with self.upstream.get(url, method="HEAD") as resp:
                size, tag = resp.content_length, resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        except (UpstreamError, UpstreamTimeout):  # unknown: the file is filtered with rule sha256
            return
        key = f"learned:{url}:{size}:{tag}"
        hit = await asyncio.to_thread(self.cache.get, key) if tag else None
        if hit is None:
            hit = await self._read_file(url, f["filename"])
            if hit is None:
                return
            if tag:
                await asyncio.to_thread(self.cache.put, key, hit)
        f["hashes"], f["size"] = {"sha256": hit["sha256"]}, hit["size"]
        if hit.get("metadata"):
            f["_metadata"] = hit["metadata"]

    async def _read_file(self, url: str, filename: str) -> dict | None:
        with tempfile.TemporaryDirectory(prefix="pypi-learn-") as tmp:
            path = Path(tmp) / "file"
            digest, size = hashlib.sha256(), 0
            try:
                async with self.upstream.get(url) as resp:
                    with path.open("wb") as out:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            size += len(chunk)
                            if size > self.max_bytes:
                                return None
                            digest.update(chunk)
                            out.write(chunk)
            except UpstreamError:
                return None
            try:
                pkg = await asyncio.to_thread(read_python_package, path, filename)
                metadata = pkg.metadata.decode("latin-1")
            except InvalidPackage:
                metadata = None
        return {"sha256": digest.hexdigest(), "size": size, "metadata": metadata}

    async def _metadata(self, url: str, sha256: str | None) -> str | None:
        """The PEP 658 file as text (kept bytes: latin-1 round trip), from the cache when known."""
        key = f"pep658:{url}:{sha256}"
        hit = await asyncio.to_thread(self.cache.get, key)
        if hit is not None:
            return hit.get("text")
        try:
            _, _, body = await self.upstream.read(url, limit=METADATA_LIMIT)
        except UpstreamError:
            return None  # metadata is a bonus: the record is made from the page alone
        if sha256 and hashlib.sha256(body).hexdigest() != sha256:
            return None
        text = body.decode("latin-1")
        if sha256:  # verified: immutable, kept for the next runs
            await asyncio.to_thread(self.cache.put, key, {"text": text})
        return text

    def prepare(self, index: Index, policy: object | None) -> Prepared:
        """Blocking: records of the kept files, the others filtered with why."""
        doc = orjson.loads(index.body)
        out = Prepared(index.subdir, {}, type="python")
        records: dict[str, dict] = {}
        extras: dict[str, dict] = {}
        urls: dict[str, str] = {}
        for name, project in sorted(doc["projects"].items()):
            if project is None:
                continue
            req = Requirement(project["requirement"])
            # a version's files share their metadata: an sdist without a PEP 658 file borrows its wheel's
            shared: dict[str, dict] = {}
            for f in project["files"]:
                parsed = file_version(f["filename"])
                if parsed is not None and f.get("_metadata") and parsed[1] not in shared:
                    with contextlib.suppress(ValueError):
                        shared[parsed[1]] = core_metadata_fields(f["_metadata"].encode("latin-1"))[1]
            for f in project["files"]:
                fn = f["filename"]
                out.seen += 1
                parsed = file_version(fn)
                if parsed is None or "/" in fn or len(fn) > 400 or parsed[0] != name:
                    _filtered(out, fn, name, "", "invalid", "not a wheel or sdist of this project")
                    continue
                version = parsed[1]
                if not _allows(req, version):
                    _filtered(out, fn, name, version, "projects",
                              f"version {version} is outside the mirror's requirement {str(req)!r}")
                    continue
                sha = str((f.get("hashes") or {}).get("sha256", "")).lower()
                if not _SHA256.fullmatch(sha):
                    _filtered(out, fn, name, version, "sha256", "the index gives no sha256 for this file")
                    continue
                if not isinstance(f.get("size"), int) or f["size"] <= 0:
                    _filtered(out, fn, name, version, "size", "the upstream tells no size for this file")
                    continue
                raw_meta = f["_metadata"].encode("latin-1") if f.get("_metadata") else None
                fields: dict = {**shared.get(version, {}), "requires_python": f.get("requires-python") or ""}
                if raw_meta is not None:
                    try:
                        _, fields = core_metadata_fields(raw_meta)
                    except ValueError:
                        raw_meta = None
                    fields["requires_python"] = f.get("requires-python") or fields.get("requires_python") or ""
                yanked = f.get("yanked") or False
                records[fn] = python_record(
                    name=name, version=version, filename=fn, sha256=sha, size=f["size"], fields=fields,
                    upload_time=f.get("upload-time"), yanked=yanked,
                    metadata_sha256=hashlib.sha256(raw_meta).hexdigest() if raw_meta is not None else None)
                extras[fn] = python_extras(fields, raw_meta)
                urls[fn] = f["url"]
        if policy is not None:
            for fn, verdict in policy.exclusions(index.subdir, records).items():  # type: ignore[attr-defined]
                rec = records.pop(fn, None)
                if rec is not None:
                    _filtered(out, fn, rec["name"], rec["version"], verdict.rule, verdict.reason)
        for fn, rec in records.items():
            raw = canonical(rec)
            out.wanted[fn] = record_digest(raw, urls[fn])
            out.kept[fn] = (raw, rec["name"], rec["version"], wheel_tag(fn), rec["sha256"], "", rec["size"],
                            rec["license"], urls[fn])
            out.extras[fn] = {**extras[fn], "summary": rec["summary"]}
        return out


def _allows(req: Requirement, version: str) -> bool:
    """Whether the mirror's requirement keeps this version (pre-releases included)."""
    try:
        return req.specifier.contains(Version(version), prereleases=True) if req.specifier else True
    except InvalidVersion:
        return False


def _filtered(out: Prepared, fn: str, name: str, version: str, rule: str, reason: str) -> None:
    out.filtered.append({"filename": fn[:400], "name": name[:200], "version": version[:100], "rule": rule,
                         "reason": reason})
    out.by_rule[rule] += 1


SOURCES["python"] = lambda upstream, cache, mirror, *, max_bytes: PypiSource(
    upstream, cache, mirror.source_url, mirror.projects or [], max_bytes=max_bytes)
