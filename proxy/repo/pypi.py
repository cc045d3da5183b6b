"""The PyPI simple repository API of a channel at ``/api/repo/<ch>[/<sub>]/pypi/`` (DESIGN.md §5).

``simple/`` lists the projects, ``simple/<project>/`` is a project's page, both as PEP 503 HTML or
PEP 691 JSON chosen from the Accept header (q-values; ``?format=`` overrides); ``files/<filename>``
serves a file's bytes (HEAD, Range; a passive mirror's file is fetched on first request) and
``files/<filename>.metadata`` its core metadata (PEP 658). Pages are files rendered once per
published generation (proxy/repo/pypi_index.py): no database query answers one.

Pages are answered from memory (``PageCache``), in the content coding the client accepts of the
two real installers send: pip ``gzip, deflate``, uv ``gzip, deflate, zstd``. Each coding of a page
is compressed once, on its first request, and kept beside the page with its own strong ETag
(``Vary: Accept, Accept-Encoding``). A Range request gets bytes of the representation it selects
(RFC 9110 §14: ranges apply to the selected representation, here the compressed bytes), and
If-Range compares that representation's ETag.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import zstandard
from aiohttp import web

from conda_platform_plugin.errors import NotFound
from conda_platform_plugin.names import PYPI_SUBDIR, check_filename
from conda_platform_plugin.pyformats import normalize_name

from ..platform import Platform
from ..store.serving import Served
from .conda import INDEX_CACHE, PROTOCOLS, serve_file

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
#: media type -> (the variant served, the Content-Type answered)
MEDIA = {
    JSON: ("json", JSON),
    "application/vnd.pypi.simple.latest+json": ("json", JSON),
    HTML: ("html", HTML),
    "application/vnd.pypi.simple.latest+html": ("html", HTML),
    "text/html": ("html", "text/html; charset=utf-8"),
    "*/*": ("html", "text/html; charset=utf-8"),
}
EMPTY = {"json": b'{"meta":{"api-version":"1.1"},"projects":[]}',
         "html": b"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">"
                 b"<title>Simple index</title></head><body></body></html>\n"}


def negotiate(accept: str | None, fmt: str | None = None) -> tuple[str, str] | None:
    """(variant, Content-Type) for an Accept header (PEP 691: highest q wins, then the order
    given); None when nothing acceptable is offered (a 406)."""
    if fmt:
        return MEDIA.get(fmt)
    if not accept or not accept.strip():
        return MEDIA["text/html"]
    best: tuple[float, int, tuple[str, str]] | None = None
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        found = MEDIA.get(media.lower())
        if found is None or q <= 0:
            continue
        if best is None or (q, -i) > (best[0], best[1]):
            best = (q, -i, found)
    return best[2] if best else None


#: the content codings pages are offered in, preferred first when a client accepts both
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": lambda body: zstandard.ZstdCompressor(level=10).compress(body),  # (a compressor is one thread's)
    "gzip": lambda body: gzip.compress(body, compresslevel=6, mtime=0),
}
#: pages larger than this are compressed in a thread, not on the event loop
INLINE_COMPRESS = 64 << 10
IDENTITY = "identity"
#: one representation of a page: its bytes, strong ETag and Content-Encoding (None: not coded)
Representation = tuple[bytes, str, str | None]


def accepted_coding(accept_encoding: str | None) -> str:
    """The coding of ENCODERS to answer with for an Accept-Encoding header (highest q, then our
    preference; ``*`` stands for the codings not named), else identity."""
    if not accept_encoding:
        return IDENTITY
    qs: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            qs[coding.lower()] = q
    best, best_q = IDENTITY, 0.0
    for coding in ENCODERS:
        q = qs.get(coding, qs.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


class PageCache:
    """Rendered pages in memory: a page file never changes once its generation is rendered, and
    answering a small page from bytes skips FileResponse's stat/open/sendfile round trips. Each
    entry holds the page's representations by coding, each compressed once, when first asked for."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self.size = 0
        self.pages: OrderedDict[tuple, dict[str, Representation]] = OrderedDict()

    async def get(self, path: Path, coding: str = IDENTITY) -> Representation | None:
        try:  # the file's identity is part of the key: a channel id reused after a delete renders anew
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
        entry = self.pages.get(key)
        if entry is not None:
            self.pages.move_to_end(key)
        else:
            try:
                body = path.read_bytes()  # a few KB: cheaper inline than a thread hop
            except FileNotFoundError:
                return None
            entry = self.pages[key] = {IDENTITY: (body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"',
                                                  None)}
            self._grow(len(body))
        hit = entry.get(coding)
        if hit is None:
            body, etag, _ = entry[IDENTITY]
            encode = ENCODERS[coding]
            coded = encode(body) if len(body) <= INLINE_COMPRESS else await asyncio.to_thread(encode, body)
            # not smaller (a tiny page): the plain bytes serve that client too
            hit = (coded, f'{etag[:-1]}-{coding}"', coding) if len(coded) < len(body) else entry[IDENTITY]
            if coding not in entry and self.pages.get(key) is entry:  # (evicted or filled meanwhile: not kept)
                entry[coding] = hit
                self._grow(len(hit[0]) if hit[2] else 0)
        return hit

    def _grow(self, n: int) -> None:
        self.size += n
        while self.size > self.max_bytes and self.pages:
            _, evicted = self.pages.popitem(last=False)
            self.size -= len(evicted[IDENTITY][0]) + sum(len(b) for b, _, coding in evicted.values() if coding)


