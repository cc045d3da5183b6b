"""The one HTTP fetcher for upstream sources: timeouts, size limits, tokens kept out of messages.

Every byte the platform takes from an upstream (indexes in mirror runs, package files in active
runs and on-demand fetches) goes through :class:`Upstream`, so that every failure surfaces as the
same two errors: :class:`UpstreamError` (502) and :class:`UpstreamTimeout` (504).
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from conda_platform_plugin.errors import UpstreamError, UpstreamTimeout

_TOKEN_SEGMENT = re.compile(r"/t/[^/]+/")
_USERINFO = re.compile(r"//[^/@]+@")


def redact(url: str) -> str:
    """The URL as it may be shown: ``/t/<token>/`` segments and user:password removed."""
    return _USERINFO.sub("//***@", _TOKEN_SEGMENT.sub("/t/***/", url))


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404 (a subdir it does not have, a file it no longer serves)."""


class Upstream:
    """A shared aiohttp session with the platform's timeouts; opened lazily on the running loop."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 30.0, user_agent: str = "conda-platform"):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout)
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                headers={"User-Agent": self.user_agent},
                auto_decompress=False,  # bytes are verified exactly as the upstream sent them
                read_bufsize=1 << 20,  # big bodies arrive in few large chunks (fewer loop wakeups)
                connector=aiohttp.TCPConnector(limit=64),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def get(self, url: str, headers: dict[str, str] | None = None,
                  ok: tuple[int, ...] = (200,), method: str = "GET") -> AsyncIterator[aiohttp.ClientResponse]:
        """GET (or ``method``) ``url``; a status outside ``ok`` and any network failure, also while
        the caller reads the body inside the ``async with``, become an upstream error."""
        shown = redact(url)
        try:
            async with self.session().request(method, url, headers=headers or {}, allow_redirects=True) as resp:
                if resp.status not in ok:
                    if resp.status == 404:
                        raise UpstreamNotFound(f"upstream has no {shown} (404)", detail={"url": shown, "status": 404})
                    raise UpstreamError(f"upstream answered {resp.status} for {shown}",
                                        detail={"url": shown, "status": resp.status})
                yield resp
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeout(f"upstream timed out for {shown}", detail={"url": shown}) from e
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream failed for {shown}: {e.__class__.__name__}: {redact(str(e))}",
                                detail={"url": shown}) from e

    async def read(self, url: str, *, limit: int, headers: dict[str, str] | None = None,
                   ok: tuple[int, ...] = (200,)) -> tuple[int, dict[str, str], bytes]:
        """The whole body (at most ``limit`` bytes, decoded) with the status and headers. Indexes are
        asked for gzip-coded (PyPI and our own server compress pages) and decoded here: the session
        does not decompress, so that package files are verified exactly as sent. The body returned is
        the content without its coding: a ``.gz`` file its server labels ``Content-Encoding: gzip``
        (Apache's ``AddEncoding``) arrives already gunzipped."""
        async with self.get(url, {"Accept-Encoding": "gzip", **(headers or {})}, ok) as resp:
            coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if coding not in _CODINGS:
                raise UpstreamError(f"upstream sent {redact(url)} in Content-Encoding {coding!r}, not asked for")
            decoder = GzipDecoder() if _CODINGS[coding] and resp.status not in (204, 304) else None
            chunks, total = [], 0
            try:
                async for chunk in resp.content.iter_chunked(1 << 20):  # network errors: see get()
                    if decoder is not None:
                        chunk = decoder.decode(chunk, limit - total + 1)  # (more than that: over the limit)
                    total += len(chunk)
                    if total > limit:
                        raise UpstreamError(f"upstream body of {redact(url)} is over the limit of {limit} bytes")
                    chunks.append(chunk)
                if decoder is not None:
                    decoder.finish()
            except zlib.error as e:
                raise UpstreamError(f"upstream sent a broken gzip body for {redact(url)}: {e}") from None
            return resp.status, dict(resp.headers), b"".join(chunks)


#: the content codings read() accepts, and whether each is gzip (RFC 9110 8.4.1.3: x-gzip is gzip)
_CODINGS = {"identity": False, "gzip": True, "x-gzip": True}


class GzipDecoder:
    """Incremental gzip decoding of every member of a body (RFC 1952: a gzip stream is one or more
    members, and ``zlib.decompressobj`` stops after the first), at most ``room`` bytes per call;
    zero bytes between and after members are skipped, as Python's gzip module skips them."""

    def __init__(self) -> None:
        self._member: zlib._Decompress | None = zlib.decompressobj(wbits=31)  # the first member is required

    def decode(self, data: bytes, room: int) -> bytes:
        """The bytes ``data`` decodes to, stopping once ``room`` came out (the caller then refuses
        the body as too large: it asks for one byte more than it takes); zlib.error for a body
        that is not gzip."""
        out: list[bytes] = []
        while data and room > 0:
            if self._member is None:  # between members: padding, or the next member's header
                data = data.lstrip(b"\0")
                if not data:
                    break
                self._member = zlib.decompressobj(wbits=31)
            piece = self._member.decompress(data, room)
            out.append(piece)
            room -= len(piece)
            if self._member.eof:
                data = self._member.unused_data
                self._member = None
            else:
                data = b""  # all taken in, or the output reached room (unconsumed_tail: over the limit)
        return b"".join(out)

    def finish(self) -> None:
        """zlib.error when the body ended inside a member."""
        if self._member is not None:
            raise zlib.error("the gzip stream ends early")
