"""Mirror runs: their steps, cooperative stop, heartbeats, crash recovery and the scheduler.

A run is an asyncio task of the process that started it. Its live state (step, description,
figures) is kept in memory and written to its ``mirror_runs`` row by a heartbeat every few
seconds and when it ends, so other processes see it and can tell a live run from a dead one
(``owner`` host:pid:boot plus ``heartbeat_at``). A stop asks cooperatively: the run notices at its
next checkpoint or, while it waits on the network, at once, and keeps what it had finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from conda_platform_plugin.errors import Conflict, PlatformError, UpstreamError

from ..store.channels import ChannelStore
from ..store.files import settle
from ..store.mirrors import ACTIVE, Mirror, MirrorStore, Run
from ..store.publish import CURRENT
from ..store.tables import files, mirror_filtered
from .clock import Clock, next_run
from .fetch import Stored
from .http import redact
from .kinds import source_for
from .records import Prepared, new_files
from .source import Index, IndexCache

if TYPE_CHECKING:
    from ..platform import Platform

log = logging.getLogger(__name__)
T = TypeVar("T")
HOST = socket.gethostname()
#: boot ids of the engines alive in this process (a restarted Server in one process has a new one)
LIVE_BOOTS: set[str] = set()
RESTART_REASON = "interrupted by a server restart"


class RunStopped(Exception):
    """Raised inside a run at the checkpoint where it notices a stop request."""


@dataclass
class LiveRun:
    """A run this process is executing; the API shows this instead of its (lagging) row."""

    run_id: int
    mirror_id: int
    status: str = "queued"
    step: str = "queued"
    description: str = "waiting to start"
    figures: dict = field(default_factory=dict)
    generation: int | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    step_started: float | None = None
    reason: str = ""
    finished_at: float | None = None


class MirrorEngine:
    def __init__(self, platform: Platform, clock: Clock | None = None):
        self.platform = platform
        self.config = platform.config
        self.store = MirrorStore(platform.db)
        self.clock = clock or Clock()
        self.boot = uuid.uuid4().hex[:12]
        self.owner = f"{HOST}:{os.getpid()}:{self.boot}"
        self.live: dict[int, LiveRun] = {}
        self._cache: IndexCache | None = None
        self._slots: asyncio.Semaphore | None = None
        self._start_locks: dict[int, asyncio.Lock] = {}
        self._starting: set[int] = set()  # runs inserted here, not yet registered as live
        self._loops: list[asyncio.Task] = []
        self._running = False

    @property
    def cache(self) -> IndexCache:
        if self._cache is None:
            self._cache = IndexCache(self.config.cache_dir / "indexes")
        return self._cache

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Mark runs that a crash or restart cut off as failed, then heartbeat and schedule."""
        LIVE_BOOTS.add(self.boot)
        self._running = True
        self._slots = asyncio.Semaphore(max(1, self.config.mirror_max_runs))
        await self.recover()
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="mirror-heartbeat"))
        if self.config.mirror_tick_interval > 0:
            self._loops.append(asyncio.create_task(self._schedule_loop(), name="mirror-scheduler"))

    async def shutdown(self) -> None:
        """Cancel loops and runs. Runs are left as they are in the database (like a crash): the next
        start marks them failed, so one recovery path covers crashes and shutdowns alike."""
        if not self._running:
            return
        self._running = False
        tasks = [*self._loops, *(lr.task for lr in self.live.values() if lr.task)]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._loops.clear()
        LIVE_BOOTS.discard(self.boot)
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def is_dead(self, run: Run) -> bool:
        """Whether an unfinished run has nobody executing it any more."""
        if run.owner == self.owner:  # ours: alive while registered (or being registered) as live
            return run.id not in self.live and run.id not in self._starting
        host, _, rest = run.owner.partition(":")
        pid, _, boot = rest.partition(":")
        if host == HOST and pid.isdigit():
            if int(pid) == os.getpid():
                return boot not in LIVE_BOOTS
            if not _pid_alive(int(pid)):
                return True
        return time.time() - (run.heartbeat_at or run.started_at) > self.config.mirror_stale_after

    async def recover(self) -> list[int]:
        failed = []
        for run in await self.store.active_runs():
            if self.is_dead(run) and await self.store.update_run(
                    run.id, only_active=True, status="failed", reason=RESTART_REASON, finished_at=time.time(),
                    step="failed", description=RESTART_REASON):
                failed.append(run.id)
        if failed:
            log.warning("mirror runs %s were cut off and are marked failed", failed)
        return failed

    # -- runs ----------------------------------------------------------------------------------
    async def start_run(self, mirror: Mirror, trigger: str = "manual") -> Run:
        """Start a run now (409 if one of this mirror is still going, here or in another process)."""
        lock = self._start_locks.setdefault(mirror.id, asyncio.Lock())
        async with lock:
            inserted: list[int] = []

            def registering(run_id: int) -> None:  # before the commit: nobody may take it for dead
                inserted.append(run_id)
                self._starting.add(run_id)

            try:
                run = await self.store.start_run(mirror.id, trigger=trigger, owner=self.owner, now=time.time(),
                                                 is_dead=self.is_dead, dead_reason=RESTART_REASON,
                                                 registering=registering)
                live = self.live[run.id] = LiveRun(run.id, mirror.id)
            finally:
                self._starting.difference_update(inserted)
            live.task = asyncio.create_task(self._execute(live, mirror), name=f"mirror-run-{run.id}")
        return self.view(run)

    async def stop(self, mirror: Mirror, wait: float = 10.0) -> Run:
        """Ask the mirror's running run to stop; waits up to ``wait`` seconds for it to end."""
        active = await self.store.active_runs(mirror.id)
        if not active:
            raise Conflict(f"mirror {mirror.name!r} has no run going", detail={"mirror": mirror.name})
        run = active[0]
        live = self.live.get(run.id)
        if live is None and self.is_dead(run):
            await self.store.update_run(run.id, only_active=True, status="failed", reason=RESTART_REASON,
                                        finished_at=time.time())
            return await self.store.run(run.id)
        if live is not None:  # first: the run may hold the write lock that request_stop waits for
            live.stop.set()
            if live.status in ("queued", "running"):
                live.status = "stopping"
                live.description = "stopping"
        await self.store.request_stop(run.id)  # another process's run notices at its next heartbeat
        if live is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.done.wait(), wait)
        return self.view(await self.store.run(run.id))

    async def restart(self, mirror: Mirror) -> Run:
        """Stop the running run if there is one, then run again from the beginning."""
        if await self.store.active_runs(mirror.id):
            run = await self.stop(mirror, wait=30.0)
            if run.status in ACTIVE:
                raise Conflict(f"run {run.id} of mirror {mirror.name!r} is still stopping; try again shortly")
        return await self.start_run(mirror, "restart")

    async def wait(self, run_id: int, timeout: float = 60.0) -> Run:
        live = self.live.get(run_id)
        if live is not None:
            await asyncio.wait_for(live.done.wait(), timeout)
        return await self.store.run(run_id)

    def view(self, run: Run) -> Run:
        """The run as it is now: this process's live state over the stored row."""
        live = self.live.get(run.id)
        if live is None:
            return run
        return replace(run, status=live.status, step=live.step, description=live.description,
                       figures=dict(live.figures), generation=live.generation, reason=live.reason or run.reason,
                       finished_at=live.finished_at or run.finished_at)

    # -- the scheduler -------------------------------------------------------------------------
    async def tick(self) -> list[Run]:
        """Start the runs that are due by the clock; fail runs whose process died. Safe to call from
        several processes at once: a due mirror is claimed by exactly one."""
        for run in await self.store.active_runs():
            if run.id not in self.live and self.is_dead(run):
                await self.store.update_run(run.id, only_active=True, status="failed", finished_at=time.time(),
                                            reason="interrupted: its server stopped sending heartbeats")
        now = self.clock.now()
        started = []
        for mirror in await self.store.due(now):
            if not await self.store.claim(mirror.id, mirror.next_run_at, next_run(mirror.cron, now)):
                continue  # another process took it
            try:
                started.append(await self.start_run(mirror, "schedule"))
            except Conflict:
                log.info("mirror %s is due but its previous run is still going: skipped", mirror.name)
        return started

    async def _schedule_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.mirror_tick_interval)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the scheduler keeps going
                log.exception("mirror scheduler tick failed")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.mirror_heartbeat_interval)
            for live in list(self.live.values()):
                try:
                    await self._persist(live)
                except Exception:  # noqa: BLE001
                    log.exception("heartbeat of mirror run %s failed", live.run_id)

    async def _persist(self, live: LiveRun) -> None:
        """Write the live state and the heartbeat. The status is not written here: a stop asked by
        another process (status 'stopping' in the row) must never be overwritten; it is read back."""
        if not live.stop.is_set():
            stored = await self.store.run(live.run_id)
            if stored.status == "stopping":  # asked by another process
                live.stop.set()
                live.status = "stopping"
        alive = await self.store.update_run(live.run_id, only_active=True, step=live.step,
                                            description=live.description, figures=live.figures,
                                            generation=live.generation, heartbeat_at=time.time())
        if not alive and live.run_id in self.live:  # its row ended elsewhere (reaped, mirror deleted): stop
            live.stop.set()

    # -- executing a run -----------------------------------------------------------------------
    async def _execute(self, live: LiveRun, mirror: Mirror) -> None:
        status, reason = "completed", ""
        try:
            acquired = await self._interruptible(live, self._slots.acquire())
            try:
                if not live.stop.is_set():
                    live.status = "running"
                    await self.store.start_running(live.run_id)
                await self._steps(live, await self.store.by_id(mirror.id))
            finally:
                if acquired:
                    self._slots.release()
        except RunStopped:
            status, reason = "stopped", "stopped on request"
        except asyncio.CancelledError:
            live.done.set()
            self.live.pop(live.run_id, None)
            raise  # a shutdown: the row stays unfinished, recovery marks it at the next start
        except PlatformError as e:
            status, reason = "failed", e.message
        except Exception as e:  # noqa: BLE001 - a run never takes the server down
            log.exception("mirror run %s failed", live.run_id)
            status, reason = "failed", f"internal error: {e.__class__.__name__}: {e}"
        self._step(live, status, "")
        live.description = {"completed": "completed", "stopped": "stopped on request"}.get(status, reason)
        live.reason, live.finished_at = reason, time.time()
        live.status = status  # last: a viewer that sees the end status sees its reason and time too
        try:
            await self.store.update_run(live.run_id, status=status, step=status, description=live.description,
                                        reason=reason, finished_at=live.finished_at, figures=live.figures,
                                        generation=live.generation, heartbeat_at=time.time())
        finally:
            self.live.pop(live.run_id, None)
            live.done.set()

    async def _interruptible(self, live: LiveRun, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless a stop comes first (then it is cancelled and RunStopped raised)."""
        if live.stop.is_set():
            if asyncio.iscoroutine(aw):
                aw.close()
            raise RunStopped()
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(live.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise RunStopped() if live.stop.is_set() else asyncio.CancelledError()
        return task.result()

    def _check(self, live: LiveRun) -> None:
        if live.stop.is_set():
            raise RunStopped()

    @staticmethod
    def _step(live: LiveRun, step: str, description: str) -> None:
        """Enter a step; the seconds spent in each kind of step are part of the figures."""
        now = time.monotonic()
        seconds = live.figures.setdefault("seconds", {})
        if live.step_started is not None:
            seconds[live.step] = round(seconds.get(live.step, 0.0) + now - live.step_started, 3)
        live.step, live.description, live.step_started = step, description, now

    async def _steps(self, live: LiveRun, mirror: Mirror) -> None:
        fig = live.figures
        fig.update(records_seen=0, records_published=0, records_filtered=0, filtered_by_rule={}, added=0,
                   removed=0, unchanged=0, subdirs={}, subdirs_missing=[])
        source = source_for(mirror, self.platform.upstream, self.cache, max_bytes=self.config.mirror_index_max_bytes)
        policy = await self.platform.policy.mirror_policy(mirror)
        if mirror.subdirs is None:
            self._step(live, "discover", "finding the subdirs of the source")
            subdirs = await self._interruptible(live, source.subdirs())
        else:
            subdirs = sorted(set(mirror.subdirs) | ({"noarch"} if mirror.type == "conda" else set()))
        indexes: list[Index] = []
        for subdir in subdirs:
            self._step(live, "fetch", f"fetching index of {subdir}")
            index = await self._interruptible(live, source.fetch(subdir))
            fig["subdirs"][subdir] = {"index": index.status}
            if index.status == "missing":
                fig["subdirs_missing"].append(subdir)
            indexes.append(index)
        if all(i.status == "missing" for i in indexes):
            what = {"conda": "a conda channel", "python": "a PyPI simple index (or a directory of files)",
                    "cran": "a CRAN-style repository"}.get(mirror.type, f"a {mirror.type} source")
            raise UpstreamError(f"no {mirror.type} index found at {redact(mirror.source_url)} (every index answered "
                                f"404): is it the URL of {what}, and is its token valid?")
        state = {"source": redact(mirror.source_url), "subdirs": {i.subdir: i.digest for i in indexes},
                 "policy": getattr(policy, "fingerprint", "") if policy is not None else ""}
        fig["state"] = state
        last = await self.store.last_run(mirror.id, "completed")
        if last is not None and last.figures.get("state") == state:
            fig["upstream_unchanged"] = True
            for key in ("records_seen", "records_published", "records_filtered", "filtered_by_rule"):
                fig[key] = last.figures.get(key, fig[key])
            self._step(live, "check", "the upstream has not changed: nothing to write")
        else:
            await self._write(live, mirror, source, indexes, policy)
            self._check(live)
            self._step(live, "publish", "publishing")
            await self.platform.publisher.publish(mirror.channel_id)
        if mirror.mode == "active":
            await self._download(live, mirror)

    async def _write(self, live: LiveRun, mirror: Mirror, source: Any, indexes: list[Index],
                     policy: object | None) -> None:
        """Every fetched subdir into ONE new generation (none when nothing changed), in one transaction."""
        fig = live.figures
        by_rule: Counter = Counter()
        indexes = sorted((i for i in indexes if i.status != "missing"), key=lambda i: -len(i.body))
        # (a 404 subdir is skipped: what earlier runs stored for it stays, the 404 may be passing)

        async def prepared_of(index: Index) -> Prepared:
            self._check(live)
            self._step(live, "policy", f"applying policy to {index.subdir}")
            # a stop abandons the parse at once (its thread finishes on its own, its result unused)
            done = await self._interruptible(live, asyncio.to_thread(source.prepare, index, policy))
            index.body = b""  # the parsed copy is all we need from here on
            return done

        # The biggest subdir is parsed before the write transaction opens, so the database's write
        # lock is not held during its parse; the others are parsed inside, one at a time (memory).
        ahead = await prepared_of(indexes[0]) if indexes else None
        async with self.platform.db.write() as conn:
            gen: list[int] = []

            async def generation() -> int:
                if not gen:
                    gen.append(await ChannelStore.new_generation(conn, mirror.channel_id,
                                                                 f"mirror {mirror.name}: run {live.run_id}"))
                return gen[0]

            for n, index in enumerate(indexes):
                prepared = ahead if n == 0 else await prepared_of(index)
                ahead = None
                self._check(live)
                self._step(live, "write", f"writing metadata of {index.subdir} ({len(prepared.wanted)} records)")
                sync = await self.platform.files.sync_mirror(
                    conn, mirror.channel_id, mirror.id, index.subdir, prepared.wanted,
                    lambda names, p=prepared: new_files(p, names, mirror_id=mirror.id),
                    generation, checkpoint=lambda: self._check(live))
                for fn in sync.conflicts:
                    _, name, version, *_ = prepared.kept[fn]
                    prepared.filtered.append({"filename": fn, "name": name, "version": version, "rule": "conflict",
                                              "reason": "the channel already has a file of this name from "
                                                        "elsewhere (an upload or another mirror)"})
                    prepared.by_rule["conflict"] += 1
                await conn.execute(mirror_filtered.delete().where(mirror_filtered.c.mirror_id == mirror.id,
                                                                  mirror_filtered.c.subdir == index.subdir))
                await MirrorStore.add_filtered(conn, mirror.id, index.subdir, prepared.filtered)
                if prepared.upstream_signatures:  # kept beside ours in the published repodata
                    await asyncio.to_thread(self.platform.signing.upstream.keep, prepared.upstream_signatures)
                published = len(prepared.wanted) - len(sync.conflicts)
                fig["subdirs"][index.subdir].update(records=prepared.seen, published=published,
                                                    filtered=len(prepared.filtered), added=sync.added,
                                                    removed=sync.removed)
                fig["records_seen"] += prepared.seen
                fig["records_published"] += published
                fig["records_filtered"] += len(prepared.filtered)
                fig["added"] += sync.added
                fig["removed"] += sync.removed
                fig["unchanged"] += sync.unchanged
                by_rule.update(prepared.by_rule)
                fig["filtered_by_rule"] = dict(by_rule)
                del prepared
            self._check(live)  # a stop here rolls the whole generation back
        live.generation = gen[0] if gen else None
        fig["generation"] = live.generation

    async def _download(self, live: LiveRun, mirror: Mirror) -> None:
        """Active mode: every blob of the mirror's files that the store lacks, ``concurrency`` at once."""
        fig = live.figures
        self._step(live, "download", "finding the packages to download")
        async with self.platform.db.read() as conn:
            rows = (await conn.execute(sa.select(files.c.subdir, files.c.filename, files.c.name, files.c.sha256,
                                                 files.c.size, files.c.source_url).where(
                files.c.channel_id == mirror.channel_id, files.c.mirror_id == mirror.id, CURRENT))).all()
        blobs = self.platform.blobs
        missing = await asyncio.to_thread(lambda: [r for r in rows if not blobs.path(r.sha256).is_file()])
        fig.update(files_present=len(rows) - len(missing), files_total=len(missing),
                   bytes_total=sum(r.size for r in missing), files_done=0, bytes_done=0, files_failed=0)
        if not missing:
            return
        fetcher = getattr(self.platform, "fetcher", None)
        if fetcher is None:
            raise UpstreamError("this server cannot download packages yet (no fetcher): active mode is unavailable")
        queue: asyncio.Queue = asyncio.Queue()
        for r in missing:
            queue.put_nowait(r)
        errors: list[str] = []
        learnt: list[tuple[str, str, Stored]] = []  # (key, source_url, stored)
        total = len(missing)
        self._step(live, "download", f"downloading packages 0 of {total}")

        async def worker() -> None:
            while not queue.empty() and not live.stop.is_set():
                r = queue.get_nowait()
                try:
                    stored = await fetcher.ensure_blob(r.source_url, r.sha256, r.size)
                    if (stored.sha256, stored.size) != (r.sha256, r.size):  # a row named by a download key
                        learnt.append((r.sha256, r.source_url, stored))  # (CRAN's MD5sum): its real sha256 and size
                except PlatformError as e:
                    fig["files_failed"] += 1
                    errors.append(f"{r.subdir}/{r.filename}: {e.message}")
                    continue
                fig["files_done"] += 1
                fig["bytes_done"] += stored.size
                live.description = f"downloading packages {fig['files_done']} of {total}"

        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(mirror.concurrency, total)))]
        try:
            await self._interruptible(live, asyncio.gather(*workers))
        finally:  # (in one transaction; what a stop leaves out, the next run's download step learns again)
            await settle(self.platform.db, learnt)
        self._check(live)
        if errors:
            raise UpstreamError(f"{len(errors)} of {total} package downloads failed; first: {errors[0]}",
                                detail={"failed": errors[:50]})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
