"""On-demand fetch of package bytes from their upstream (DESIGN.md §6 "On-demand fetch").

A file of a passive mirror has a row (with its upstream URL, size and sha256) but no blob. The
first request for it starts one download, however many clients ask at once:

- in this process, every caller joins the same :class:`Download`;
- across server processes on one data dir, an ``flock`` on ``<inflight>/<sha256>.lock`` elects
  one leader, which writes the name of its part file into the lock file so that the other
  processes can tail that file instead of downloading again.

The leader streams the upstream body into a part file (in the blob store's temp dir, so the commit
is a rename) while hashing it (the blob store's
:class:`HashingWriter`), verifies size and sha256 against the record and commits the blob
atomically. Clients get the bytes as they land, except the last ``HOLD_BACK`` bytes, which go out
only once the body is verified: a bad upstream body is never stored and never completes a client
download (the connection is cut short instead).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from conda_platform_plugin.errors import PlatformError, TooLarge, UpstreamError, UpstreamTimeout

from ..store.blobs import BlobStore, HashingWriter
from .http import Upstream, redact

log = logging.getLogger(__name__)

#: bytes kept from clients until the body is verified (a client never sees a complete wrong file)
HOLD_BACK = 64 * 1024
READ_CHUNK = 1 << 20
#: bytes received but not yet hashed and written, at most (then receiving waits)
MAX_QUEUED = 8 << 20
#: threads writing and hashing downloads (all downloads of the process share them)
WRITERS = 4
#: how often a process that follows another process's download looks at its part file
POLL = 0.02
#: a followed part file that stops growing this long makes the follower check that its writer lives
DEAD_CHECK = 1.0
_NO_LIMIT = 1 << 42
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class Download:
    """One download in this process: its part file and how far the leader got."""

    def __init__(self, sha256: str, size: int | None, url: str, part: Path, fd: int):
        self.sha256 = sha256
        self.size = size
        self.url = url
        self.part = part
        #: a read-only descriptor of the part file: the same inode stays readable after the commit
        #: renames it into the blob store (readers take a dup() of it while the download runs)
        self.fd = fd
        self.written = 0
        #: size and sha256 match the record: readers may send the tail (the commit follows)
        self.verified = False
        self.done = False
        self.error: PlatformError | None = None
        self.task: asyncio.Task | None = None
        #: another process downloads; this one tails its part file (see Fetcher._follow)
        self.followed = False
        self._event = asyncio.Event()

    def landed(self, size: int) -> None:
        """``size`` more bytes are in the part file: readers may send them."""
        self.written += size
        self.progressed()

    def progressed(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def changed(self) -> None:
        """Return after the next progress (new bytes, or the end)."""
        await self._event.wait()

    async def result(self) -> None:
        while not self.done:
            await self.changed()
        if self.error is not None:
            raise _again(self.error)


class Fetcher:
    """Downloads blobs from their upstream URLs once, verified, for every waiting caller."""

    def __init__(self, blobs: BlobStore, upstream: Upstream, inflight_dir: Path):
        self.blobs = blobs
        self.upstream = upstream
        self.inflight = Path(inflight_dir)
        self.inflight.mkdir(parents=True, exist_ok=True)
        #: a download led by another process that shows no progress for this long is given up
        self.stall_timeout = upstream.connect_timeout + upstream.read_timeout
        self._downloads: dict[str, Download] = {}
        #: sha256 → callers of respond() and ensure_blob() right now (what an operator or a test can watch)
        self.waiting: Counter[str] = Counter()
        #: writes and hashes the downloads' bytes (hashlib and file writes release the GIL). Shared:
        #: a thread started per download cost more than a small file's whole fetch. Each download
        #: has at most one batch in it at a time, so its bytes are written in order.
        self._pool: ThreadPoolExecutor | None = None
        for lock in self.inflight.glob("*.lock"):  # downloads of processes that died: their part files go
            self._clear_dead_leader(lock.name.removesuffix(".lock"))

    async def close(self) -> None:
        """Stop the downloads of this process (nothing half-done is kept)."""
        tasks = [d.task for d in self._downloads.values() if d.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None  # (the app may start again on this platform: a new pool then)

    # -- the blob, whole -----------------------------------------------------------------------
    async def ensure_blob(self, url: str, sha256: str, size: int | None) -> None:
        """Make sure the blob is in the store: download it once (whoever else asks), verify, commit.

        Raises UpstreamError (502) / UpstreamTimeout (504); nothing is stored on failure.
        """
        watch = _Stall(self.stall_timeout)
        with self._waiting(sha256):
            while not self.blobs.exists(sha256):
                download = self._start(url, sha256, size)
                if download is not None and not download.followed:  # (following: wait for the blob)
                    await download.result()
                    return
                if self.blobs.exists(sha256):
                    return
                # another process downloads it: wait for its end (then it is there, or we try ourselves)
                watch.check(self._holder_progress(sha256), sha256)
                await asyncio.sleep(POLL)

    # -- the blob, streamed to a client --------------------------------------------------------
    async def respond(self, request: web.Request, row, headers: Mapping[str, str] | None = None  # noqa: ANN001
                      ) -> web.StreamResponse:
        """Answer a request for a file whose blob is missing (``row``: sha256, size, source_url)."""
        headers = dict(headers or {})
        blob = self.blobs.path(row.sha256)
        if request.method == "HEAD":  # from the record: no download just to answer a probe
            resp = web.StreamResponse(headers=headers)
            resp.content_length = row.size
            return resp
        if "Range" in request.headers:  # a part of a file we do not have yet: fetch it, then serve the part
            await self.ensure_blob(row.source_url, row.sha256, row.size)
            return web.FileResponse(blob, headers=headers)
        with self._waiting(row.sha256):
            watch = _Stall(self.stall_timeout)
            while True:
                if blob.is_file():
                    return web.FileResponse(blob, headers=headers)
                download = self._start(row.source_url, row.sha256, row.size)
                if download is None and not blob.is_file():  # another process downloads it
                    download = self._follow(row.sha256, row.size)
                if download is not None:
                    resp = await self._stream_local(request, download, row.size, headers)
                    if resp is not None:
                        return resp
                    continue  # the process we followed ended before we sent anything: look again
                watch.check(self._holder_progress(row.sha256), row.sha256)
                await asyncio.sleep(POLL)

    @contextmanager
    def _waiting(self, sha256: str) -> Iterator[None]:
        self.waiting[sha256] += 1
        try:
            yield
        finally:
            self.waiting[sha256] -= 1
            if self.waiting[sha256] <= 0:
                del self.waiting[sha256]

    async def _stream_local(self, request: web.Request, d: Download, size: int,
                            headers: dict[str, str]) -> web.StreamResponse | None:
        """Stream a download of this process to one client as its bytes land (sendfile from the part file).

        None when ``d`` followed another process's download that ended before anything was sent.
        """
        part = open(os.dup(d.fd), "rb", buffering=0)  # noqa: SIM115 - closed below; same inode after the commit
        resp = web.StreamResponse(headers=headers)
        try:
            while d.written == 0 and not d.done:
                await d.changed()
            if d.error is not None:  # nothing sent yet: the client gets the 502/504 envelope
                if d.followed and not isinstance(d.error, UpstreamTimeout):
                    return None  # the caller looks again (and may start the download itself)
                raise _again(d.error)
            if d.done and self.blobs.exists(d.sha256):
                return web.FileResponse(self.blobs.path(d.sha256), headers=headers)
            resp.content_length = size
            await resp.prepare(request)
            sent = 0
            while sent < size:
                if d.error is not None:
                    return _cut(request, resp, d.error)
                ready = min(d.written, size) if d.verified else min(d.written, size - HOLD_BACK)
                if sent < ready:
                    await _sendfile(request, part, sent, ready - sent)
                    sent = ready
                elif d.verified:  # verified, but shorter than the record says: never a complete download
                    return _cut(request, resp, UpstreamError(f"{redact(d.url)} has {d.written} bytes, not {size}"))
                else:
                    await d.changed()
            await resp.write_eof()
            return resp
        except ConnectionError:  # the client went away; the download goes on for the others
            return resp
        finally:
            part.close()

    def _follow(self, sha256: str, size: int) -> Download | None:
        """Join the download another process runs: one task of this process tails its part file
        and checks the sha256 itself; this process's clients stream from it like from a download
        of their own. None when there is nothing to follow (yet, or any more).
        No await inside: joining and starting are atomic on the event loop.
        """
        download = self._downloads.get(sha256)
        if download is not None:
            return download
        part = self._holder_part(sha256)
        if part is None:
            return None
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:
            return None
        download = Download(sha256, size, f"(the download of {sha256} by another process)", part, fd)
        download.followed = True
        self._downloads[sha256] = download
        download.task = asyncio.create_task(self._tail(download))
        return download

    async def _tail(self, d: Download) -> None:
        digest = hashlib.sha256()
        watch = _Stall(self.stall_timeout)
        try:
            while True:
                have = min(os.fstat(d.fd).st_size, d.size)
                watch.check(have, d.sha256)
                if have > d.written:
                    d.landed(await asyncio.to_thread(_hash_range, digest, d.fd, d.written, have - d.written))
                    continue
                if d.written >= d.size:  # every byte is there: released only if the whole matches
                    if digest.hexdigest() != d.sha256:
                        raise UpstreamError(f"the upstream body of {d.sha256} does not match its record")
                    d.verified = True
                    d.progressed()
                    while d.part.exists() and not self.blobs.exists(d.sha256):  # the other process commits
                        if watch.idle() > DEAD_CHECK and self._clear_dead_leader(d.sha256):
                            break
                        await asyncio.sleep(POLL)
                    return
                if not d.part.exists():
                    if os.fstat(d.fd).st_size > d.written:  # it was renamed into the store after its last bytes
                        continue
                    raise UpstreamError(f"the download of {d.sha256} failed in another process")
                if watch.idle() > DEAD_CHECK and self._clear_dead_leader(d.sha256):
                    raise UpstreamError(f"the process downloading {d.sha256} died")
                await asyncio.sleep(POLL)
        except BaseException as e:  # noqa: BLE001 - every failure ends the download for all its readers
            d.error = e if isinstance(e, PlatformError) else UpstreamError(
                f"following the download of {d.sha256} stopped ({e.__class__.__name__})")
            if not isinstance(e, Exception):
                raise
        finally:
            d.done = True
            if self._downloads.get(d.sha256) is d:
                del self._downloads[d.sha256]
            os.close(d.fd)
            d.progressed()

    # -- the one download ----------------------------------------------------------------------
    def _start(self, url: str, sha256: str, size: int | None) -> Download | None:
        """This process's download of ``sha256``, started here when no process runs one.

        None when the blob is there after all or another process is downloading it.
        No await inside: joining and starting are atomic on the event loop.
        """
        download = self._downloads.get(sha256)
        if download is not None:
            return download
        lock = self._lock_path(sha256)
        lock_fd = _try_lock(lock)
        if lock_fd is None:
            return None
        try:
            if self.blobs.exists(sha256):
                _unlock(lock_fd, lock)
                return None
            self._remove_stale_part(lock_fd)
            # the part file lives beside the blobs (same filesystem: the commit is a rename)
            self.blobs.tmp.mkdir(parents=True, exist_ok=True)
            writer = HashingWriter(self.blobs.tmp, size if size is not None else _NO_LIMIT, md5=False)
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, writer.path.name.encode(), 0)
            read_fd = os.open(writer.path, os.O_RDONLY)
        except BaseException:
            _unlock(lock_fd, lock)
            raise
        download = Download(sha256, size, url, writer.path, read_fd)
        self._downloads[sha256] = download
        download.task = asyncio.create_task(self._run(download, writer, lock_fd, lock))
        return download

    async def _run(self, d: Download, writer: HashingWriter, lock_fd: int, lock: Path) -> None:
        shown = redact(d.url)
        # A worker thread hashes and writes the bytes in order while the loop receives the next
        # ones. What arrives while the worker is busy is handed over in one batch: a fast upstream
        # gives few, big batches (few wakeups for the readers), a slow one gives each chunk to the
        # readers at once.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="fetch")
        pool = self._pool
        busy: asyncio.Future | None = None
        busy_bytes = 0
        batch: list[bytes] = []
        committing: asyncio.Future | None = None
        try:
            try:
                async with self.upstream.get(d.url, {"Accept-Encoding": "identity"}) as resp:
                    if d.size is not None and resp.content_length not in (None, d.size):
                        raise UpstreamError(f"upstream has {resp.content_length} bytes for {shown}, the record says "
                                            f"{d.size}", detail={"url": shown})
                    loop = asyncio.get_running_loop()
                    queued = 0
                    async for chunk in resp.content.iter_any():
                        batch.append(chunk)
                        queued += len(chunk)
                        if busy is not None and (busy.done() or queued > MAX_QUEUED):
                            await busy  # worker errors (e.g. TooLarge) surface here
                            d.landed(busy_bytes)
                            busy = None
                        if busy is None:
                            busy, busy_bytes, queued = loop.run_in_executor(pool, _absorb, writer, batch), queued, 0
                            batch = []
                    if busy is not None:
                        await busy
                        d.landed(busy_bytes)
                        busy = None
                    if batch:  # what arrived during the last batch
                        busy = loop.run_in_executor(pool, _absorb, writer, batch)
                        await busy
                        d.landed(queued)
                        busy = None
            except TooLarge as e:
                raise UpstreamError(f"upstream sent more than the {d.size} bytes of the record for {shown}",
                                    detail={"url": shown}) from e
            digest = writer.hexdigest()
            if (d.size is not None and writer.size != d.size) or digest != d.sha256:
                raise UpstreamError(f"upstream sent bytes that do not match the record for {shown} "
                                    f"(sha256 {digest}, {writer.size} bytes)", detail={"url": shown})
            d.verified = True  # the clients get their last bytes while the blob is fsynced and committed
            d.progressed()
            committing = asyncio.ensure_future(asyncio.to_thread(self._commit, writer))
            await asyncio.shield(committing)
        except BaseException as e:  # noqa: BLE001 - every failure ends the download for all its readers
            # the worker threads end first: no write or rename races the abort (a no-op after a commit)
            await asyncio.gather(*(f for f in (busy, committing) if f is not None), return_exceptions=True)
            writer.abort()
            if isinstance(e, PlatformError):
                d.error = e
            elif isinstance(e, Exception):  # e.g. a full disk: this server's fault, not the upstream's
                log.error("on-demand fetch of %s failed on this server", shown, exc_info=e)
                d.error = PlatformError(f"the download of {shown} failed on this server ({e.__class__.__name__})",
                                        detail={"url": shown})
            else:
                d.error = UpstreamError(f"the download of {shown} was stopped (server shutdown)",
                                        detail={"url": shown})
            log.warning("on-demand fetch of %s failed: %s", shown, d.error.message)
            if not isinstance(e, Exception):
                raise
        finally:
            d.done = True
            if self._downloads.get(d.sha256) is d:
                del self._downloads[d.sha256]
            os.close(d.fd)
            _unlock(lock_fd, lock)
            d.progressed()

    def _commit(self, writer: HashingWriter) -> None:
        self.blobs.commit(writer.finish())

    # -- the cross-process lock ----------------------------------------------------------------
    def _lock_path(self, sha256: str) -> Path:
        self.blobs.path(sha256)  # refuses anything but a sha256
        return self.inflight / f"{sha256}.lock"

    def _holder_part(self, sha256: str) -> Path | None:
        """The part file the leading process writes, as its lock file names it."""
        try:
            name = self._lock_path(sha256).read_text().strip()
        except FileNotFoundError:
            return None
        return self.blobs.tmp / name if name and _PART_NAME.match(name) else None

    def _holder_progress(self, sha256: str) -> int:
        part = self._holder_part(sha256)
        try:
            return part.stat().st_size if part is not None else -1
        except FileNotFoundError:
            return -1

    def _clear_dead_leader(self, sha256: str) -> bool:
        """True when no process holds the lock any more although its part file is there (the
        process died, the kernel released its flock): the part file is removed."""
        try:
            lock = self._lock_path(sha256)
        except ValueError:  # not one of ours
            return False
        fd = _try_lock(lock)
        if fd is None:
            return False
        self._remove_stale_part(fd)
        _unlock(fd, lock)
        return True

    def _remove_stale_part(self, lock_fd: int) -> None:
        """A part file named by the lock we now hold belongs to a leader that died."""
        name = os.pread(lock_fd, 4096, 0).decode(errors="replace").strip()
        if name and _PART_NAME.match(name):
            (self.blobs.tmp / name).unlink(missing_ok=True)


class _Stall:
    """Gives up on a leader in another process whose progress stays the same for ``timeout`` s."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.seen: int | None = None
        self.since = 0.0

    def idle(self) -> float:
        return asyncio.get_running_loop().time() - self.since

    def check(self, progress: int, sha256: str) -> None:
        now = asyncio.get_running_loop().time()
        if progress != self.seen:
            self.seen, self.since = progress, now
        elif now - self.since > self.timeout:
            raise UpstreamTimeout(f"the download of {sha256} by another server process made no progress "
                                  f"for {self.timeout:.0f} s")


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing), or None when another holder has it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the cache dir was cleared while the server runs
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)  # the previous holder unlinked it on release: lock the file that is there now


