"""Package file responses that count a download once its whole body has gone out.

Counted: a GET answered 200, or 206 whose range ends at the file's last byte (a resumed download
that completes; the other parts of a split download do not each count). Not counted: HEAD, 304,
416, and bodies cut short (the client went away, or an on-demand fetch failed mid-stream).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def completes(method: str, status: int, content_range: str | None) -> bool:
    """Whether a response that went out whole is a completed download."""
    if method != "GET":
        return False
    if status == 200:
        return True
    m = _RANGE.fullmatch(content_range or "") if status == 206 else None
    return m is not None and int(m[2]) == int(m[3]) - 1


class CountedFileResponse(web.FileResponse):
    """A FileResponse (sendfile, ETag, 304, Range) that calls ``on_complete`` after the body is sent."""

    def __init__(self, path: Path, on_complete: Callable[[], None], headers: dict[str, str]):
        super().__init__(path, headers=headers)
        self._on_complete = on_complete

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)  # sends the whole body; raises when the client goes away
        if completes(request.method, self.status, self.headers.get("Content-Range")):
            self._on_complete()
        return writer


def counted(request: web.Request, resp: web.StreamResponse, path: Path,
            on_complete: Callable[[], None]) -> web.StreamResponse:
    """Count the on-demand fetcher's answer: a file response yet to be sent becomes a counted one; a
    response it already streamed counts when it ended with the connection intact (a cut is an abort)."""
    if isinstance(resp, web.FileResponse) and not resp.prepared:
        return CountedFileResponse(path, on_complete, dict(resp.headers))
    transport = request.transport
    if resp.prepared and transport is not None and not transport.is_closing() and \
            completes(request.method, resp.status, resp.headers.get("Content-Range")):
        on_complete()
    return resp
