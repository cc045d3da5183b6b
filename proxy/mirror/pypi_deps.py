"""Dependencies of python records (``Requires-Dist``, PEP 508): resolved among a channel's python
files for the dependency report of a python mirror (proxy/mirror/report.py) and the SBOMs, and read
backwards for the dependents index (proxy/store/dependents.py).

Resolving: a requirement counts when its marker holds for the server's own Python environment with
no extra asked for (``extra == "..."`` requirements are optional); it is satisfied by a file of
that project whose version the specifier allows (pre-releases only when nothing else matches, as
pip does), yanked files left out.

Dependents ask the wider question "could this file pull that project in?": every requirement
counts, whatever its marker says (it holds on some machine), and one that only an extra of the
dependent turns on is reported as optional, with the extras that do.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from conda_platform_plugin.dependencies import DependencyIndex, Key


@lru_cache(maxsize=65536)
def requirement(spec: str) -> Requirement | None:
    """A Requires-Dist entry parsed; None when it does not parse (never satisfied)."""
    try:
        return Requirement(spec)
    except InvalidRequirement:
        return None


def _counts(req: Requirement) -> bool:
    """Does the requirement hold here, with no extra asked for?"""
    try:
        return req.marker is None or req.marker.evaluate({"extra": ""})
    except (UndefinedComparison, UndefinedEnvironmentName):
        return False


def needed(record: Mapping) -> list[str]:
    """The record's requirements that installing it here needs (unparsable ones kept: reported missing)."""
    return [s for s in record.get("requires_dist") or () if (req := requirement(s)) is None or _counts(req)]


def needed_names(record: Mapping) -> set[str]:
    return {canonicalize_name(req.name) for s in needed(record) if (req := requirement(s)) is not None}


class PythonDependencyIndex(DependencyIndex):
    def depends(self, key: Key) -> list[str]:
        return needed(self.records[key])

    def _find(self, spec: str, subdir: str) -> list[Key]:
        req = requirement(spec)
        if req is None:
            return []
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
        return found or [k for k, v in versions.items() if req.specifier.contains(v, prereleases=True)]


async def closure(db, channel_id: int, subdir: str, filename: str, record: Mapping) -> list[tuple]:  # noqa: ANN001
    """What installing a python file pulls in, transitively: for each requirement the newest of the
    channel's current python files that satisfies it (store/closure.py's shape)."""
    from ..store.closure import closure_of, reachable

    found = await reachable(db, channel_id, "python", needed_names(record), needed_names, subdir)
    index = PythonDependencyIndex((s, f, rec) for s, f, rec, _ in found)
    index.records.setdefault((subdir, filename), record)
    return closure_of(index, {(s, f): about for s, f, _, about in found}, (subdir, filename))


# -- dependents ------------------------------------------------------------------------------------
def dependent_entries(record: Mapping) -> list[tuple[str, str]]:
    """(PEP 503 name, requirement) of every requirement of the record, markers and extras
    notwithstanding; unparsable ones are left out (they name nothing for sure)."""
    return [(canonicalize_name(req.name), s) for s in record.get("requires_dist") or ()
            if (req := requirement(s)) is not None]


def requirement_json(spec: str) -> dict:
    """A dependent's requirement as the dependents answer shows it: the version range, the marker,
    and whether only extras of the dependent turn it on (``optional``, ``via_extras``)."""
    req = requirement(spec)
    if req is None:
        return {"constraint": "", "optional": False}
    out: dict = {"constraint": str(req.specifier), "optional": False}
    if req.extras:
        out["extras"] = sorted(req.extras)  # the extras of the depended-on project it asks for
    if req.marker is not None:
        out["marker"] = str(req.marker)
        via = extras_only(req.marker)
        if via is not None:
            out.update(optional=True, via_extras=via)
    return out


def extras_only(marker: Marker) -> list[str] | None:
    """The extras that turn on a requirement with this marker when it holds for no environment
    without one; None when some environment may need it with no extra.

    Decided without knowing the environment: each comparison of ``extra`` is true or false for
    a given extra, every other comparison is unknown, and ``and``/``or`` combine them in
    three-valued logic (false only when false whatever the unknowns are)."""
    try:
        if _holds(marker._markers, "") is not False:
            return None
        named = {canonicalize_name(v) for v in _extra_values(marker._markers)}
        return sorted(e for e in named if _holds(marker._markers, e) is not False)
    except (AttributeError, TypeError, ValueError):  # a marker tree this packaging does not build
        return None


def _atom(node: tuple, extra: str) -> bool | None:
    lhs, op, rhs = node
    names = [type(lhs).__name__, type(rhs).__name__]
    if names == ["Variable", "Value"] and lhs.value == "extra":
        value = rhs.value
    elif names == ["Value", "Variable"] and rhs.value == "extra":
        value = lhs.value
    else:
        return None
    if op.value == "==":
        return canonicalize_name(value) == extra
    if op.value == "!=":
        return canonicalize_name(value) != extra
    return None


def _holds(markers: list, extra: str) -> bool | None:
    """packaging's marker list (``or``-separated groups of ``and``-ed items) in Kleene logic."""
    groups: list[list[bool | None]] = [[]]
    for item in markers:
        if item == "or":
            groups.append([])
        elif item == "and":
            continue
        elif isinstance(item, list):
            groups[-1].append(_holds(item, extra))
        else:
            groups[-1].append(_atom(item, extra))
    results = [False if False in g else True if all(v is True for v in g) else None for g in groups]
    return True if True in results else False if all(r is False for r in results) else None


def _extra_values(markers: list) -> list[str]:
    out = []
    for item in markers:
        if isinstance(item, list):
            out.extend(_extra_values(item))
        elif isinstance(item, tuple):
            lhs, _, rhs = item
            if type(lhs).__name__ == "Variable" and lhs.value == "extra":
                out.append(rhs.value)
            elif type(rhs).__name__ == "Variable" and rhs.value == "extra":
                out.append(lhs.value)
    return out

