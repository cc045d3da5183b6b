"""The PyPI simple repository API of a channel at ``/api/repo/<ch>[/<sub>]/pypi/`` (DESIGN.md §5).

``simple/`` lists the projects, ``simple/<project>/`` is a project's page, both as PEP 503 HTML or
PEP 691 JSON chosen from the Accept header (q-values; ``?format=`` overrides); ``files/<filename>``
serves a file's bytes (HEAD, Range; a passive mirror's file is fetched on first request) and
``files/<filename>.metadata`` its core metadata (PEP 658). Pages are files rendered once per
published generation (proxy/repo/pypi_index.py): no database query answers one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

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


class PageCache:
    """Rendered pages in memory: a page file never changes once its generation is rendered, and
    answering a small page from bytes skips FileResponse's stat/open/sendfile round trips."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self.size = 0
        self.pages: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()

    def get(self, path: Path) -> tuple[bytes, str] | None:
        try:  # the file's identity is part of the key: a channel id reused after a delete renders anew
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self.pages.get(key)
        if hit is not None:
            self.pages.move_to_end(key)
            return hit
        try:
            body = path.read_bytes()  # a few KB: cheaper inline than a thread hop
        except FileNotFoundError:
            return None
        hit = (body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"')
        self.pages[key] = hit
        self.size += len(body)
        while self.size > self.max_bytes and self.pages:
            self.size -= len(self.pages.popitem(last=False)[1][0])
        return hit


PAGES = PageCache()


def _page(request: web.Request, path: Path, variant: tuple[str, str]) -> web.Response:
    hit = PAGES.get(path)
    if hit is None:
        raise NotFound(f"{path.stem} is not a project of this channel")
    body, etag = hit
    headers = {"Content-Type": variant[1], "Vary": "Accept", "Cache-Control": INDEX_CACHE, "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


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
            return _page(request, base / f"simple.{variant[0]}", variant)
        project = normalize_name(rest[1])
        if project != rest[1]:  # as PyPI does: the normalized name is the page's one URL
            head, _, _ = request.path.rstrip("/").rpartition("/")
            raise _moved(request, f"{head}/{project}/")
        if base is None:
            raise NotFound(f"{project} is not a project of this channel")
        return _page(request, base / "p" / f"{project}.{variant[0]}", variant)
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
