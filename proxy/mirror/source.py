"""An upstream conda channel as a mirror run sees it: its subdirs and their indexes.

Indexes are fetched with conditional GETs against a diskcache of body + ETag + Last-Modified
(keyed by URL), so an unchanged upstream answers 304 and nothing is downloaded or parsed again.
``repodata.json.zst`` is preferred, then ``repodata.json``, then ``repodata.json.bz2``.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import diskcache
import orjson
import zstandard

from conda_platform_plugin.errors import UpstreamError
from conda_platform_plugin.names import KNOWN_SUBDIRS

from .http import Upstream, UpstreamNotFound, redact

if TYPE_CHECKING:
    from .records import Prepared

VARIANTS = ("repodata.json.zst", "repodata.json", "repodata.json.bz2")


@dataclass
class Index:
    """One subdir's index as the upstream has it now."""

    subdir: str
    #: fetched (new bytes), unchanged (304, or the same bytes again) or missing (404)
    status: str
    url: str = ""
    variant: str = ""
    body: bytes = b""
    digest: str = ""

    def parse(self) -> dict:
        """The repodata document (call it off the event loop: it is CPU-heavy for big subdirs)."""
        raw = decompress(self.body, self.variant)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise UpstreamError(f"{redact(self.url)} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise UpstreamError(f"{redact(self.url)} is not a repodata document")
        return doc


def decompress(body: bytes, variant: str) -> bytes:
    try:
        if variant.endswith(".zst"):
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
                return reader.read()
        if variant.endswith(".bz2"):
            return bz2.decompress(body)
    except (zstandard.ZstdError, OSError, ValueError) as e:
        raise UpstreamError(f"cannot decompress {variant}: {e}") from None
    return body


def file_url(source: str, subdir: str, repodata_url: str, info: dict | None, filename: str,
             record_url: object = None) -> str:
    """Where a package's bytes are: CEP-15 ``info.base_url`` + filename; else the record's own
    absolute ``url`` (repodata made by conda-subchannel and other re-publishers carry one); else
    <source>/<subdir>/<filename>."""
    base = (info or {}).get("base_url")
    if isinstance(base, str) and base:
        return urljoin(repodata_url, base if base.endswith("/") else base + "/") + filename
    if isinstance(record_url, str) and record_url.startswith(("http://", "https://")) \
            and record_url.endswith("/" + filename):
        return record_url
    return f"{source}/{subdir}/{filename}"


class IndexCache:
    """diskcache of upstream index bodies with their validators, shared by every mirror of the server."""

    def __init__(self, directory: Path, size_limit: int = 8 << 30):
        self.cache = diskcache.Cache(str(directory), size_limit=size_limit)

    @staticmethod
    def key(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()  # tokens in URLs never become file names

    def get(self, url: str) -> dict | None:
        return self.cache.get(self.key(url))

    def put(self, url: str, entry: dict) -> None:
        self.cache.set(self.key(url), entry)

    def close(self) -> None:
        self.cache.close()


class Source:
    """A conda channel. Other mirror types have sources of the same shape (``kinds.py``)."""

    type = "conda"

    def __init__(self, upstream: Upstream, cache: IndexCache, url: str, *, max_bytes: int):
        self.upstream = upstream
        self.cache = cache
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes

    async def subdirs(self) -> list[str]:
        """All subdirs the source has: from its channeldata.json, else by asking for each known subdir."""
        try:
            _, _, body = await self.upstream.read(f"{self.url}/channeldata.json", limit=self.max_bytes)
            listed = orjson.loads(body).get("subdirs")
            if isinstance(listed, list) and listed:
                return sorted({s for s in listed if s in KNOWN_SUBDIRS} | {"noarch"})
        except (UpstreamError, orjson.JSONDecodeError, AttributeError):
            pass
        found = await asyncio.gather(*(self._exists(s) for s in sorted(KNOWN_SUBDIRS)))
        return sorted({s for s, ok in zip(sorted(KNOWN_SUBDIRS), found) if ok} | {"noarch"})

    def prepare(self, index: Index, policy: object | None) -> Prepared:
        """Blocking (parse and filter): the engine runs it in a worker thread."""
        from .records import prepare  # records imports this module

        return prepare(index, policy, self.url)

    async def _exists(self, subdir: str) -> bool:
        for variant in ("repodata.json", "repodata.json.zst"):  # the body is not read: the answer is enough
            try:
                async with self.upstream.get(f"{self.url}/{subdir}/{variant}"):
                    return True
            except UpstreamError:
                continue
        return False

    async def fetch(self, subdir: str) -> Index:
        """The subdir's index; ``missing`` when every variant is a 404."""
        last: UpstreamError | None = None
        for variant in VARIANTS:
            url = f"{self.url}/{subdir}/{variant}"
            try:
                return await self._fetch(subdir, variant, url)
            except UpstreamNotFound as e:
                last = e
        assert last is not None
        return Index(subdir, "missing", url=f"{self.url}/{subdir}/repodata.json")

    async def _fetch(self, subdir: str, variant: str, url: str) -> Index:
        cached = await asyncio.to_thread(self.cache.get, url)
        headers = {}
        if cached:
            if cached.get("etag"):
                headers["If-None-Match"] = cached["etag"]
            if cached.get("last_modified"):
                headers["If-Modified-Since"] = cached["last_modified"]
        status, resp_headers, body = await self.upstream.read(url, limit=self.max_bytes, headers=headers,
                                                              ok=(200, 304))
        if status == 304 and cached:
            return Index(subdir, "unchanged", url, variant, cached["body"], cached["digest"])
        if status == 304:  # a 304 to an unconditional request: ask again, plainly
            status, resp_headers, body = await self.upstream.read(url, limit=self.max_bytes)
        digest = await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
        validators = {k.lower(): v for k, v in resp_headers.items()}
        entry = {"etag": validators.get("etag"), "last_modified": validators.get("last-modified"),
                 "body": body, "digest": digest}
        await asyncio.to_thread(self.cache.put, url, entry)
        same = bool(cached) and cached.get("digest") == digest
        return Index(subdir, "unchanged" if same else "fetched", url, variant, body, digest)
