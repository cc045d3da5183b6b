"""CVE data: import OSV advisories (JSON/YAML/zip on the client, JSON records here), list, show."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest

from .routing import json_body, json_response, paged, paging, platform_of, routes

TAG = "cves"
MAX_IMPORT_BYTES = 32 << 20


@routes.route("POST", "/api/cves", summary="Import OSV records (idempotent; a changed record is updated)",
              permission="policies.manage", tag=TAG, body='{"records": [OSV record, ...]}')
async def import_cves(request: web.Request) -> web.Response:
    body = await json_body(request, max_bytes=MAX_IMPORT_BYTES)
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise BadRequest("'records' must be a non-empty list of OSV records")
    return json_response(await platform_of(request).policy.import_cves(records))


@routes.route("GET", "/api/cves", summary="List imported advisories", permission="public", tag=TAG,
              query={"q": "text in id, aliases or summary", "package": "conda or ecosystem package name",
                     "ecosystem": "PyPI or CRAN (with package)", "min_score": "CVSS base score at least",
                     "severity": "low, medium, high or critical", "page": "page number",
                     "per_page": "items per page"})
async def list_cves(request: web.Request) -> web.Response:
    q = request.query
    page, per_page = paging(request)
    try:
        min_score = float(q["min_score"]) if q.get("min_score") else None
    except ValueError:
        raise BadRequest("'min_score' must be a number") from None
    items, total = await platform_of(request).policy.cves.list(
        q=q.get("q"), package=q.get("package"), ecosystem=q.get("ecosystem"), min_score=min_score,
        severity=q.get("severity"), page=page, per_page=per_page)
    return json_response(paged(items, total, page, per_page))


@routes.route("GET", "/api/cves/{id}", summary="Show an advisory (by OSV id or an alias such as a CVE id)",
              permission="public", tag=TAG,
              query={"format": "'osv': the OSV record as imported (what the conda plugin evaluates policies with)"})
async def show_cve(request: web.Request) -> web.Response:
    advisory = await platform_of(request).policy.cves.get(request.match_info["id"])
    fmt = request.query.get("format", "")
    if fmt not in ("", "osv"):
        raise BadRequest(f"'format' must be 'osv' or left out, not {fmt!r}")
    return json_response(advisory.raw if fmt == "osv" else advisory.to_json())
