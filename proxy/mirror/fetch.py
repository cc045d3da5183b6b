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

Downloads are named by a *key*: the sha256 of the bytes, or, for bytes whose index gives only an MD5
(CRAN's PACKAGES), an :func:`md5_key` (``0`` × 32 + the md5; no blob has such a name). An MD5 key is
verified by the md5 (by the leader and by followers in other processes alike); the blob is committed
under the sha256 hashed while the bytes streamed, and a note (``<cache>/keys/<slot>``, written before
the commit) maps the key to it, so later askers in any process find the blob without a download
(:meth:`Fetcher.present`). An MD5 vouches for bytes only together with where they come from (MD5
collisions can be made): such a download, its lock and its note are named by the :func:`slot` of
the key AND the upstream URL, so a file of one upstream never answers for another's row that has
the same md5. A sha256 key is its own slot (one download and one blob for every URL). A download of unknown size (size ``None`` or ``0``) takes the upstream's
Content-Length as its size (the leader writes it into the lock file for the followers) and is
refused beyond the Fetcher's ``max_bytes`` (the server's ``max_upload_bytes``: one cap for every
caller); a HEAD of such a file is answered without a Content-Length.
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
from typing import NamedTuple

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
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
#: the first half of an MD5 key (see the module docstring)
MD5_KEY = "0" * 32
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def md5_key(md5: str) -> str:
    """The download key of bytes known only by their md5."""
    if not _MD5.match(md5):
        raise ValueError(f"not an md5: {md5!r}")
    return MD5_KEY + md5


def key_md5(key: str) -> str | None:
    """The md5 an MD5 key verifies (None: the key is the sha256 itself)."""
    return key[32:] if key.startswith(MD5_KEY) else None


def slot(key: str, url: str | None) -> str:
    """What the download of ``key`` from ``url`` is named by (its lock, its note): a sha256 key
    itself; an MD5 key with its URL, hashed (64 hex digits like every lock name)."""
    return key if key_md5(key) is None else hashlib.sha256(f"{url}\n{key}".encode()).hexdigest()


class Stored(NamedTuple):
    """A blob in the store, as a download key turned out to be."""

    sha256: str
    size: int


