"""The conda repository protocol at ``/api/repo/<ch>[/<sub>]/…`` (DESIGN.md §5).

Indexes are files rendered once per published generation: serving one is a static file response
(sendfile, strong ETag, 304, Range) found through the in-memory serving index, with no database
query. Package files are looked up in the published generation and served from the blob store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from conda_platform_plugin.errors import NotFound
from conda_platform_plugin.names import KNOWN_SUBDIRS, check_filename

from ..api.routing import platform_of, routes
from ..mirror.fetch import Stored, key_md5
from ..platform import Platform
from ..store.files import settle
from ..store.serving import Served
from .counted import CountedFileResponse, counted

INDEX_FILES = {
    "repodata.json": "application/json",
    "repodata.json.zst": "application/zstd",
    "current_repodata.json": "application/json",
    "current_repodata.json.zst": "application/zstd",
    "repodata_shards.msgpack.zst": "application/zstd",
}
INDEX_CACHE = "public, max-age=30"
IMMUTABLE = "public, max-age=31536000, immutable"
PACKAGE_CACHE = "public, max-age=3600"
PACKAGE_HEADERS = {"Content-Type": "application/octet-stream", "Cache-Control": PACKAGE_CACHE}


#: the other repository protocols under a channel, by their URL word (repo/pypi.py and repo/cran.py
#: register theirs): handler(request, platform, served channel, the path after the word)
PROTOCOLS: dict[str, Callable[[web.Request, Platform, Served, list[str]], Awaitable[web.StreamResponse]]] = {}
PROTOCOL_WORDS = ("pypi", "cran")


def split_repo_path(tail: str) -> tuple[str, list[str]]:
    """``ch[/sub]/rest…`` → (channel path, rest). Subchannel names are never subdir names."""
    parts = [p for p in tail.split("/") if p]
    if parts[:1] == ["t"] and len(parts) >= 2:  # /t/<token>/ prefix: the token is for access control
        parts = parts[2:]
    if not parts:
        raise NotFound("no channel in the repository path")
    if len(parts) >= 2 and parts[1] not in KNOWN_SUBDIRS and parts[1] not in ("channeldata.json", *PROTOCOL_WORDS) \
            and not (parts[1] == "trust" and len(parts) == 3):  # ch/trust/<file>: signing metadata
        return f"{parts[0]}/{parts[1]}", parts[2:]
    return parts[0], parts[1:]


def _not_served(what: str) -> NotFound:
    return NotFound(f"{what} is not served here")


def repo_channel(request: web.Request) -> str:
    return split_repo_path(request.match_info["tail"])[0]


@routes.route("GET", "/t/{token}/api/repo/{tail:.+}", summary="conda repository protocol, token prefix",
              permission="channel.read", tag="repo", subchannels=False, locate=repo_channel)
@routes.route("GET", "/api/repo/{tail:.+}", summary="conda repository protocol", permission="channel.read",
              tag="repo", subchannels=False, locate=repo_channel)
async def repo(request: web.Request) -> web.StreamResponse:
    platform = platform_of(request)
    channel, rest = split_repo_path(request.match_info["tail"])
    served = await platform.serving.lookup(channel)
    if served is None:
        raise NotFound(f"channel {channel!r} not found")
    try:
        return await _answer(request, platform, served, rest)
    except NotFound:
        if platform.publisher.retained(served.id, served.gen):
            raise
    # Another server process published twice since this one read the channel, and the indexes of
    # the generation it read are gone (proxy/store/retention.py): answer from the newest.
    served = await platform.serving.reload(channel)
    if served is None:
        raise NotFound(f"channel {channel!r} not found")
    return await _answer(request, platform, served, rest)


async def _answer(request: web.Request, platform: Platform, served: Served, rest: list[str]) -> web.StreamResponse:
    if rest and rest[0] in PROTOCOLS:
        return await PROTOCOLS[rest[0]](request, platform, served, rest[1:])
    if rest == ["channeldata.json"]:
        path = platform.publisher.channeldata_path(served.id, served.gen)
        return _file(path, "application/json", INDEX_CACHE)
    if len(rest) == 2 and rest[0] == "trust":  # content-trust metadata (the server's, for every channel)
        path = platform.signing.store.file(rest[1])
        if path is None:
            raise _not_served(f"trust/{rest[1]}")
        return _file(path, "application/json", INDEX_CACHE)
    if len(rest) == 2 and rest[0] in KNOWN_SUBDIRS:
        return await _subdir_file(request, platform, served, rest[0], rest[1])
    if len(rest) == 3 and rest[0] in KNOWN_SUBDIRS and rest[1] == "shards":
        gen = served.subdirs.get(rest[0])
        name = rest[2]
        if gen is None or not name.endswith(".msgpack.zst") or len(name) != 64 + 12:
            raise _not_served(f"{rest[0]}/shards/{name}")
        data = await platform.publisher.shard(served.id, rest[0], gen, name[:64])
        if data is None:
            raise _not_served(f"{rest[0]}/shards/{name}")
        return _shard_response(request, name[:64], data)
    raise _not_served("/".join(rest) or "the channel root")


async def _subdir_file(request: web.Request, platform: Platform, served: Served, subdir: str,
                       name: str) -> web.StreamResponse:
    if name in INDEX_FILES:
        gen = served.subdirs.get(subdir)
        if gen is None:
            raise NotFound(f"subdir {subdir!r} of channel {served.name!r} has no packages")
        path = platform.publisher.subdir_dir(served.id, subdir, gen) / name
        return _file(path, INDEX_FILES[name], INDEX_CACHE)
    if not name.endswith((".conda", ".tar.bz2")):
        raise _not_served(f"{subdir}/{name}")  # e.g. repodata.jlap: answered fast, without a lookup
    check_filename(name)
    return await serve_file(request, platform, served, subdir, name)


async def serve_file(request: web.Request, platform: Platform, served: Served, subdir: str,
                     name: str) -> web.StreamResponse:
    """A package file of the published generation, for every route (conda, pypi, cran): from the
    blob store, or fetched from its upstream on demand (passive mirrors: one download, streamed as
    it lands); HEAD and Range come with the file response.

    A row that names its bytes by a download key (an MD5 key: CRAN's index gives no sha256) or has
    no size learns both once they are stored, here or by any other process or mirror
    (:func:`proxy.store.files.settle`)."""
    key = served.file_key(subdir, name)
    row = platform.serving.file(key)
    if row is None:
        row = await platform.files.published(served.id, served.gen, subdir, name)
        if row is None:
            raise NotFound(f"{subdir}/{name} not found in channel {served.name!r}")
    count = partial(platform.downloads.count, served.id, subdir, name)  # completed downloads only
    fetcher = platform.fetcher
    stored = fetcher.present(row.sha256, row.source_url)
    if stored is None:
        if not row.source_url:
            raise NotFound(f"the bytes of {subdir}/{name} are not stored on this server")
        resp = await fetcher.respond(request, row, PACKAGE_HEADERS)  # a passive mirror's file
        if key_md5(row.sha256) is None and row.size:  # the row knew the bytes: nothing to learn
            return counted(request, resp, platform.blobs.path(row.sha256), count)
        stored = await fetcher.ended(row.sha256, row.source_url)  # (the commit follows the response's last bytes)
        if stored is not None:
            await _learn(platform, row, stored)
        return counted(request, resp, platform.blobs.path(stored.sha256 if stored else row.sha256), count)
    if (stored.sha256, stored.size) == (row.sha256, row.size):
        platform.serving.remember_file(key, row)
    else:  # fetched before (by another row, process or run)
        await _learn(platform, row, stored)
    return CountedFileResponse(platform.blobs.path(stored.sha256), count, dict(PACKAGE_HEADERS))


async def _learn(platform: Platform, row, stored: Stored) -> None:  # noqa: ANN001 - a row of FileStore.published
    if (stored.sha256, stored.size) != (row.sha256, row.size) and row.source_url:
        await settle(platform.db, [(row.sha256, row.source_url, stored)])


def _shard_response(request: web.Request, digest: str, data: bytes) -> web.Response:
    """A CEP-16 shard: bytes of a render's shard pack; its sha256 is its name and its strong ETag."""
    headers = {"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE, "Content-Type": "application/zstd"}
    tags = {t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")}
    if f'"{digest}"' in tags or "*" in tags:  # If-None-Match compares weakly
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, headers=headers)


def _file(path, content_type: str, cache: str) -> web.FileResponse:  # noqa: ANN001 - a Path
    if not path.is_file():  # else aiohttp answers a bare 404, not the JSON envelope
        raise NotFound(f"{path.name} is not served here")
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": cache})
