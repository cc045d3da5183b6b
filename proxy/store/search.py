"""Package search over the current contents of every channel.

A query with ``*``, ``?`` or ``[`` is a glob over the whole name; otherwise it is a substring.
Results rank exact matches first, then prefixes, then other substrings.
"""

from __future__ import annotations

import fnmatch

import sqlalchemy as sa

from conda_platform_plugin.access import Identity
from conda_platform_plugin.licenses import license_matches

from .artifacts import newest_versions
from .channels import readable_condition
from .db import Database
from .tables import channels, files


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_to_like(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append("%" if ch == "*" else "_" if ch == "?" else _like_escape(ch))
    return "".join(out)


def is_glob(q: str) -> bool:
    return any(c in q for c in "*?[")


class SearchIndex:
    def __init__(self, db: Database):
        self.db = db

    async def search(self, q: str, *, channel: str | None = None, type_: str | None = None,
                     subdir: str | None = None, license: str | None = None, visible_to: Identity | None = None,
                     page: int = 1, per_page: int = 50) -> tuple[list[dict], int]:
        q = q.strip().lower()
        cond = files.c.removed_gen.is_(None)
        if is_glob(q):
            if "[" in q:  # character classes: LIKE cannot express them, so match them in Python below
                cond &= sa.func.lower(files.c.name).like(glob_to_like(q.split("[")[0]) + "%", escape="\\")
            else:
                cond &= sa.func.lower(files.c.name).like(glob_to_like(q), escape="\\")
            rank = sa.literal(2)
        elif q:
            cond &= sa.func.lower(files.c.name).like(f"%{_like_escape(q)}%", escape="\\")
            rank = sa.case(
                (sa.func.lower(files.c.name) == q, 0),
                (sa.func.lower(files.c.name).like(f"{_like_escape(q)}%", escape="\\"), 1),
                else_=2,
            )
        else:
            rank = sa.literal(2)
        if channel:
            cond &= channels.c.name == channel
        if visible_to is not None:
            cond &= readable_condition(visible_to)
        if type_:
            cond &= files.c.type == type_
        if subdir:
            cond &= files.c.subdir == subdir
        if license:  # by meaning (SPDX normalisation) or as text: the license strings that match
            async with self.db.read() as conn:
                strings = (await conn.execute(sa.select(files.c.license).where(files.c.removed_gen.is_(None))
                                              .distinct())).scalars().all()
            cond &= files.c.license.in_([s for s in strings if license_matches(s, license)])
        grouped = (
            sa.select(
                channels.c.name.label("channel"), files.c.type, files.c.name,
                sa.func.min(rank).label("rank"),
                sa.func.count().label("file_count"),
                sa.func.max(files.c.uploaded_at).label("last_upload"),
            )
            .select_from(files.join(channels, files.c.channel_id == channels.c.id))
            .where(cond)
            .group_by(channels.c.name, files.c.type, files.c.name)
        ).subquery()
        async with self.db.read() as conn:
            if "[" in q:
                rows = (await conn.execute(sa.select(grouped).order_by(grouped.c.name, grouped.c.channel))).all()
                rows = [r for r in rows if fnmatch.fnmatchcase(r.name.lower(), q)]
                total = len(rows)
                rows = rows[(page - 1) * per_page : page * per_page]
            else:
                total = (await conn.execute(sa.select(sa.func.count()).select_from(grouped))).scalar_one()
                rows = (
                    await conn.execute(
                        sa.select(grouped)
                        .order_by(grouped.c.rank, sa.func.length(grouped.c.name), grouped.c.name, grouped.c.channel)
                        .limit(per_page).offset((page - 1) * per_page)
                    )
                ).all()
            newest = await newest_versions(conn, [(r.channel, r.type, r.name) for r in rows])
        return [
            {"channel": r.channel, "type": r.type, "name": r.name, "file_count": r.file_count,
             **newest[(r.channel, r.type, r.name)],
             "match": ("exact", "prefix", "substring")[r.rank] if not is_glob(q) else "glob"}
            for r in rows
        ], total
