"""Dependencies of python records (``Requires-Dist``, PEP 508) resolved among a channel's python
files: what the dependency report of a python mirror walks (proxy/mirror/report.py).

A requirement counts when its marker holds for the server's own Python environment with no extra
asked for (``extra == "..."`` requirements are optional); it is satisfied by a file of that
project whose version the specifier allows (pre-releases only when nothing else matches, as
pip does), yanked files left out.
"""

from __future__ import annotations

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