def _unlock(fd: int, path: Path) -> None:
    """Unlink while still holding the lock, so lock files do not pile up (see _try_lock)."""
    path.unlink(missing_ok=True)
    os.close(fd)


def _absorb(writer: HashingWriter, chunks: list[bytes]) -> None:
    """Hash and write a batch of chunks (in the download's worker thread)."""
    for chunk in chunks:
        writer.write(chunk)
    writer.flush()  # readers tail the part file


async def _sendfile(request: web.Request, file, offset: int, count: int) -> None:  # noqa: ANN001 - a binary file
    """Send a range of a file after the headers (as aiohttp's FileResponse does; asyncio falls back
    to read+write where the transport cannot sendfile)."""
    if request.transport is None or request.transport.is_closing():
        raise ConnectionResetError("the client went away")
    await asyncio.get_running_loop().sendfile(request.transport, file, offset, count)


def _hash_range(digest, fd: int, offset: int, count: int) -> int:  # noqa: ANN001 - a hashlib object
    """Hash up to ``count`` bytes of a file from ``offset`` (in a worker thread); how many were read."""
    chunk = os.pread(fd, min(count, 8 * READ_CHUNK), offset)
    digest.update(chunk)
    return len(chunk)


def _again(error: PlatformError) -> PlatformError:
    """A fresh copy of a shared error for one more caller."""
    return type(error)(error.message, detail=dict(error.detail), code=error.code)


def _cut(request: web.Request, resp: web.StreamResponse, error: PlatformError) -> web.StreamResponse:
    """Headers are out: the client can only learn of the failure by a download cut short."""
    log.warning("cut a download short: %s", error.message)
    if request.transport is not None:
        request.transport.abort()
    return resp
