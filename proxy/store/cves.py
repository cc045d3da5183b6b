"""Imported OSV advisories: stored as imported, indexed by the packages they name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

import orjson
import sqlalchemy as sa

from conda_platform_plugin.cves import Advisory, CveIndex, parse_advisory
from conda_platform_plugin.errors import BadRequest, NotFound

from .db import Database
from .search import _like_escape
from .tables import cve_packages, cves

MAX_BATCH = 5000


def _canonical(doc: Mapping) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _parse_all(docs: list[Mapping]) -> dict[str, tuple[Advisory, bytes]]:
    parsed: dict[str, tuple[Advisory, bytes]] = {}
    for i, doc in enumerate(docs):
        try:
            adv = parse_advisory(doc)
        except BadRequest as e:
            raise BadRequest(f"record {i + 1}: {e.message}", detail={"index": i}) from None
        parsed[adv.id] = (adv, _canonical(doc))
    return parsed


class CveStore:
    def __init__(self, db: Database):
        self.db = db
        self._index: CveIndex | None = None

    async def import_records(self, docs: Iterable[Mapping]) -> dict:
        """Insert or update advisories, all or nothing; importing the same records again changes nothing."""
        docs = list(docs)
        if len(docs) > MAX_BATCH:
            raise BadRequest(f"at most {MAX_BATCH} OSV records per request")
        parsed = await asyncio.to_thread(_parse_all, docs)  # CPU work off the event loop
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        now = time.time()
        async with self.db.write() as conn:
            existing: dict[str, bytes] = {}
            ids = sorted(parsed)
            for i in range(0, len(ids), 500):
                rows = await conn.execute(sa.select(cves.c.id, cves.c.data).where(cves.c.id.in_(ids[i:i + 500])))
                existing.update({r[0]: r[1] for r in rows})
            for vid, (adv, data) in parsed.items():
                values = dict(aliases=orjson.dumps(list(adv.aliases)).decode(), summary=adv.summary or
                              adv.details.strip().split("\n", 1)[0][:300], score=adv.score, severity=adv.severity,
                              published=adv.published, modified=adv.modified, data=data, imported_at=now)
                if vid not in existing:
                    await conn.execute(cves.insert().values(id=vid, **values))
                    counts["created"] += 1
                elif bytes(existing[vid]) != data:
                    await conn.execute(cves.update().where(cves.c.id == vid).values(**values))
                    await conn.execute(cve_packages.delete().where(cve_packages.c.cve_id == vid))
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
                    continue
                await conn.execute(cve_packages.insert(), [{"cve_id": vid, "ecosystem": e, "name": n}
                                                          for e, n in adv.packages()])
        return {**counts, "total": len(parsed)}

    async def stamp(self) -> str:
        """Changes whenever the advisories change (an import that created or updated any)."""
        async with self.db.read() as conn:
            n, last = (await conn.execute(sa.select(sa.func.count(), sa.func.max(cves.c.imported_at)))).one()
        return f"{n}:{last or 0:.6f}"

    async def index(self) -> CveIndex:
        """Every advisory, indexed for matching; rebuilt only after an import changed something."""
        stamp = await self.stamp()
        if self._index is None or self._index.stamp != stamp:
            async with self.db.read() as conn:
                rows = (await conn.execute(sa.select(cves.c.data))).scalars().all()
            self._index = await asyncio.to_thread(
                lambda: CveIndex([parse_advisory(orjson.loads(r)) for r in rows], stamp=stamp))
        return self._index

    async def get(self, ident: str) -> Advisory:
        """By OSV id, or by an alias (a CVE or GHSA id)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(cves.c.data).where(cves.c.id == ident))).first()
            if row is None:
                like = f'%"{_like_escape(ident)}"%'
                row = (await conn.execute(sa.select(cves.c.data).where(cves.c.aliases.like(like, escape="\\"))
                                          .order_by(cves.c.id))).first()
        if row is None:
            raise NotFound(f"no advisory {ident!r} has been imported", detail={"id": ident})
        return parse_advisory(orjson.loads(row[0]))

    async def list(self, *, q: str | None = None, package: str | None = None, ecosystem: str | None = None,
                   min_score: float | None = None, severity: str | None = None, page: int = 1,
                   per_page: int = 50) -> tuple[list[dict], int]:
        cond = sa.true()
        if q:
            like = f"%{_like_escape(q.lower())}%"
            cond &= (sa.func.lower(cves.c.id).like(like, escape="\\")
                     | sa.func.lower(cves.c.aliases).like(like, escape="\\")
                     | sa.func.lower(cves.c.summary).like(like, escape="\\"))
        if package:
            from conda_platform_plugin.cves import ecosystem_of, package_key

            eco, name = package_key(ecosystem, package) if ecosystem else ecosystem_of(package)
            sub = sa.select(cve_packages.c.cve_id).where(cve_packages.c.ecosystem == eco,
                                                         cve_packages.c.name == name)
            cond &= cves.c.id.in_(sub)
        if min_score is not None:
            cond &= cves.c.score >= min_score
        if severity:
            cond &= cves.c.severity == severity.lower()
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(cves).where(cond))).scalar_one()
            rows = (await conn.execute(sa.select(cves.c.id, cves.c.aliases, cves.c.summary, cves.c.score,
                                                 cves.c.severity, cves.c.published, cves.c.modified).where(cond)
                                       .order_by(cves.c.id).limit(per_page).offset((page - 1) * per_page))).all()
            ids = [r.id for r in rows]
            pkgs: dict[str, list[dict]] = {}
            if ids:
                for r in await conn.execute(sa.select(cve_packages).where(cve_packages.c.cve_id.in_(ids))):
                    pkgs.setdefault(r.cve_id, []).append({"ecosystem": r.ecosystem, "name": r.name})
        items = [{"id": r.id, "aliases": orjson.loads(r.aliases), "summary": r.summary, "score": r.score,
                  "severity": r.severity, "published": r.published, "modified": r.modified,
                  "packages": pkgs.get(r.id, [])} for r in rows]
        return items, total
