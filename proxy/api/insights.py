"""Package insights beside the artifact endpoints: dependents (from the publish-time reverse index),
the readme's formats, badges and their embed snippets, SBOMs of package files."""

from __future__ import annotations

import hashlib
import time
import weakref
from datetime import datetime, timezone
from urllib.parse import quote

import orjson
from aiohttp import web

from conda_platform_plugin import badges, sbom
from conda_platform_plugin.errors import BadRequest, NotFound
from conda_platform_plugin.licenses import normalize as normalize_license
from conda_platform_plugin.names import check_filename, check_subdir
from conda_platform_plugin.sbom import SbomPackage

from ..auth import presented_token
from ..mirror.pypi_deps import closure as python_closure
from ..repo import repo_path
from ..repo.cran_index import closure as cran_closure
from ..store.artifacts import ArtifactStore, check_type, dependencies_json
from ..store.closure import closure_of
from ..store.dependents import closure_index, records_index
from ..store.files import file_json
from .routing import channel_path, json_response, paged, paging, platform_of, routes

TAG = "artifacts"
ONE = "/api/channels/{channel}/artifacts/{type}/{name}"
#: rendered readmes are package authors' text: no script runs, nothing loads but images
HTML_HEADERS = {"Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff"}


async def with_downloads(request: web.Request, channel, rows: list) -> list[dict]:  # noqa: ANN001 - a Channel
    """file_json() of each row with its download count."""
    counts = await platform_of(request).downloads.file_counts(channel.id, [(r.subdir, r.filename) for r in rows])
    return [{**file_json(channel, r), "downloads": counts[(r.subdir, r.filename)]} for r in rows]


def readme_format(request: web.Request) -> str:
    """markdown or html (JSON answers); html-page: the HTML itself, for ``Accept: text/html``."""
    fmt = request.query.get("format")
    if fmt is None:
        accept = request.headers.get("Accept", "")
        return "html-page" if "text/html" in accept and "application/json" not in accept else "markdown"
    if fmt not in ("markdown", "html"):
        raise BadRequest(f"unknown readme format {fmt!r}; known: markdown, html")
    return fmt


@routes.route("GET", ONE + "/dependents", summary="Artifacts of the channel (of the same type) whose files depend on this one",
              permission="channel.read", tag=TAG, query={"page": "page number", "per_page": "items per page"})
