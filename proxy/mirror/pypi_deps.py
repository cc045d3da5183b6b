"""Dependencies of python records (``Requires-Dist``, PEP 508) resolved among a channel's python
files: what the dependency report of a python mirror walks (proxy/mirror/report.py).

A requirement counts when its marker holds for the server's own Python environment with no extra
asked for (``extra == "..."`` requirements are optional); it is satisfied by a file of that
project whose version the specifier allows (pre-releases only when nothing else matches, as
pip does), yanked files left out.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import sqlalchemy as sa
from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from conda_platform_plugin.dependencies import DependencyIndex, Key


class PythonDependencyIndex(DependencyIndex):
    def _requirement(self, spec: str) -> Requirement | None:
        try:
            return Requirement(spec)
        except InvalidRequirement:
            return None

    def depends(self, key: Key) -> list[str]:
        out = []
        for spec in self.records[key].get("requires_dist") or ():
            req = self._requirement(spec)
            if req is None:
                out.append(spec)  # never satisfied: reported as missing
                continue
            try:
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
            except (UndefinedComparison, UndefinedEnvironmentName):
                continue
            out.append(spec)
        return out

    def candidates(self, spec: str, subdir: str) -> list[Key]:
        cached = self._candidates.get((spec, subdir))
        if cached is not None:
            return cached
        req = self._requirement(spec)
        found: list[Key] = []
        if req is not None:
            versions: dict[Key, Version] = {}
            for key in self._by_name.get(canonicalize_name(req.name), ()):
                rec = self.records[key]
                if rec.get("yanked"):
                    continue
                try:
                    versions[key] = Version(str(rec["version"]))
                except InvalidVersion:
                    continue
            found = [k for k, v in versions.items() if req.specifier.contains(v)]
            if not found:
                found = [k for k, v in versions.items() if req.specifier.contains(v, prereleases=True)]
        self._candidates[(spec, subdir)] = found
        return found


async def closure(db, channel_id: int, subdir: str, filename: str, record: Mapping) -> list[tuple]:  # noqa: ANN001
    """What installing a python file pulls in, transitively: for each requirement the newest of the
    channel's current python files that satisfies it, as (subdir, filename, record, about, refs of
    the files that need it) — the shape the SBOM endpoint takes. Unsatisfied ones are left out."""
    from ..store.publish import CURRENT
    from ..store.tables import files

    async with db.read() as conn:
        rows = (await conn.execute(sa.select(files.c.subdir, files.c.filename, files.c.record, files.c.about).where(
            files.c.channel_id == channel_id, files.c.subdir == subdir, files.c.type == "python", CURRENT))).all()
    abouts = {(r.subdir, r.filename): r.about for r in rows}
    index = PythonDependencyIndex([(r.subdir, r.filename, orjson.loads(r.record)) for r in rows])
    index.records.setdefault((subdir, filename), record)
    report = index.report([(subdir, filename)])
    return [(d.key[0], d.key[1], dict(index.records[d.key]),
             orjson.loads(abouts[d.key]) if abouts.get(d.key) else {}, [f"{s}/{f}" for s, f in d.needed_by])
            for d in report.dependencies]
