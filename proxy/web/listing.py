"""The Packages tab's query: a channel's current files, filtered by column and paged in the
database, so a page costs the same with 100,000 files as with 100.

Rows are ordered by platform (subdir), then name and filename: the order of the files table's
``ix_files_render`` index, so even the last page of 100,000 files is read from the index instead
of sorting every row. The distinct subdirs and license strings of a channel (the Platform
choices, and what a license filter matches by meaning) are kept per channel generation."""

from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from multidict import MultiMapping

from conda_platform_plugin.errors import BadRequest
from conda_platform_plugin.names import ARTIFACT_TYPES

from ..store.channels import Channel
from ..store.files import FILE_COLUMNS, license_matches
from ..store.publish import CURRENT
from ..store.tables import files

#: the "uploaded" column's choices: within the last ...
UPLOADED = {"1d": ("last day", 86400), "7d": ("last 7 days", 7 * 86400), "30d": ("last 30 days", 30 * 86400),
            "365d": ("last year", 365 * 86400)}
MAX_FILTER = 200


@dataclass
class Filters:
    search: str = ""  # in the name or the summary
    name: str = ""  # the name starts with
    version: str = ""  # the version starts with
    subdir: str = ""
    type: str = ""
    license: str = ""  # by meaning: MIT matches "MIT License"
    uploaded: str = ""  # a key of UPLOADED

    @classmethod
    def from_query(cls, query: MultiMapping[str]) -> Filters:
        values = {k: query.get(k, "").strip() for k in cls.__dataclass_fields__}
        if any(len(v) > MAX_FILTER for v in values.values()):
            raise BadRequest(f"filters are at most {MAX_FILTER} characters")
        if values["type"] and values["type"] not in ARTIFACT_TYPES:
            raise BadRequest(f"unknown type {values['type']!r}; known: {', '.join(ARTIFACT_TYPES)}")
        if values["uploaded"] and values["uploaded"] not in UPLOADED:
            raise BadRequest(f"unknown upload period {values['uploaded']!r}")
        return cls(**values)

    def query(self) -> dict[str, str]:
        """The filters set, as query parameters (for paging links)."""
        return {k: v for k, v in asdict(self).items() if v}


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_files(platform, channel: Channel, f: Filters, page: int, per_page: int,  # noqa: ANN001
                     now: float | None = None) -> tuple[list[sa.Row], int]:
    cond = (files.c.channel_id == channel.id) & CURRENT
    if f.search:
        pattern = f"%{_like(f.search.lower())}%"
        cond &= sa.or_(files.c.name.like(pattern, escape="\\"),
                       sa.func.lower(files.c.summary).like(pattern, escape="\\"))
    if f.name:
        cond &= files.c.name.like(f"{_like(f.name.lower())}%", escape="\\")
    if f.version:
        cond &= files.c.version.like(f"{_like(f.version)}%", escape="\\")
    if f.subdir:
        cond &= files.c.subdir == f.subdir
    if f.type:
        cond &= files.c.type == f.type
    if f.uploaded:
        cond &= files.c.uploaded_at >= (time.time() if now is None else now) - UPLOADED[f.uploaded][1]
    if f.license:  # the license strings that normalise to a match, as the files API filters them
        strings = (await facts(platform, channel))["licenses"]
        cond &= files.c.license.in_([s for s in strings if license_matches(s, f.license, None)])
    # the number of matches is kept per generation and filters (not with an upload period: that moves
    # with the clock), so paging through a view counts once
    counts = (await facts(platform, channel))["counts"]
    key = None if f.uploaded else tuple(sorted(f.query().items()))
    order = (files.c.subdir, files.c.name, files.c.filename)
    async with platform.db.read() as conn:
        total = counts.get(key) if key is not None else None
        if total is None:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(files).where(cond))).scalar_one()
            if key is not None and len(counts) < MAX_COUNTS:
                counts[key] = total
        # the page's ids first (narrow rows, in index order), then their whole rows; a page in the second
        # half is read from the end backwards, so no page skips more than half the rows
        start = (page - 1) * per_page
        if start >= total:
            ids = []
        elif start + per_page / 2 <= total / 2:
            ids = (await conn.execute(sa.select(files.c.id).where(cond).order_by(*order)
                                      .limit(per_page).offset(start))).scalars().all()
        else:
            end = min(start + per_page, total)
            ids = (await conn.execute(sa.select(files.c.id).where(cond).order_by(*(c.desc() for c in order))
                                      .limit(end - start).offset(total - end))).scalars().all()
        rows = (await conn.execute(sa.select(*FILE_COLUMNS).where(files.c.id.in_(ids)).order_by(*order))).all() \
            if ids else []
    return rows, total


#: (channel id, head generation) → {"subdirs": [...], "licenses": [...]}, per Platform
_FACTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FACTS_SIZE = 256
MAX_COUNTS = 1000  # filtered views counted per channel generation


async def facts(platform, channel: Channel) -> dict:  # noqa: ANN001
    """The channel's distinct subdirs and license strings, and the counts of filtered views; every
    change of its contents makes a new head generation, so an entry is never stale."""
    cache = _FACTS.setdefault(platform, {})
    key = (channel.id, channel.head_gen)
    hit = cache.get(key)
    if hit is None:
        cond = (files.c.channel_id == channel.id) & CURRENT
        async with platform.db.read() as conn:
            subdirs = (await conn.execute(sa.select(files.c.subdir).where(cond).distinct())).scalars().all()
            licenses = (await conn.execute(sa.select(files.c.license).where(cond).distinct())).scalars().all()
        if len(cache) >= FACTS_SIZE:
            cache.pop(next(iter(cache)))
        hit = cache[key] = {"subdirs": sorted(subdirs), "licenses": list(licenses), "counts": {}}
    return hit


async def subdirs(platform, channel: Channel) -> list[str]:  # noqa: ANN001
    """The subdirs the channel has files in (the platform column's choices)."""
    return (await facts(platform, channel))["subdirs"]