class Download:
    """One download in this process: its part file and how far the leader got."""

    def __init__(self, key: str, slot: str, size: int | None, url: str, part: Path, fd: int):
        self.key = key
        #: the name of this download, its lock and its note (see slot())
        self.slot = slot
        #: what the body must hash to: an MD5 key's md5, else the key's sha256 (known once verified)
        self.md5 = key_md5(key)
        self.sha256: str | None = key if self.md5 is None else None
        #: None until the upstream's Content-Length says (a key that came without a size)
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

    def __init__(self, blobs: BlobStore, upstream: Upstream, inflight_dir: Path, *, max_bytes: int):
        self.blobs = blobs
        self.upstream = upstream
        #: the most bytes a download of unknown size may have (a known size is its own cap)
        self.max_bytes = max_bytes
        self.inflight = Path(inflight_dir)
        self.inflight.mkdir(parents=True, exist_ok=True)
        #: slot of an MD5 key -> the sha256 its bytes turned out to have (one small file each, see present())
        self.keys = self.inflight.parent / "keys"
        #: a download led by another process that shows no progress for this long is given up
        self.stall_timeout = upstream.connect_timeout + upstream.read_timeout
        #: by slot
        self._downloads: dict[str, Download] = {}
        #: key → callers of respond() and ensure_blob() right now (what an operator or a test can watch)
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

    def present(self, key: str, url: str | None) -> Stored | None:
        """The blob a key names, when it is in the store (an MD5 key: once some process fetched it
        from ``url``)."""
        sha256 = key if key_md5(key) is None else self._noted(slot(key, url))
        if sha256 is None:
            return None
        try:
            return Stored(sha256, self.blobs.path(sha256).stat().st_size)
        except FileNotFoundError:
            return None

    async def ended(self, key: str, url: str | None) -> Stored | None:
        """The blob of ``key`` once this process's download of it (if one runs) has ended (e.g. to
        record what an MD5 key turned out to be after a streamed response: the commit follows it)."""
        download = self.download(key, url)
        while download is not None and not download.done:
            await download.changed()
        return self.present(key, url)

    def download(self, key: str, url: str | None) -> Download | None:
        """This process's download of ``key`` from ``url`` while it runs (or follows another's)."""
        return self._downloads.get(slot(key, url))

    # -- the blob, whole -----------------------------------------------------------------------
    async def ensure_blob(self, url: str, key: str, size: int | None) -> Stored:
        """Make sure the blob is in the store: download it once (whoever else asks), verify, commit.

        ``key``: its sha256, or an :func:`md5_key`; ``size`` None or 0: not known (then at most
        ``max_bytes``). Raises UpstreamError (502) / UpstreamTimeout (504); nothing is stored on
        failure.
        """
        watch = _Stall(self.stall_timeout)
        with self._waiting(key):
            while (stored := self.present(key, url)) is None:
                download = self._start(url, key, size)
                if download is not None and not download.followed:  # (following: wait for the blob)
                    await download.result()
                    return Stored(download.sha256, download.size)  # type: ignore[arg-type] - verified
                if (stored := self.present(key, url)) is not None:
                    return stored
                # another process downloads it: wait for its end (then it is there, or we try ourselves)
                watch.check(self._holder_progress(slot(key, url)), key)
                await asyncio.sleep(POLL)
            return stored

    # -- the blob, streamed to a client --------------------------------------------------------
    async def respond(self, request: web.Request, row, headers: Mapping[str, str] | None = None  # noqa: ANN001
                      ) -> web.StreamResponse:
        """Answer a request for a file whose blob is missing (``row``: sha256 — or an MD5 key —,
        size, source_url; see ensure_blob() for an unknown size)."""
        headers = dict(headers or {})
        key, url = row.sha256, row.source_url
        size = _known(key, row.size)
        if request.method == "HEAD":  # from the record: no download just to answer a probe
            resp = web.StreamResponse(headers=headers)
            if size is not None:  # (unknown: no Content-Length rather than a wrong one)
                resp.content_length = size
            return resp
        if "Range" in request.headers:  # a part of a file we do not have yet: fetch it, then serve the part
            stored = await self.ensure_blob(url, key, size)
            return web.FileResponse(self.blobs.path(stored.sha256), headers=headers)
        with self._waiting(key):
            watch = _Stall(self.stall_timeout)
            while True:
                if (stored := self.present(key, url)) is not None:
                    return web.FileResponse(self.blobs.path(stored.sha256), headers=headers)
                download = self._start(url, key, size)
                if download is None and self.present(key, url) is None:  # another process downloads it
                    download = self._follow(key, url, size)
                if download is not None:
                    resp = await self._stream_local(request, download, size, headers)
                    if resp is not None:
                        return resp
                    continue  # the process we followed ended before we sent anything: look again
                watch.check(self._holder_progress(slot(key, url)), key)
                await asyncio.sleep(POLL)

    @contextmanager
    def _waiting(self, key: str) -> Iterator[None]:
        self.waiting[key] += 1
        try:
            yield
        finally:
            self.waiting[key] -= 1
            if self.waiting[key] <= 0:
                del self.waiting[key]

    async def _stream_local(self, request: web.Request, d: Download, size: int | None,
                            headers: dict[str, str]) -> web.StreamResponse | None:
        """Stream a download of this process to one client as its bytes land (sendfile from the part file).

        None when ``d`` followed another process's download that ended before anything was sent.
        """
        part = open(os.dup(d.fd), "rb", buffering=0)  # noqa: SIM115 - closed below; same inode after the commit
        resp = web.StreamResponse(headers=headers)
        try:
            while d.written == 0 and not d.done:
                await d.changed()
            if size is None:  # known from the upstream's headers by now (set before the first byte lands)
                size = d.size
            if size is None:  # the upstream sent no Content-Length: the client waits for the verified blob
                while not d.done:
                    await d.changed()
            if d.error is not None:  # nothing sent yet: the client gets the 502/504 envelope
                if d.followed and not isinstance(d.error, UpstreamTimeout):
                    return None  # the caller looks again (and may start the download itself)
                raise _again(d.error)
            if d.done and d.sha256 is not None and self.blobs.exists(d.sha256):
                return web.FileResponse(self.blobs.path(d.sha256), headers=headers)
            if size is None:  # (a followed download that ended without its blob: look again)
                return None
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

    def _follow(self, key: str, url: str, size: int | None) -> Download | None:
        """Join the download another process runs: one task of this process tails its part file
        and checks the sha256 (or md5) itself; this process's clients stream from it like from a
        download of their own. None when there is nothing to follow (yet, or any more).
        No await inside: joining and starting are atomic on the event loop.
        """
        name = slot(key, url)
        download = self._downloads.get(name)
        if download is not None:
            return download
        holder = self._holder(name)
        if holder is None:
            return None
        try:
            fd = os.open(holder[0], os.O_RDONLY)
        except FileNotFoundError:
            return None
        download = Download(key, name, size, f"(the download of {key} by another process)", holder[0], fd)
        download.followed = True
        self._downloads[name] = download
        download.task = asyncio.create_task(self._tail(download))
        return download

    async def _tail(self, d: Download) -> None:
        digests = [hashlib.sha256()] + ([hashlib.md5()] if d.md5 is not None else [])  # noqa: S324 - CRAN's MD5sum
        watch = _Stall(self.stall_timeout)
        try:
            while True:
                have = os.fstat(d.fd).st_size
                if d.size is None:  # the leader names it in its lock file before its first byte lands
                    d.size = (self._holder(d.slot) or (None, None))[1]
                if d.size is not None:
                    have = min(have, d.size)
                watch.check(have, d.key)
                if have > d.written:
                    d.landed(await asyncio.to_thread(_hash_range, digests, d.fd, d.written, have - d.written))
                    continue
                ended = d.size is None and not d.part.exists() and os.fstat(d.fd).st_size <= d.written
                if ended or (d.size is not None and d.written >= d.size):
                    # every byte is there: released only if the whole matches
                    sha256 = digests[0].hexdigest()
                    if (d.md5 is None and sha256 != d.sha256) or (d.md5 is not None and digests[1].hexdigest() != d.md5):
                        raise UpstreamError(f"the upstream body of {d.key} does not match its record")
                    d.sha256 = sha256
                    if ended and not self.blobs.exists(sha256):  # (no size: its clients wait for the blob)
                        raise UpstreamError(f"the download of {d.key} failed in another process")
                    d.size = d.written
                    d.verified = True
                    d.progressed()
                    while d.part.exists() and not self.blobs.exists(sha256):  # the other process commits
                        if watch.idle() > DEAD_CHECK and self._clear_dead_leader(d.slot):
                            break
                        await asyncio.sleep(POLL)
                    return
                if not d.part.exists():
                    if os.fstat(d.fd).st_size > d.written:  # it was renamed into the store after its last bytes
                        continue
                    raise UpstreamError(f"the download of {d.key} failed in another process")
                if watch.idle() > DEAD_CHECK and self._clear_dead_leader(d.slot):
                    raise UpstreamError(f"the process downloading {d.key} died")
                await asyncio.sleep(POLL)
        except BaseException as e:  # noqa: BLE001 - every failure ends the download for all its readers
            d.error = e if isinstance(e, PlatformError) else UpstreamError(
                f"following the download of {d.key} stopped ({e.__class__.__name__})")
            if not isinstance(e, Exception):
                raise
        finally:
            d.done = True
            if self._downloads.get(d.slot) is d:
                del self._downloads[d.slot]
            os.close(d.fd)
            d.progressed()

    # -- the one download ----------------------------------------------------------------------
    def _start(self, url: str, key: str, size: int | None) -> Download | None:
        """This process's download of ``key``, started here when no process runs one.

        None when the blob is there after all or another process is downloading it.
        No await inside: joining and starting are atomic on the event loop.
        """
        name = slot(key, url)
        download = self._downloads.get(name)
        if download is not None:
            return download
        size = _known(key, size)
        lock = self._lock_path(name)
        lock_fd = _try_lock(lock)
        if lock_fd is None:
            return None
        try:
            if self.present(key, url) is not None:
                _unlock(lock_fd, lock)
                return None
            self._remove_stale_part(lock_fd)
            # the part file lives beside the blobs (same filesystem: the commit is a rename)
            self.blobs.tmp.mkdir(parents=True, exist_ok=True)
            cap = size if size is not None else self.max_bytes
            writer = HashingWriter(self.blobs.tmp, cap, md5=False)
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, writer.path.name.encode(), 0)
            read_fd = os.open(writer.path, os.O_RDONLY)
        except BaseException:
            _unlock(lock_fd, lock)
            raise
        download = Download(key, name, size, url, writer.path, read_fd)
        self._downloads[name] = download
        download.task = asyncio.create_task(self._run(download, writer, cap, lock_fd, lock))
        return download

    async def _run(self, d: Download, writer: HashingWriter, cap: int, lock_fd: int, lock: Path) -> None:
        shown = redact(d.url)
        # A worker thread hashes and writes the bytes in order while the loop receives the next
        # ones. What arrives while the worker is busy is handed over in one batch: a fast upstream
        # gives few, big batches (few wakeups for the readers), a slow one gives each chunk to the
        # readers at once.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="fetch")
        pool = self._pool
        md5 = hashlib.md5() if d.md5 is not None else None  # noqa: S324 - what CRAN's index gives
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
                    if d.size is None and resp.content_length is not None:  # the size the clients are told
                        if resp.content_length > cap:
                            raise TooLarge(f"{resp.content_length} bytes")
                        d.size = resp.content_length
                        os.pwrite(lock_fd, f"{writer.path.name}\n{d.size}".encode(), 0)  # (for the followers)
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
                            busy, busy_bytes, queued = loop.run_in_executor(pool, _absorb, writer, batch, md5), queued, 0
                            batch = []
                    if busy is not None:
                        await busy
                        d.landed(busy_bytes)
                        busy = None
                    if batch:  # what arrived during the last batch
                        busy = loop.run_in_executor(pool, _absorb, writer, batch, md5)
                        await busy
                        d.landed(queued)
                        busy = None
            except TooLarge as e:
                said = f"the {d.size} bytes of the record" if d.size is not None else f"the limit of {cap} bytes"
                raise UpstreamError(f"upstream sent more than {said} for {shown}", detail={"url": shown}) from e
            digest = writer.hexdigest()
            if (d.size is not None and writer.size != d.size) or \
                    (digest != d.sha256 if md5 is None else md5.hexdigest() != d.md5):
                got = f"sha256 {digest}" if md5 is None else f"md5 {md5.hexdigest()}, sha256 {digest}"
                raise UpstreamError(f"upstream sent bytes that do not match the record for {shown} "
                                    f"({got}, {writer.size} bytes)", detail={"url": shown})
            d.sha256, d.size = digest, writer.size
            d.verified = True  # the clients get their last bytes while the blob is fsynced and committed
            d.progressed()
            committing = asyncio.ensure_future(asyncio.to_thread(self._commit, writer, d))
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
            if self._downloads.get(d.slot) is d:
                del self._downloads[d.slot]
            os.close(d.fd)
            _unlock(lock_fd, lock)
            d.progressed()

    def _commit(self, writer: HashingWriter, d: Download) -> None:
        if d.md5 is not None:  # noted first: present() answers once the blob is there, in any process
            self._note(d.slot, d.sha256)  # type: ignore[arg-type] - verified
        self.blobs.commit(writer.finish())

    # -- MD5 keys ------------------------------------------------------------------------------
    def _noted(self, name: str) -> str | None:
        try:
            sha256 = (self.keys / name).read_text().strip()
        except FileNotFoundError:
            return None
        return sha256 if _SHA256.match(sha256) else None

    def _note(self, name: str, sha256: str) -> None:
        self.keys.mkdir(parents=True, exist_ok=True)
        tmp = self.keys / f".{name}.{os.getpid()}"
        tmp.write_text(sha256)
        os.replace(tmp, self.keys / name)

    # -- the cross-process lock ----------------------------------------------------------------
    def _lock_path(self, key: str) -> Path:
        self.blobs.path(key)  # refuses anything but 64 hex digits
        return self.inflight / f"{key}.lock"

    def _holder(self, key: str) -> tuple[Path, int | None] | None:
        """The part file the leading process writes, as its lock file names it (and the size once known)."""
        try:
            name, _, size = self._lock_path(key).read_text().strip().partition("\n")
        except FileNotFoundError:
            return None
        if not name or not _PART_NAME.match(name):
            return None
        return self.blobs.tmp / name, int(size) if size.isdigit() else None

    def _holder_progress(self, key: str) -> int:
        holder = self._holder(key)
        try:
            return holder[0].stat().st_size if holder is not None else -1
        except FileNotFoundError:
            return -1

    def _clear_dead_leader(self, key: str) -> bool:
        """True when no process holds the lock any more although its part file is there (the
        process died, the kernel released its flock): the part file is removed."""
        try:
            lock = self._lock_path(key)
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
        name = os.pread(lock_fd, 4096, 0).decode(errors="replace").strip().partition("\n")[0]
        if name and _PART_NAME.match(name):
            (self.blobs.tmp / name).unlink(missing_ok=True)


def _known(key: str, size: int | None) -> int | None:
    """The size a download must have: None when not known (an MD5 key's, or 0: no index gave it)."""
    return None if key_md5(key) is not None or not size else size


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


def _absorb(writer: HashingWriter, chunks: list[bytes], md5) -> None:  # noqa: ANN001 - a hashlib md5 or None
    """Hash and write a batch of chunks (in the download's worker thread)."""
    for chunk in chunks:
        writer.write(chunk)
        if md5 is not None:
            md5.update(chunk)
    writer.flush()  # readers tail the part file


async def _sendfile(request: web.Request, file, offset: int, count: int) -> None:  # noqa: ANN001 - a binary file
    """Send a range of a file after the headers (as aiohttp's FileResponse does; asyncio falls back
    to read+write where the transport cannot sendfile)."""
    if request.transport is None or request.transport.is_closing():
        raise ConnectionResetError("the client went away")
    await asyncio.get_running_loop().sendfile(request.transport, file, offset, count)


def _hash_range(digests: list, fd: int, offset: int, count: int) -> int:
    """Hash up to ``count`` bytes of a file from ``offset`` (in a worker thread); how many were read."""
    chunk = os.pread(fd, min(count, 8 * READ_CHUNK), offset)
    for digest in digests:
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