PAGES = PageCache()


def _matches(etag: str, header: str) -> bool:
    """If-None-Match's weak comparison against one of our strong ETags."""
    return any(t.strip() in ("*", etag, "W/" + etag) for t in header.split(","))


#: what ``_range`` answers when nothing of a range is satisfiable (a 416)
UNSATISFIABLE = slice(0, 0)


def _range(request: web.Request, size: int, etag: str) -> slice | None:
    """The bytes a GET's Range asks for (None: the whole representation, also for what RFC 9110
    §14.2 lets a server ignore: malformed or several ranges, an If-Range of another
    representation); UNSATISFIABLE when nothing of it is in the representation."""
    if request.method != "GET" or "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:  # strong comparison; we send no Last-Modified
        return None
    try:
        rng = request.http_range
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start < 0:  # the last -start bytes
        start = max(0, size + start)
    if start >= size or request.headers["Range"].strip().lower() == "bytes=-0":  # (a suffix of nothing)
        return UNSATISFIABLE
    return slice(start, min(stop, size) if stop is not None else size)


async def _page(request: web.Request, path: Path, variant: tuple[str, str]) -> web.Response:
    hit = await PAGES.get(path, accepted_coding(request.headers.get("Accept-Encoding")))
    if hit is None:
        raise NotFound(f"{path.stem} is not a project of this channel")
    body, etag, coding = hit
    headers = {"Content-Type": variant[1], "Vary": "Accept, Accept-Encoding", "Cache-Control": INDEX_CACHE,
               "ETag": etag, "Accept-Ranges": "bytes"}
    if coding:
        headers["Content-Encoding"] = coding
    if _matches(etag, request.headers.get("If-None-Match", "")):
        headers.pop("Content-Encoding", None)  # (a 304 has no content to code)
        return web.Response(status=304, headers=headers)
    part = _range(request, len(body), etag)
    if part is None:
        return web.Response(body=body, headers=headers)
    if part is UNSATISFIABLE:  # (as FileResponse answers it: the size, no body)
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}", "ETag": etag,
                                                 "Vary": headers["Vary"]})
    headers["Content-Range"] = f"bytes {part.start}-{part.stop - 1}/{len(body)}"
    return web.Response(status=206, body=body[part], headers=headers)


def _moved(request: web.Request, path: str) -> web.HTTPMovedPermanently:
    """A permanent redirect to ``path`` that keeps the query string."""
    return web.HTTPMovedPermanently(path + (f"?{request.query_string}" if request.query_string else ""))


async def pypi(request: web.Request, platform: Platform, served: Served, rest: list[str]) -> web.StreamResponse:
    gen = served.subdirs.get(PYPI_SUBDIR)
    base = platform.publisher.subdir_dir(served.id, PYPI_SUBDIR, gen) if gen is not None else None
    if rest[:1] == ["simple"] and len(rest) <= 2:
        if not request.path.endswith("/"):  # PEP 503: URLs end in "/"; pip and uv follow the redirect
            raise _moved(request, request.path + "/")
        variant = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if variant is None:
            raise web.HTTPNotAcceptable(text=f"this index serves {JSON}, {HTML} and text/html\n")
        if len(rest) == 1:
            if base is None:  # a channel without python files: an empty index, not an error
                return web.Response(body=EMPTY[variant[0]], headers={"Content-Type": variant[1], "Vary": "Accept"})
            return await _page(request, base / f"simple.{variant[0]}", variant)
        project = normalize_name(rest[1])
        if project != rest[1]:  # as PyPI does: the normalized name is the page's one URL
            head, _, _ = request.path.rstrip("/").rpartition("/")
            raise _moved(request, f"{head}/{project}/")
        if base is None:
            raise NotFound(f"{project} is not a project of this channel")
        return await _page(request, base / "p" / f"{project}.{variant[0]}", variant)
    if rest[:1] == ["files"] and len(rest) == 2:
        name = check_filename(rest[1])
        if name.endswith(".metadata"):
            path = base / "m" / name if base is not None else None
            if path is None or not path.is_file():
                raise NotFound(f"no core metadata file {name} in channel {served.name!r}")
            return web.FileResponse(path, headers={"Content-Type": "text/plain; charset=utf-8",
                                                   "Cache-Control": INDEX_CACHE})
        return await serve_file(request, platform, served, PYPI_SUBDIR, name)
    raise NotFound(f"pypi/{'/'.join(rest)} is not served here (pypi/simple/ is the index)")


PROTOCOLS["pypi"] = pypi
