"""The policy model on real records: every rule kind on the conda-forge subchannel snapshot and the
conda-content-trust signed repodata of shared/data, with the reason of every verdict."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import orjson
import pytest
import zstandard
from builders import SHARED_DATA

from conda_platform_plugin.cves import CveIndex, parse_advisory, read_path
from conda_platform_plugin.errors import BadRequest
from conda_platform_plugin.policy import KINDS, Policy, Verdict, summarize
from conda_platform_plugin.versions import version_key

SNAPSHOT = SHARED_DATA / "repodata" / "conda-forge-subchannel-py39"
TRUST = SHARED_DATA / "trust" / "conda-content-trust"


def subdir_records(subdir: str) -> dict[str, dict]:
    raw = zstandard.ZstdDecompressor().stream_reader((SNAPSHOT / subdir / "repodata.json.zst").open("rb")).read()
    doc = orjson.loads(raw)
    return {**doc.get("packages", {}), **doc.get("packages.conda", {})}


@pytest.fixture(scope="module")
def linux() -> dict[str, dict]:
    return subdir_records("linux-64")


@pytest.fixture(scope="module")
def noarch() -> dict[str, dict]:
    return subdir_records("noarch")


@pytest.fixture(scope="module")
def cves() -> CveIndex:
    return CveIndex(parse_advisory(d) for _, d in read_path(SHARED_DATA / "osv" / "pysec"))


def policy(*rules: dict, name: str = "p") -> Policy:
    return Policy.from_json({"name": name, "rules": list(rules)})


def ts(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp()


def built(rec: dict) -> float:
    t = rec["timestamp"]
    return t / 1000 if t > 1e11 else t


def test_subdir_rule_excludes_whole_subdirs_and_says_which_are_allowed(linux, noarch) -> None:
    c = policy({"kind": "subdir", "allow": ["noarch", "osx-arm64"]}).compile()
    assert c.exclusions("noarch", noarch) == {}
    out = c.exclusions("linux-64", linux)
    assert set(out) == set(linux)
    v = next(iter(out.values()))
    assert v.rule == "subdir" and "linux-64" in v.reason and "noarch, osx-arm64" in v.reason


def test_name_rule_globs_include_and_exclude(linux) -> None:
    c = policy({"kind": "name", "include": ["python*", "lib*", "pip"], "exclude": ["libstdcxx*"]}).compile()
    out = c.exclusions("linux-64", linux)
    for fn, rec in linux.items():
        name = rec["name"]
        if name.startswith("libstdcxx"):
            assert out[fn].reason == "name matches the excluded pattern 'libstdcxx*'"
        elif name.startswith(("python", "lib")) or name == "pip":
            assert fn not in out
        else:
            assert out[fn].rule == "name" and "none of the included patterns" in out[fn].reason
    assert {"pip", "libstdcxx-ng", "python", "libgcc-ng"} <= {r["name"] for r in linux.values()}


def test_signature_rule_on_real_signed_repodata() -> None:
    doc = orjson.loads((TRUST / "repodata.json").read_bytes())
    records = {**doc["packages"], **doc["packages.conda"]}
    sigs = doc["signatures"]
    present = policy({"kind": "signature"}).compile()
    by_subdir = defaultdict(dict)
    for fn, rec in records.items():
        by_subdir[rec["subdir"]][fn] = rec
    out = {fn: v for s, recs in by_subdir.items() for fn, v in present.exclusions(s, recs, sigs).items()}
    assert set(out) == {"broken-0.0.1-broken.conda"}  # the one record without a signature entry
    assert out["broken-0.0.1-broken.conda"].rule == "signature"
    # no signature data at all: nothing passes a policy that requires signatures
    assert set(present.exclusions("linux-64", by_subdir["linux-64"], None)) == set(by_subdir["linux-64"])

    key_mgr = orjson.loads((TRUST / "key_mgr_verify.json").read_bytes())
    verified = policy({"kind": "signature", "key_mgr": key_mgr}).compile()
    out = {fn: v for s, recs in by_subdir.items() for fn, v in verified.exclusions(s, recs, sigs).items()}
    assert set(out) == {"broken-0.0.1-broken.conda", "broken-0.0.1-broken.tar.bz2"}
    assert "not valid" in out["broken-0.0.1-broken.tar.bz2"].reason


def test_age_rule_cooldown_and_not_before_with_a_fixed_clock(linux) -> None:
    now = ts("2024-05-10")
    c = policy({"kind": "age", "min_days": 7}).compile(now=now)
    out = c.exclusions("linux-64", linux)
    cutoff = now - 7 * 86400
    recent = {fn for fn, r in linux.items() if r.get("timestamp") and built(r) > cutoff}
    assert recent and set(out) == recent
    assert all(v.rule == "age" and "cooldown" in v.reason for v in out.values())

    old = policy({"kind": "age", "not_before": "2020-01-01"}).compile(now=now).exclusions("linux-64", linux)
    assert set(old) == {fn for fn, r in linux.items() if r.get("timestamp") and built(r) < ts("2020-01-01")}
    assert next(iter(old.values())).reason.endswith("before 2020-01-01")


def test_version_rule_with_conda_matchspecs(linux) -> None:
    c = policy({"kind": "version", "deny": ["python <3.9.10", "openssl 1.1.1*"],
                "allow": ["sqlite >=3.40", "sqlite 3.36.0 *_0"]}).compile()
    out = c.exclusions("linux-64", linux)
    for fn, r in linux.items():
        name, v = r["name"], r["version"]
        if name == "python":
            assert (fn in out) == (version_key(v) < version_key("3.9.10")), fn
        elif name == "openssl":
            assert (fn in out) == v.startswith("1.1.1"), fn
        elif name == "sqlite":
            ok = version_key(v) >= version_key("3.40") or (v == "3.36.0" and r["build"].endswith("_0"))
            assert (fn in out) == (not ok), fn
        else:
            assert fn not in out
    reasons = {v.reason for v in out.values()}
    assert any("matches the denied spec 'python <3.9.10'" in r for r in reasons)
    assert any("matches none of the allowed specs (sqlite >=3.40, sqlite 3.36.0 *_0)" in r for r in reasons)
    assert {"python", "openssl", "sqlite"} <= {linux[fn]["name"] for fn in out}


def test_version_rule_with_pep440_requirements(noarch) -> None:
    c = policy({"kind": "version", "syntax": "pep440", "deny": ["setuptools<65"], "allow": ["pip>=22,!=23.0"]})
    out = c.compile().exclusions("noarch", noarch)
    from packaging.version import Version

    for fn, r in noarch.items():
        if r["name"] == "setuptools":
            assert (fn in out) == (Version(r["version"]) < Version("65")), fn
        elif r["name"] == "pip":
            v = Version(r["version"])
            assert (fn in out) == (not (v >= Version("22") and v != Version("23.0"))), fn
    assert any(r["name"] == "pip" for r in noarch.values())


def test_license_rule_families_deny_wins_and_unknown_setting(linux) -> None:
    allow_permissive = policy({"kind": "license", "allow_families": ["MIT", "BSD", "APACHE", "PSF"],
                               "deny": ["BSD-3-Clause"], "unknown": "deny"}).compile()
    out = allow_permissive.exclusions("linux-64", linux)
    from conda_platform_plugin.licenses import normalize

    for fn, r in linux.items():
        info = normalize(r.get("license"), r.get("license_family"))
        if info.spdx is None:
            assert out[fn].rule == "license" and "not a known SPDX license" in out[fn].reason
        elif info.spdx == "BSD-3-Clause":  # allowed by family, denied by id: deny wins
            assert "is denied" in out[fn].reason
        elif info.spdx == "MIT":
            assert fn not in out
        elif info.spdx.startswith("GPL-3.0"):
            assert "not allowed" in out[fn].reason
    # an OR expression passes when one alternative is acceptable; AND needs every part
    recs = {"a-1-0.conda": {"name": "a", "version": "1", "build": "0", "license": "GPL-2 | MIT"},
            "b-1-0.conda": {"name": "b", "version": "1", "build": "0", "license": "GPL-2.0-only AND MIT"},
            "c-1-0.conda": {"name": "c", "version": "1", "build": "0", "license": "Custom"}}
    no_gpl = policy({"kind": "license", "deny_families": ["GPL2"]}).compile().exclusions("linux-64", recs)
    assert set(no_gpl) == {"b-1-0.conda"}  # unknown licenses are allowed by default
    assert "GPL-2.0-only" in no_gpl["b-1-0.conda"].reason and "family GPL2" in no_gpl["b-1-0.conda"].reason


def test_cve_rule_on_real_advisories_and_records(noarch, cves) -> None:
    every = policy({"kind": "cve"}).compile(cves=cves)
    out = every.exclusions("noarch", noarch)
    for fn, r in noarch.items():
        affected = cves.affecting(r["name"], r["version"], r)
        assert (fn in out) == bool(affected), fn
    pip = {fn: r for fn, r in noarch.items() if r["name"] == "pip"}
    old = [fn for fn, r in pip.items() if version_key(r["version"]) < version_key("23.3")]
    assert old and all(fn in out for fn in old)
    assert all(fn not in out for fn in set(pip) - set(old))
    assert {out[fn].reason for fn in old if version_key(pip[fn]["version"]) >= version_key("21.1")} == {
        "affected by CVE-2023-5752 (PYSEC-2023-228), score 3.3 low, fixed in 23.3"}

    # the ignore list takes OSV ids and aliases alike
    ignoring = policy({"kind": "cve", "ignore": ["CVE-2023-5752", "PYSEC-2021-437"]}).compile(cves=cves)
    assert ignoring.exclusions("noarch", pip) == {}

    # scores: only advisories with a CVSS vector have one; unscored ones count only when asked
    scored = policy({"kind": "cve", "min_score": 3.0}).compile(cves=cves).exclusions("noarch", noarch)
    assert set(scored) == set(old)  # CVE-2023-5752 (3.3) is the only scored advisory of these records
    assert policy({"kind": "cve", "min_score": 3.5}).compile(cves=cves).exclusions("noarch", noarch) == {}
    assert set(policy({"kind": "cve", "min_severity": "low"}).compile(cves=cves).exclusions("noarch", noarch)) == \
        set(old)
    strict = policy({"kind": "cve", "min_score": 7.0, "unscored": "exclude"}).compile(cves=cves)
    assert set(strict.exclusions("noarch", noarch)) == set(out) - set(old) | {
        fn for fn in old if version_key(noarch[fn]["version"]) < version_key("21.1")}


def test_cve_rule_only_fixed(cves) -> None:
    # PYSEC-2022-43059 (aiohttp, score 5.5) has no fixed version: only_fixed leaves it out
    rec = {"name": "aiohttp", "version": "3.9.3", "build": "py_0", "noarch": "python", "depends": ["python"]}
    assert any(f.advisory.id == "PYSEC-2022-43059" and f.fixed is None for f in cves.affecting("aiohttp", "3.9.3", rec))
    any_cve = policy({"kind": "cve"}).compile(cves=cves).exclusions("noarch", {"x.conda": rec})
    assert "x.conda" in any_cve
    fixed_only = policy({"kind": "cve", "only_fixed": True}).compile(cves=cves).exclusions("noarch", {"x.conda": rec})
    assert fixed_only == {}


def test_keep_newest_per_name_and_the_same_answer_per_group(linux) -> None:
    c = policy({"kind": "name", "exclude": ["ca-certificates"]}, {"kind": "keep_newest", "count": 2}).compile()
    whole = c.exclusions("linux-64", linux)
    groups: dict[str, dict] = defaultdict(dict)
    for fn, r in linux.items():
        groups[r["name"]][fn] = r
    per_name = {}
    for recs in groups.values():
        per_name.update(c.exclusions("linux-64", recs))
    assert per_name == whole
    for name, recs in groups.items():
        if name == "ca-certificates":
            continue
        kept_versions = {r["version"] for fn, r in recs.items() if fn not in whole}
        newest = sorted({r["version"] for r in recs.values()}, key=version_key, reverse=True)[:2]
        assert kept_versions == set(newest), name
    assert any(v.rule == "keep_newest" and "2 newest" in v.reason for v in whole.values())


def test_a_policy_with_every_rule_kind_reports_one_reason_per_record(linux, cves) -> None:
    p = policy({"kind": "subdir", "allow": ["linux-64", "noarch"]},
               {"kind": "name", "exclude": ["*-devel"]},
               {"kind": "age", "min_days": 30},
               {"kind": "version", "deny": ["python <3.9.10"]},
               {"kind": "license", "deny_families": ["AGPL"], "unknown": "deny"},
               {"kind": "cve", "min_severity": "high"},
               {"kind": "keep_newest", "count": 3})
    assert {r["kind"] for r in p.rules} == set(KINDS) - {"signature"}
    out = p.compile(cves=cves, now=ts("2024-06-01")).exclusions("linux-64", linux)
    counts = summarize(out.values())
    assert set(counts) >= {"version", "license", "keep_newest"}
    assert sum(counts.values()) == len(out) < len(linux)
    assert all(isinstance(v, Verdict) and v.rule in KINDS and v.reason for v in out.values())


def test_fingerprint_follows_policy_version_cve_data_and_cooldown_hour(cves) -> None:
    p = policy({"kind": "cve", "min_score": 5})
    a = p.compile(cves=cves)
    assert a.fingerprint == p.compile(cves=cves).fingerprint
    fewer = CveIndex(list(cves.advisories.values())[:-1])
    assert p.compile(cves=fewer).fingerprint != a.fingerprint
    assert Policy(p.name, p.rules, version=2).compile(cves=cves).fingerprint != a.fingerprint
    cool = policy({"kind": "age", "min_days": 1})
    assert cool.compile(now=ts("2024-05-01")).fingerprint == cool.compile(now=ts("2024-05-01") + 60).fingerprint
    assert cool.compile(now=ts("2024-05-01")).fingerprint != cool.compile(now=ts("2024-05-01") + 3600).fingerprint


@pytest.mark.parametrize("rule, message", [
    ({"kind": "nope"}, "unknown kind"),
    ({"kind": "name"}, "give 'include' and/or 'exclude'"),
    ({"kind": "name", "exclude": ["x"], "typo": 1}, "unknown field"),
    ({"kind": "subdir", "allow": ["linux-65"]}, "subdir"),
    ({"kind": "version", "deny": ["numpy >=>1"]}, "not a conda MatchSpec"),
    ({"kind": "version", "syntax": "pep440", "deny": ["numpy>=>1"]}, "not a PEP 440 requirement"),
    ({"kind": "license", "allow": ["Not A License"]}, "not an SPDX license"),
    ({"kind": "license", "deny_families": ["GPL9"]}, "unknown license family"),
    ({"kind": "cve", "min_score": 11}, "0 to 10"),
    ({"kind": "cve", "min_severity": "huge"}, "min_severity"),
    ({"kind": "age", "not_before": "yesterday"}, "date"),
    ({"kind": "keep_newest", "count": 0}, "count"),
])
def test_invalid_rules_are_refused_with_a_clear_message(rule: dict, message: str) -> None:
    with pytest.raises(BadRequest) as e:
        policy(rule)
    assert message in e.value.message


def test_preview_reports_what_becomes_uninstallable_on_the_real_graph(linux, noarch) -> None:
    from proxy.policies import _preview

    records = {"linux-64": linux, "noarch": noarch}
    report = _preview(policy({"kind": "name", "exclude": ["libffi"]}).compile(), records, {"channel": "x"}, 100_000)
    libffi = {fn for fn, r in linux.items() if r["name"] == "libffi"}
    assert report["excluded"] == len(libffi) and report["by_rule"] == {"name": len(libffi)}
    assert report["passed"] == len(linux) + len(noarch) - len(libffi)
    broken = {(u["subdir"], u["name"]) for u in report["uninstallable"]}
    # every CPython needs libffi, and everything that needs python goes with it (pip is noarch: python)
    assert ("linux-64", "python") in broken and ("noarch", "pip") in broken
    assert all(("linux-64", fn) not in {(u["subdir"], u["filename"]) for u in report["uninstallable"]}
               for fn in libffi)
    assert any("python" in s or "libffi" in s for u in report["uninstallable"] for s in u["failing"])
    assert report["uninstallable_count"] == len(report["uninstallable"])
    # nothing removed: nothing newly uninstallable
    clean = _preview(policy({"kind": "name", "exclude": ["no-such-package"]}).compile(), records, {}, 10)
    assert clean["excluded"] == 0 and clean["uninstallable_count"] == 0
