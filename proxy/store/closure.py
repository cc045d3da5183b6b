"""The records a dependency walk may reach in a channel, read name by name: what a dependency
report or SBOM of one package needs, without loading the rest of the channel. One walk for every
artifact type; each type says which names a record asks for and which index resolves them
(conda: store/dependents.py, cran: repo/cran_index.py, python: mirror/pypi_deps.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.dependencies import DependencyIndex, Key

from .chunks import chunks
from .db import Database
from .publish import CURRENT
from .tables import files

#: a reached file: (subdir, filename, record, about)
Reached = tuple[str, str, dict, dict]


#: what a walk reads of each file
WALKED = (files.c.subdir, files.c.filename, files.c.record, files.c.about)


async def named_rows(conn: AsyncConnection, channel_id: int, type_: str, names: Iterable[str],
                     subdir: str | None = None, columns: Sequence[sa.ColumnElement] = WALKED) -> list[sa.Row]:
    """``columns`` of the channel's current files of ``type_`` (in ``subdir`` when given) named
    ``names``: one query per chunk of names (store/chunks.py)."""
    cond = [files.c.channel_id == channel_id, files.c.type == type_, CURRENT]
    if subdir is not None:
        cond.append(files.c.subdir == subdir)
    out: list[sa.Row] = []
    for part in chunks(sorted(set(names))):
        out.extend(await conn.execute(sa.select(*columns).where(*cond, files.c.name.in_(part))))
    return out


async def reachable(db: Database, channel_id: int, type_: str, names: Iterable[str],
                    names_of: Callable[[Mapping], Iterable[str]], subdir: str | None = None) -> list[Reached]:
    """Every current file (all versions) of each name in ``names``, then of the names their records
    ask for (``names_of(record)``), and so on: a superset of what resolving them can pick."""
    wanted, seen = set(names), set()
    found: list[Reached] = []
    async with db.read() as conn:
        while wanted - seen:
            batch = wanted - seen
            seen |= batch
            for r in await named_rows(conn, channel_id, type_, batch, subdir):
                record = orjson.loads(r.record)
                found.append((r.subdir, r.filename, record, orjson.loads(r.about) if r.about else {}))
                wanted.update(names_of(record))
    return found


def closure_of(index: DependencyIndex, abouts: Mapping[Key, dict], root: Key) -> list[tuple]:
    """What installing ``root`` pulls in, transitively, as ``index`` resolves it (each dependency
    to its newest match): (subdir, filename, record, about, refs of the files that need it), the
    shape the SBOM endpoint takes. Unsatisfied dependencies are left out."""
    return [(d.key[0], d.key[1], dict(index.records[d.key]), abouts.get(d.key, {}),
             [f"{s}/{f}" for s, f in d.needed_by]) for d in index.report([root]).dependencies]
