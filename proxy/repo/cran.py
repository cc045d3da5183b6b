"""The CRAN repository protocol at ``/api/repo/<ch>[/<sub>]/cran/`` (what R's ``install.packages``
and ``available.packages`` ask for): ``src/contrib/PACKAGES`` (+ ``.gz``), the newest version of
each package at ``src/contrib/NAME_VERSION.tar.gz``, older ones at
``src/contrib/Archive/NAME/NAME_VERSION.tar.gz`` (and, unlike CRAN, at ``src/contrib/`` too: one
URL of each file, the REST API's ``download_url``), binaries below ``bin/<os>/…/contrib/<R x.y>/``
with their own PACKAGES (cran_index.contrib_path).

Each cran subdir is rendered once per published generation by ``cran_index.CranRenderer`` into its
directory: ``PACKAGES``, ``PACKAGES.gz``, ``PACKAGES.rds`` (the matrix R reads first, written in
R's serialization format) and ``files.json`` (which file is listed, which archived: only those
are served; files the channel policy excludes are neither).

Package files are served like every route's (:func:`proxy.repo.conda.serve_file`): files of
passive CRAN mirrors are fetched on their first request by the one on-demand fetcher and streamed
as they land. Until then their rows name them by a download key (an MD5 key when the index gave no
SHA256: CRAN's never does) and size 0; whoever sees the blob stored puts its real sha256 and size
into the rows (:func:`proxy.store.files.settle`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from conda_platform_plugin.errors import NotFound
from conda_platform_plugin.names import check_filename

from .conda import INDEX_CACHE, PROTOCOLS, serve_file
from .cran_index import INDEX_TYPES, LISTING, contrib_path, locate

if TYPE_CHECKING:
    from ..platform import Platform
    from ..store.serving import Served

#: the file listings of this many recent renders are kept parsed in memory
LISTINGS = 16


# -- serving -----------------------------------------------------------------------------------
_listings: OrderedDict[tuple[Path, int], tuple[set[str], dict[str, str]]] = OrderedDict()


def _listing(directory: Path) -> tuple[set[str], dict[str, str]]:
    """The render's listing; keyed by its file's identity too (a deleted channel's id and
    generation numbers may come back with a new channel)."""
    path = directory / LISTING
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise NotFound("this CRAN index is not rendered") from None
    key = (directory, stat.st_ino ^ stat.st_mtime_ns)
    hit = _listings.get(key)
    if hit is None:
        doc = orjson.loads(path.read_bytes())
        hit = _listings[key] = (set(doc["current"]), doc["archive"])
        while len(_listings) > LISTINGS:
            _listings.popitem(last=False)
    return hit


async def handle(request: web.Request, platform: Platform, served: Served, rest: list[str]) -> web.StreamResponse:
    subdir, tail = locate(rest)
    gen = served.subdirs.get(subdir)
    if gen is None:
        raise NotFound(f"channel {served.name!r} has no R packages at cran/{contrib_path(subdir)}")
    directory = platform.publisher.subdir_dir(served.id, subdir, gen)
    if len(tail) == 1 and tail[0] in INDEX_TYPES:
        path = directory / tail[0]
        if not path.is_file():
            raise NotFound(f"{tail[0]} is not rendered")
        return web.FileResponse(path, headers={"Content-Type": INDEX_TYPES[tail[0]], "Cache-Control": INDEX_CACHE})
    current, archive = await asyncio.to_thread(_listing, directory)
    if len(tail) == 1 and (tail[0] in current or tail[0] in archive):  # (older versions: also in Archive/)
        filename = tail[0]
    elif len(tail) == 3 and tail[0] == "Archive" and archive.get(tail[2]) == tail[1]:
        filename = tail[2]
    else:
        raise NotFound(f"cran/{'/'.join(rest)} not found in channel {served.name!r}")
    check_filename(filename)
    return await serve_file(request, platform, served, subdir, filename)


PROTOCOLS["cran"] = handle
