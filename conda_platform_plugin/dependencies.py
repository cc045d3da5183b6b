"""What packages of a channel need, and what the channel cannot give them — without a solver.

A dependency is *satisfied* in a set of records when at least one record of the set matches its
MatchSpec (py-rattler's, so conda's semantics), looking in the dependant's own subdir and in
``noarch`` (a ``noarch`` package may be satisfied from any subdir). Virtual packages (``__glibc``,
``__unix``, …) come from the machine, never from a channel, and are always satisfied.

The mirror dependency report walks from a set of roots through the newest matching record of each
dependency (the one a solver would prefer) and lists every dependency that nothing matches. The
policy preview asks the other question: once some records are removed, which of the others can
no longer be installed at all (a dependency whose every candidate is gone or itself
uninstallable, to a fixpoint).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rattler import BuildString, MatchSpec, PackageRecord

from .versions import version_key

#: a record's address in a channel: (subdir, filename)
Key = tuple[str, str]


@dataclass
class Missing:
    """A dependency nothing in the channel satisfies, and the packages that need it."""

    spec: str
    subdir: str
    needed_by: list[Key] = field(default_factory=list)


@dataclass
class Dependency:
    key: Key
    name: str
    version: str
    direct: bool
    needed_by: list[Key] = field(default_factory=list)


@dataclass
class DependencyReport:
    roots: list[Key]
    dependencies: list[Dependency]
    missing: list[Missing]

    def to_json(self) -> dict:
        return {
            "roots": len(self.roots),
            "dependencies": [
                {"subdir": d.key[0], "filename": d.key[1], "name": d.name, "version": d.version,
                 "direct": d.direct, "needed_by": [f"{s}/{f}" for s, f in d.needed_by]}
                for d in self.dependencies
            ],
            "missing": [
                {"spec": m.spec, "subdir": m.subdir, "needed_by": [f"{s}/{f}" for s, f in m.needed_by]}
                for m in self.missing
            ],
            "satisfied": not self.missing,
        }

    def to_csv(self) -> str:
        """One row per (dependency, package that needs it); unsatisfiable ones first."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["status", "dependency", "subdir", "resolved_to", "direct", "needed_by"])
        for m in self.missing:
            for s, f in m.needed_by:
                writer.writerow(["missing", m.spec, m.subdir, "", "", f"{s}/{f}"])
        for d in self.dependencies:
            for s, f in d.needed_by:
                writer.writerow(["resolved", d.name, d.key[0], d.key[1], "yes" if d.direct else "no", f"{s}/{f}"])
        return out.getvalue()


