"""Which rendered generations may go: only the newest render of a subdir (and the channeldata of
the published generation) is served, so older ones are deleted when the next publish renders.

Another server process on the same data directory may still route requests to a render for a
while after it was superseded (its serving cache lives ``Config.serving_ttl`` seconds), so a
render goes only once its successor has existed for ``grace`` seconds; a response already
streaming keeps its open file either way. Deleting happens before the new render writes, so that
its files take the page cache the old ones held instead of fresh memory: on a VM that reports
freed memory to its host, writing into fresh pages costs up to 8x more (0.5 s against 0.06 s for
217 MB here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .render import FILE_SECTIONS


def superseded(generations: Iterable[tuple[int, float]], keep: int | None, now: float, grace: float) -> list[int]:
    """Of (generation, when it was written), those before ``keep`` (all when None) whose successor
    was written at least ``grace`` seconds before ``now``."""
    ordered = sorted(generations)
    out = []
    for (gen, _), (_, successor_written) in zip(ordered, ordered[1:]):
        if (keep is None or gen < keep) and successor_written <= now - grace:
            out.append(gen)
    return out


def prune_renders(subdir_root: Path, keep: int | None, grace: float, *, whole: bool = False,
                  clock: Callable[[], float] = time.time) -> None:
    """Delete the subdir's superseded renders. A conda render keeps its shard pack (newer layouts
    point into it) and loses its index files; ``whole``: renders of the other types (PyPI pages,
    CRAN PACKAGES) are self-contained (a newer one hard-links what it reuses) and go entirely."""
    try:
        entries = [e for e in os.scandir(subdir_root) if e.name.isdigit() and e.is_dir()]
    except FileNotFoundError:
        return
    written = {int(e.name): e for e in entries}
    for gen in superseded(((g, e.stat().st_mtime) for g, e in written.items()), keep, clock(), grace):
        path = written[gen].path
        if whole:
            shutil.rmtree(path, ignore_errors=True)
            continue
        for fname, _ in FILE_SECTIONS:
            for name in (fname, fname + ".zst"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))


def prune_channeldata(directory: Path, keep: int, grace: float, clock: Callable[[], float] = time.time) -> None:
    """channeldata (``<gen>.json``) and its policy fingerprint (``<gen>.policy``) of the superseded
    generations before ``keep``, the one served until the new one is."""
    try:
        paths = list(directory.iterdir())
    except FileNotFoundError:
        return
    docs = {int(p.stem): p for p in paths if p.suffix == ".json" and p.stem.isdigit()}
    for gen in superseded(((g, p.stat().st_mtime) for g, p in docs.items()), keep, clock(), grace):
        docs[gen].unlink(missing_ok=True)
        (directory / f"{gen}.policy").unlink(missing_ok=True)
