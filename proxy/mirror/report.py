"""Dependency reports: what a mirror's (or a whole channel's) packages need, resolved against the
channel, and every dependency the channel cannot satisfy with the packages that need it."""

from __future__ import annotations

import asyncio

import orjson
import sqlalchemy as sa

from conda_platform_plugin.dependencies import DependencyIndex, DependencyReport

from ..store.db import Database
from ..store.publish import CURRENT
from ..store.tables import files
from .pypi_deps import PythonDependencyIndex

BATCH = 5000


#: artifact type -> the index that resolves its records' dependencies among the channel's files of that type
INDEXES: dict[str, type[DependencyIndex]] = {"conda": DependencyIndex, "python": PythonDependencyIndex}


async def dependency_report(db: Database, channel_id: int, mirror_id: int | None = None,
                            type_: str = "conda") -> DependencyReport:
    """Roots: the mirror's current files (or every file of the type in the channel); index: the
    channel's files of that type (a python mirror's report resolves PEP 508 requirements)."""
    records: list[tuple[str, str, dict]] = []
    roots: list[tuple[str, str]] = []
    async with db.read() as conn:
        result = await conn.stream(
            sa.select(files.c.subdir, files.c.filename, files.c.record, files.c.mirror_id)
            .where(files.c.channel_id == channel_id, files.c.type == type_, CURRENT)
            .execution_options(yield_per=BATCH))
        async for part in result.partitions(BATCH):
            for subdir, filename, record, mid in part:
                records.append((subdir, filename, orjson.loads(record)))
                if mirror_id is None or mid == mirror_id:
                    roots.append((subdir, filename))
    return await asyncio.to_thread(lambda: INDEXES.get(type_, DependencyIndex)(records).report(roots))
