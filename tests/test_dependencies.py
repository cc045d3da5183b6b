"""Dependency resolution over real conda-forge repodata (the subchannel-py39 snapshot in shared/data)."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
import zstandard
from builders import SHARED_DATA

from conda_platform_plugin.dependencies import DependencyIndex

SNAPSHOT = SHARED_DATA / "repodata" / "conda-forge-subchannel-py39"


def _records(*subdirs: str) -> list[tuple[str, str, dict]]:
    out = []
    for subdir in subdirs:
        raw = zstandard.ZstdDecompressor().stream_reader((SNAPSHOT / subdir / "repodata.json.zst").open("rb")).read()
        doc = orjson.loads(raw)
        for section in ("packages", "packages.conda"):
            out.extend((subdir, fn, rec) for fn, rec in doc.get(section, {}).items())
    return out


@pytest.fixture(scope="module")
def index() -> DependencyIndex:
    return DependencyIndex(_records("linux-64", "noarch"))


def _newest(index: DependencyIndex, name: str, subdir: str = "linux-64") -> tuple[str, str]:
    return index._newest([k for k in index.records if index.records[k]["name"] == name and k[0] == subdir])


def test_candidates_follow_conda_matchspec_semantics(index: DependencyIndex) -> None:
    found = index.candidates("python >=3.9,<3.10", "linux-64")
    assert found and all(index.records[k]["version"].startswith("3.9") for k in found)
    assert all(k[0] in ("linux-64", "noarch") for k in found)
    # a build-string glob and an exact build number narrow the match
    assert index.candidates("python_abi 3.9.* *_cp39", "linux-64")
    assert index.candidates("python 2.7.*", "linux-64") == []
    assert index.candidates("not a valid spec >>>", "linux-64") == []


def test_report_of_a_real_package_resolves_its_whole_tree(index: DependencyIndex) -> None:
    root = _newest(index, "python")
    report = index.report([root])
    names = {d.name for d in report.dependencies}
    # python's real run dependencies on conda-forge, direct and indirect
    assert {"openssl", "libzlib", "ncurses", "readline"} <= names
    direct = {d.name for d in report.dependencies if d.direct}
    assert "openssl" in direct
    assert any(not d.direct for d in report.dependencies), "an indirect dependency (e.g. ca-certificates)"
    # the snapshot keeps only what py39 trees need, so nothing is missing for python itself
    assert report.missing == []
    assert report.to_json()["satisfied"] is True


def test_report_lists_what_the_channel_cannot_satisfy(index: DependencyIndex) -> None:
    # without openssl in the channel, python's dependency on it is reported with who needs it
    without = DependencyIndex([(s, f, r) for (s, f), r in index.records.items() if r["name"] != "openssl"])
    root = _newest(without, "python")
    report = without.report([root])
    missing = {m.spec.split()[0]: m for m in report.missing}
    assert "openssl" in missing
    assert root in missing["openssl"].needed_by
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert any(r["status"] == "missing" and r["dependency"].startswith("openssl") and r["needed_by"] == "/".join(root)
               for r in rows)
    assert report.to_json()["satisfied"] is False


def test_uninstallable_propagates_to_a_fixpoint(index: DependencyIndex) -> None:
    removed = {k for k, r in index.records.items() if r["name"] == "libzlib"}
    broken = index.uninstallable(removed)
    names = {index.records[k]["name"] for k in broken}
    # zlib's dependants break directly, python (through zlib-dependent libraries and itself) transitively
    assert "zlib" in names or "libpng" in names
    assert "python" in names
    assert not (set(broken) & removed)
    # each broken record says which of its specs failed
    key = next(k for k in broken if index.records[k]["name"] == "python")
    assert broken[key] and all(isinstance(s, str) for s in broken[key])
    # removing nothing breaks nothing that was not broken already
    assert index.uninstallable(set()) == {}


def test_noarch_packages_resolve_in_any_subdir(index: DependencyIndex) -> None:
    noarch = [k for k, r in index.records.items() if k[0] == "noarch" and any(d.startswith("python") for d in r.get("depends", ()))]
    assert noarch
    report = index.report(noarch[:20])
    assert not [m for m in report.missing if m.spec.startswith("python ")]
