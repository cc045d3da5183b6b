"""Package files: upload, list, show, download, delete, bulk delete, copy and move."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from conda_platform_plugin.errors import BadRequest, NotFound, TooLarge
from conda_platform_plugin.names import check_filename, check_subdir

from ..ingest import Received
from ..repo.counted import CountedFileResponse
from ..store.channels import normalize
from ..store.files import file_json, file_key
from .insights import with_downloads
from .routing import auth_of, channel_path, identity_of, json_body, json_response, paged, paging, platform_of, routes

TAG = "files"
CHUNK = 1 << 18



@routes.route("POST", "/api/channels/{channel}/files", summary="Upload package files (multipart, field 'file', many)",
              permission="channel.write", tag=TAG, query={"subdir": "reject files whose subdir differs"},
              body="multipart/form-data with one or more 'file' parts", status=201)
async def upload(request: web.Request) -> web.Response:
    platform = platform_of(request)
    config = platform.config
    path = channel_path(request)
    await platform.channels.get(path)  # unknown channel: 404 before reading any bytes
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("upload with multipart/form-data, one 'file' part per package")
    expect = request.query.get("subdir")
    received: list[Received] = []
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name != "file" or not part.filename:
                await part.release()
                continue
            if len(received) >= config.max_files_per_upload:
                raise TooLarge(f"at most {config.max_files_per_upload} files per upload")
            filename = check_filename(part.filename)
            writer = platform.blobs.writer(config.max_upload_bytes)
            try:
                while chunk := await part.read_chunk(CHUNK):
                    writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
            received.append(Received(filename, writer.finish()))
    except BaseException:
        for r in received:
            r.blob.discard()
        raise
    if not received:
        raise BadRequest("no 'file' part in the upload")
    result = await platform.ingest(path, received, expect_subdir=expect)
    ch = await platform.channels.get(path)
    items = []
    for f, created in zip(result["files"], result["created"]):
        row = await platform.files.get(ch, f.subdir, f.filename)
        items.append({**file_json(ch, row), "created": created})
    status = 201 if any(result["created"]) else 200
    return json_response({"files": items, "generation": result["generation"]}, status=status)


@routes.route("GET", "/api/channels/{channel}/files", summary="List package files", permission="channel.read",
              tag=TAG, query={"name": "package name", "type": "artifact type", "subdir": "conda subdir",
                              "version": "version", "license": "SPDX license (normalised) or text",
                              "license_family": "license family (MIT, BSD, GPL3 ...)", "page": "page number",
                              "per_page": "items per page"})
async def list_files(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    page, per_page = paging(request)
    q = request.query
    rows, total = await platform.files.list(ch, name=q.get("name"), type_=q.get("type"), subdir=q.get("subdir"),
                                            version=q.get("version"), page=page, per_page=per_page,
                                            license=q.get("license"), license_family=q.get("license_family"))
    return json_response(paged([file_json(ch, r) for r in rows], total, page, per_page))


def _file_ref(request: web.Request) -> tuple[str, str]:
    return check_subdir(request.match_info["subdir"]), check_filename(request.match_info["filename"])


@routes.route("GET", "/api/channels/{channel}/files/{subdir}/{filename}", summary="Show a package file",
              permission="channel.read", tag=TAG)
async def show_file(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    return json_response((await with_downloads(request, ch, [await platform.files.get(ch, *_file_ref(request))]))[0])


@routes.route("GET", "/api/channels/{channel}/files/{subdir}/{filename}/download", summary="Download a package file",
              permission="channel.read", tag=TAG)
async def download_file(request: web.Request) -> web.StreamResponse:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    subdir, filename = _file_ref(request)
    row = await platform.files.get(ch, subdir, filename)
    path = platform.blobs.path(row.sha256)
    if not path.is_file():
        raise NotFound(f"the bytes of {subdir}/{filename} are not stored on this server")
    return CountedFileResponse(path, partial(platform.downloads.count, ch.id, subdir, filename),
                               {"Content-Disposition": f'attachment; filename="{filename}"',
                                "Content-Type": "application/octet-stream"})


@routes.route("DELETE", "/api/channels/{channel}/files/{subdir}/{filename}", summary="Delete a package file",
              permission="channel.write", tag=TAG)
async def delete_file(request: web.Request) -> web.Response:
    subdir, filename = _file_ref(request)
    gen = await platform_of(request).remove_files(channel_path(request), [(subdir, filename)])
    return json_response({"deleted": [f"{subdir}/{filename}"], "generation": gen})


def _keys(body: dict) -> list[tuple[str, str]]:
    refs = body.get("files")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise BadRequest("'files' must be a non-empty list of 'SUBDIR/FILENAME' strings")
    if len(refs) > 10000:
        raise BadRequest("at most 10000 files per request")
    return [file_key(r) for r in refs]


@routes.route("POST", "/api/channels/{channel}/files/delete", summary="Delete many files, all or nothing",
              permission="channel.write", tag=TAG, body='{"files": ["SUBDIR/FILENAME", ...]}')
async def bulk_delete(request: web.Request) -> web.Response:
    keys = _keys(await json_body(request))
    gen = await platform_of(request).remove_files(channel_path(request), keys)
    return json_response({"deleted": sorted(f"{s}/{f}" for s, f in set(keys)), "generation": gen})


async def _transfer(request: web.Request, move: bool) -> web.Response:
    body = await json_body(request)
    keys = _keys(body)
    target = body.get("target")
    if not isinstance(target, str):
        raise BadRequest("'target' must be a channel name (CH or CH/SUB)")
    await auth_of(request).authorize(identity_of(request), "channel.write", normalize(target))
    return json_response(await platform_of(request).transfer(channel_path(request), keys, target, move=move))


@routes.route("POST", "/api/channels/{channel}/files/copy", summary="Copy files to another channel or subchannel",
              permission="channel.read", tag=TAG, body='{"files": ["SUBDIR/FILENAME", ...], "target": "CH[/SUB]"}')
async def copy_files(request: web.Request) -> web.Response:
    return await _transfer(request, move=False)


@routes.route("POST", "/api/channels/{channel}/files/move", summary="Move files to another channel or subchannel",
              permission="channel.write", tag=TAG, body='{"files": ["SUBDIR/FILENAME", ...], "target": "CH[/SUB]"}')
async def move_files(request: web.Request) -> web.Response:
    return await _transfer(request, move=True)