class DependencyIndex:
    """Records of one channel (or of what a policy keeps of it), indexed by name for matching."""

    def __init__(self, records: Iterable[tuple[str, str, Mapping]]):
        self.records: dict[Key, Mapping] = {}
        self._by_name: dict[str, list[Key]] = defaultdict(list)
        for subdir, filename, record in records:
            key = (subdir, filename)
            self.records[key] = record
            self._by_name[str(record.get("name", "")).lower()].append(key)
        self._specs: dict[str, MatchSpec | None] = {}
        self._matchable: dict[Key, PackageRecord] = {}
        self._candidates: dict[tuple[str, str], list[Key]] = {}

    # -- matching ------------------------------------------------------------------------------
    def _spec(self, spec: str) -> MatchSpec | None:
        """The parsed spec; None for a virtual package or a spec that does not parse (never matches)."""
        if spec not in self._specs:
            try:
                parsed = MatchSpec(spec)
            except Exception:  # noqa: BLE001 - rattler raises its own parse errors
                parsed = None
            self._specs[spec] = parsed
        return self._specs[spec]

    def _record(self, key: Key) -> PackageRecord:
        rec = self._matchable.get(key)
        if rec is None:
            r = self.records[key]
            rec = self._matchable[key] = PackageRecord(
                name=str(r["name"]), version=str(r["version"]), build=BuildString(str(r.get("build", ""))),
                build_number=int(r.get("build_number") or 0), subdir=str(r.get("subdir") or key[0]),
            )
        return rec

    @staticmethod
    def is_virtual(spec: str) -> bool:
        return spec.lstrip().startswith("__")

    def candidates(self, spec: str, subdir: str) -> list[Key]:
        """Records satisfying ``spec`` for a package of ``subdir``, found once per (spec, subdir):
        a report asks the same spec for many packages. Each type's index says how (``_find``)."""
        found = self._candidates.get((spec, subdir))
        if found is None:
            found = self._candidates[(spec, subdir)] = self._find(spec, subdir)
        return found

    def _find(self, spec: str, subdir: str) -> list[Key]:
        """Conda: records matching the MatchSpec in the package's own subdir or noarch."""
        parsed = self._spec(spec)
        if parsed is None:
            return []
        return [key for key in self._by_name.get(parsed.name.normalized, ())
                if (subdir == "noarch" or key[0] in (subdir, "noarch")) and parsed.matches(self._record(key))]

    def _newest(self, keys: list[Key]) -> Key:
        def order(key: Key) -> tuple:
            r = self.records[key]
            return (version_key(str(r["version"])), int(r.get("build_number") or 0), int(r.get("timestamp") or 0))

        return max(keys, key=order)

    def depends(self, key: Key) -> list[str]:
        return [d for d in self.records[key].get("depends") or () if not self.is_virtual(d)]

    # -- questions -----------------------------------------------------------------------------
    def report(self, roots: Iterable[Key]) -> DependencyReport:
        """Direct and indirect dependencies of ``roots``, each resolved to its newest match."""
        roots = [k for k in dict.fromkeys(roots) if k in self.records]
        root_set = set(roots)
        deps: dict[Key, Dependency] = {}
        missing: dict[tuple[str, str], Missing] = {}
        queue = deque(roots)
        seen = set(roots)
        while queue:
            key = queue.popleft()
            for spec in self.depends(key):
                found = self.candidates(spec, key[0])
                if not found:
                    m = missing.setdefault((spec, key[0]), Missing(spec, key[0]))
                    m.needed_by.append(key)
                    continue
                chosen = self._newest(found)
                if chosen in root_set:
                    continue
                r = self.records[chosen]
                dep = deps.get(chosen)
                if dep is None:
                    dep = deps[chosen] = Dependency(chosen, str(r["name"]), str(r["version"]), key in root_set)
                dep.direct = dep.direct or key in root_set
                dep.needed_by.append(key)
                if chosen not in seen:
                    seen.add(chosen)
                    queue.append(chosen)
        return DependencyReport(
            roots=roots,
            dependencies=sorted(deps.values(), key=lambda d: (d.name, d.key)),
            missing=sorted(missing.values(), key=lambda m: (m.spec, m.subdir)),
        )

    def uninstallable(self, removed: set[Key]) -> dict[Key, list[str]]:
        """Records not in ``removed`` that can no longer be installed, with the specs that fail.

        A record fails when one of its dependencies has no candidate left that is not removed and
        not itself failing; failures propagate to a fixpoint. Records that could not be installed
        before anything was removed are not blamed on the removal.
        """
        broken_before = self._failing(set())
        broken_after = self._failing(set(removed))
        return {k: specs for k, specs in broken_after.items() if k not in removed and k not in broken_before}

    def _failing(self, gone: set[Key]) -> dict[Key, list[str]]:
        # live candidates per (record, spec); a record whose some spec drops to zero fails
        remaining: dict[tuple[Key, str], int] = {}
        dependants: dict[Key, list[tuple[Key, str]]] = defaultdict(list)
        failing: dict[Key, list[str]] = {}
        queue: deque[Key] = deque(gone)
        for key in self.records:
            if key in gone:
                continue
            for spec in self.depends(key):
                live = [c for c in self.candidates(spec, key[0]) if c not in gone]
                remaining[(key, spec)] = len(live)
                for c in live:
                    dependants[c].append((key, spec))
                if not live:
                    if key not in failing:
                        queue.append(key)
                    failing.setdefault(key, []).append(spec)
        dropped = set(queue)
        while queue:
            out = queue.popleft()
            for key, spec in dependants.get(out, ()):
                if key in gone:
                    continue
                remaining[(key, spec)] -= 1
                if remaining[(key, spec)] == 0:
                    failing.setdefault(key, []).append(spec)
                    if key not in dropped:
                        dropped.add(key)
                        queue.append(key)
        return failing
