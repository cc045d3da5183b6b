"""Exclusive locks between server processes that share a data directory: ``flock`` on a lock
file (each open is its own lock, so two tasks of one process exclude each other too)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

#: how often a waiter tries again (polling keeps waiting cancellable, unlike a blocking flock in a thread)
POLL = 0.02


def try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing), or None when another holder has it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its directory was removed (a cleared cache, a deleted channel)
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


def unlock(fd: int, path: Path) -> None:
    """Unlink while still holding the lock, so lock files do not pile up (see try_lock)."""
    path.unlink(missing_ok=True)
    os.close(fd)


@asynccontextmanager
async def held(path: Path) -> AsyncIterator[None]:
    """Wait for the lock on ``path``, hold it for the block."""
    while (fd := try_lock(path)) is None:
        await asyncio.sleep(POLL)
    try:
        yield
    finally:
        unlock(fd, path)
