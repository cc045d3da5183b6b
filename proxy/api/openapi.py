"""The OpenAPI document, built from the route table, and Swagger UI served from local assets."""

from __future__ import annotations

import re

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from conda_platform_plugin import __version__

from .routing import RouteTable, json_response, routes

_PARAM = re.compile(r"{(\w+)}")
_ERROR = {"$ref": "#/components/schemas/Error"}

SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>conda-platform API</title>
<link rel="stylesheet" href="/swagger/ui/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger/ui/assets/swagger-ui-bundle.js"></script>
<script src="/swagger/ui/assets/swagger-ui-standalone-preset.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui",
presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"});</script>
</body></html>"""


def openapi_document(table: RouteTable) -> dict:
    paths: dict[str, dict] = {}
    for r in table.routes:
        if not r.path.startswith("/api/") or r.path.startswith("/api/repo"):
            continue
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in _PARAM.findall(r.path)]
        params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                   for n, d in r.query.items()]
        op = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": f"{r.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', r.path.lower()).strip('_')}",
            "parameters": params,
            "x-permission": r.permission,
            "responses": {
                str(r.status): {"description": "success", "content": {"application/json": {}}},
                "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        if r.body:
            ctype = "multipart/form-data" if r.body.startswith("multipart") else "application/json"
            op["requestBody"] = {"description": r.body, "content": {ctype: {}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "conda-platform API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": "object"}}}},
                }
            }
        },
    }


@routes.route("GET", "/api/openapi.json", summary="This API's OpenAPI document", permission="public", tag="meta")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi_document(routes))


@routes.route("GET", "/swagger/ui", summary="Swagger UI", permission="public", tag="meta")
async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(text=SWAGGER_PAGE, content_type="text/html")


def add_swagger_assets(app: web.Application) -> None:
    app.router.add_static("/swagger/ui/assets", swagger_ui_path, append_version=False)