async def get_dependents(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    type_, name = check_type(request.match_info["type"]), request.match_info["name"]
    found = await platform.dependents.of(ch.id, name, type_)
    page, per_page = paging(request)
    return json_response({"channel": ch.name, "type": type_, "name": name,
                          **paged(found[(page - 1) * per_page : page * per_page], len(found), page, per_page)})


# -- badges --------------------------------------------------------------------------------------------
BADGE_KINDS = ("version", "license", "platforms", "updated", "downloads", "cves")
#: short enough that a new upload shows within minutes, long enough that a README page's views
#: mostly revalidate (304) instead of re-rendering
BADGE_MAX_AGE = 300
SVG_HEADERS = {"Content-Type": "image/svg+xml; charset=utf-8", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


#: a rendered badge is reused for this long within one published generation: the downloads count
#: and the "updated" colour move without a publish, so they may lag by as much
BADGE_TTL = 30.0
BADGE_CACHE_SIZE = 4096


class BadgeCache:
    """Rendered badges by (channel id, published generation, type, name, kind): a README page's
    viewers cost no database query; a publish moves the generation, so it never serves old contents
    past the publish (except a frozen channel's uploads, seen after BADGE_TTL)."""

    def __init__(self, clock=time.monotonic):  # noqa: ANN001
        self.clock = clock
        self._items: dict[tuple, tuple[float, bytes, str, bool]] = {}

    def get(self, key: tuple) -> tuple[bytes, str, bool] | None:
        hit = self._items.get(key)
        if hit is None or hit[0] <= self.clock():
            return None
        return hit[1:]

    def put(self, key: tuple, body: bytes, etag: str, private: bool) -> None:
        if len(self._items) >= BADGE_CACHE_SIZE:
            self._items.pop(next(iter(self._items)))  # the oldest entry
        self._items[key] = (self.clock() + BADGE_TTL, body, etag, private)


_BADGE_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def badge_cache(platform) -> BadgeCache:  # noqa: ANN001 - a Platform
    cache = _BADGE_CACHES.get(platform)
    if cache is None:
        cache = _BADGE_CACHES[platform] = BadgeCache()
    return cache


async def _artifact(request: web.Request):  # noqa: ANN202 - (Channel, rows)
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    rows = await ArtifactStore(platform.db).rows(ch, check_type(request.match_info["type"]),
                                                 request.match_info["name"])
    return ch, rows


async def _badge_svg(request: web.Request, kind: str, ch, rows: list) -> str:  # noqa: ANN001
    platform = platform_of(request)
    newest = rows[0]
    if kind == "version":
        return badges.version_badge(newest.version)
    if kind == "license":
        info = normalize_license(newest.license, orjson.loads(newest.record).get("license_family"))
        return badges.license_badge(info.spdx or newest.license or None)
    if kind == "platforms":
        return badges.platforms_badge(sorted({r.subdir for r in rows}))
    if kind == "updated":
        return badges.updated_badge(max(r.uploaded_at for r in rows), time.time())
    if kind == "downloads":
        return badges.downloads_badge(await platform.downloads.artifact_count(ch.id, newest.name))
    report = await platform.policy.artifact_cves(newest.name, rows)
    latest = [c for c in report["cves"] if newest.version in c["affected_versions"]]
    worst = max(latest, key=lambda c: c.get("score") or -1, default=None)
    return badges.cves_badge(len(latest), (worst or {}).get("severity"))


@routes.route("GET", ONE + "/badges/{badge}", summary="An SVG badge of the artifact (shields style): KIND.svg",
              permission="channel.read", tag=TAG, query_token=True,
              query={"token": "a token that may read the channel: how a private channel's badge is embedded"})
async def get_badge(request: web.Request) -> web.Response:
    platform = platform_of(request)
    badge = request.match_info["badge"]
    kind = badge.removesuffix(".svg")
    served = await platform.serving.lookup(channel_path(request))
    cache = badge_cache(platform)
    key = (served.id, served.gen, request.match_info["type"], request.match_info["name"], kind) if served else None
    hit = cache.get(key) if key is not None else None
    if hit is not None:
        body, etag, private = hit
    else:
        ch, rows = await _artifact(request)  # first: a private channel is a 404 whatever the badge
        if not badge.endswith(".svg") or kind not in BADGE_KINDS:
            raise NotFound(f"no badge {badge!r}; known: {', '.join(k + '.svg' for k in BADGE_KINDS)}")
        body = (await _badge_svg(request, kind, ch, rows)).encode()
        etag, private = f'"{hashlib.sha256(body).hexdigest()[:32]}"', ch.private
        if key is not None:
            cache.put(key, body, etag, private)
    headers = {**SVG_HEADERS, "ETag": etag,
               # a private channel's badge is never kept by shared caches
               "Cache-Control": f"{'private' if private else 'public'}, max-age={BADGE_MAX_AGE}"}
    tags = {t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")}
    if etag in tags or "*" in tags:
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    return web.Response(body=body, headers=headers)


@routes.route("GET", ONE + "/badges", summary="The artifact's badges with embed snippets (Markdown, HTML, rST, AsciiDoc)",
              permission="channel.read", tag=TAG, query_token=True,
              query={"token": "your token, put into a private channel's image URLs (only then)"})
async def get_badges(request: web.Request) -> web.Response:
    ch, rows = await _artifact(request)
    origin = str(request.url.origin())
    base = origin + request.path.removesuffix("/badges")
    # Only a private channel's snippets carry a token, and only the one the caller itself presented
    # in the query to authenticate this very request: no one else's token is ever put in a page.
    token = request.query.get("token")
    own = token is not None and presented_token(request, query_token=True) == token
    include = ch.private and own
    suffix = f"?token={quote(token, safe='')}" if include else ""
    items = []
    for kind in BADGE_KINDS:
        image = f"{base}/badges/{kind}.svg{suffix}"
        items.append({"kind": kind, "image_url": image, "link_url": base,
                      "snippets": badges.embed_snippets(image, base, f"{rows[0].name} {kind}")})
    headers = {"Cache-Control": "private, no-store"} if include else None
    return json_response({"channel": ch.name, "type": rows[0].type, "name": rows[0].name, "private": ch.private,
                          "token_included": include, "badges": items}, headers=headers)


@routes.route("GET", "/api/channels/{channel}/files/{subdir}/{filename}/dependencies",
              summary="A package file's dependencies, each resolved in the channel (constrains apart)",
              permission="channel.read", tag="files")
async def get_file_dependencies(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    row = await platform.files.get(ch, check_subdir(request.match_info["subdir"]),
                                   check_filename(request.match_info["filename"]))
    record = orjson.loads(row.record)
    index = await records_index(platform.db, ch.id, [*(record.get("depends") or ()), *(record.get("constrains") or ())])
    (item,) = dependencies_json([row], row.version, index)["files"]
    return json_response({"channel": ch.name, "name": row.name, "version": row.version, **item})


# -- SBOMs ---------------------------------------------------------------------------------------------
SBOM_FORMATS = {"cyclonedx": ("application/vnd.cyclonedx+json", "cdx.json"),
                "spdx": ("application/spdx+json", "spdx.json")}


def _sbom_package(ch, channel_url: str, key: tuple[str, str], record: dict, about: dict,  # noqa: ANN001
                  path: str = "") -> SbomPackage:
    license_ = normalize_license(str(record.get("license") or about.get("license") or ""),
                                 record.get("license_family"))
    return SbomPackage(ch.name, channel_url, key[0], key[1], record, about, license_.spdx, path=path)


def _channel_url(request: web.Request, ch) -> str:  # noqa: ANN001 - a Channel
    return f"{request.url.origin()}/api/repo/{ch.name}"


@routes.route("GET", "/api/channels/{channel}/files/{subdir}/{filename}/sbom",
              summary="SBOM of a package file with its dependencies resolved in the channel",
              permission="channel.read", tag="files", query={"format": "cyclonedx (CycloneDX 1.6, default) or spdx (SPDX 2.3)"})
async def get_sbom(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "cyclonedx")
    if fmt not in SBOM_FORMATS:
        raise BadRequest(f"unknown SBOM format {fmt!r}; known: {', '.join(SBOM_FORMATS)}")
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    subdir, filename = check_subdir(request.match_info["subdir"]), check_filename(request.match_info["filename"])
    row = await platform.files.get(ch, subdir, filename)
    if row.type == "cran":  # R dependencies, resolved among the channel's R packages (repo/cran_index.py)
        return _sbom_response(request, fmt, filename, *await closure_sbom(
            request, ch, row, cran_closure))
    if row.type == "python":  # Requires-Dist, resolved among the channel's python files (mirror/pypi_deps.py)
        return _sbom_response(request, fmt, filename, *await closure_sbom(
            request, ch, row, python_closure))
    if row.type != "conda":
        raise BadRequest(f"SBOMs are made for conda, python and R package files, not {row.type!r} ones")
    record = orjson.loads(row.record)
    index, abouts = await closure_index(platform.db, ch.id, [row.name, *(record.get("depends") or ())])
    channel_url = _channel_url(request, ch)
    subject = _sbom_package(ch, channel_url, (subdir, filename), record, abouts.get((subdir, filename), {}))
    deps = [(_sbom_package(ch, channel_url, (s, f), rec, about), needed)
            for s, f, rec, about, needed in closure_of(index, abouts, (subdir, filename))]
    return _sbom_response(request, fmt, filename, subject, deps)


async def closure_sbom(request: web.Request, ch, row, closure) -> tuple[SbomPackage, list]:  # noqa: ANN001
    """The subject and dependencies of a cran or python file: ``closure`` resolves them in the channel."""
    channel_url = _channel_url(request, ch)

    def package(subdir: str, filename: str, record: dict, about: dict) -> SbomPackage:
        return _sbom_package(ch, channel_url, (subdir, filename), record, about, repo_path(subdir, filename))

    record = orjson.loads(row.record)
    subject = package(row.subdir, row.filename, record, orjson.loads(row.about) if row.about else {})
    deps = [(package(s, f, rec, about), needed) for s, f, rec, about, needed in
            await closure(platform_of(request).db, ch.id, row.subdir, row.filename, record)]
    return subject, deps


def _sbom_response(request: web.Request, fmt: str, filename: str, subject: SbomPackage, deps: list) -> web.Response:
    origin = str(request.url.origin())
    now = datetime.now(timezone.utc)
    doc = sbom.cyclonedx(subject, deps, now) if fmt == "cyclonedx" else sbom.spdx(subject, deps, now, f"{origin}/sbom")
    content_type, suffix = SBOM_FORMATS[fmt]
    return web.Response(body=orjson.dumps(doc), content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}.{suffix}"'})
