"""Policies and CVEs through a real server: applying a policy republishes what clients see, the
mirror override and conflict rules, previews of channels and upstream URLs, CVE import and views."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from builders import SHARED_DATA, build_conda_package
from conftest import Api, Server
from upstream import UpstreamChannel

from conda_platform_plugin.cves import read_path


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """These tests run on SQLite and on PostgreSQL."""
    s = Server(tmp_path / "data", database_url).start()
    yield s
    s.stop()


GPL_POLICY = {"name": "no-gpl3", "description": "no GPLv3 in production",
              "rules": [{"kind": "license", "deny_families": ["GPL3"]}]}


def names(server: Server, channel: str, subdir: str = "noarch") -> set[str]:
    r = requests.get(f"{server.url}/api/repo/{channel}/{subdir}/repodata.json", timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    return {fn for section in ("packages", "packages.conda") for fn in doc.get(section, {})}


@pytest.fixture
def team(api: Api, tmp_path: Path) -> Api:
    """Channel 'team' with a MIT package, a GPL-3 one, an app that needs the GPL-3 one, and pip."""
    api.post("/api/channels", 201, json={"name": "team"})
    out = tmp_path / "pkgs"
    pkgs = [
        build_conda_package(out, "good", "1.0", license="MIT"),
        build_conda_package(out, "gpl", "1.0", license="GPL-3.0-only"),
        build_conda_package(out, "app", "1.0", license="BSD 3-Clause", depends=["gpl >=1"]),
        build_conda_package(out, "pip", "23.2.1", "pyhd8ed1ab_0", license="MIT", noarch="python",
                            depends=["python >=3.7"]),
        build_conda_package(out, "pip", "24.0", "pyhd8ed1ab_0", license="MIT", noarch="python",
                            depends=["python >=3.7"]),
    ]
    api.upload("team", *pkgs)
    return api


def test_applying_a_policy_republishes_the_channel_filtered(server: Server, team: Api) -> None:
    api = team
    before = names(server, "team")
    assert "gpl-1.0-0.conda" in before
    gen0 = api.get("/api/channels/team").json()["published_generation"]
    api.post("/api/policies", 201, json=GPL_POLICY)
    applied = api.post("/api/policies/no-gpl3/apply", json={"channel": "team"}).json()
    assert applied["changed"] and applied["generation"] == gen0 + 1
    assert api.get("/api/channels/team").json()["published_generation"] == gen0 + 1
    assert names(server, "team") == before - {"gpl-1.0-0.conda"}
    assert api.get("/api/channels/team/policy").json()["name"] == "no-gpl3"
    # the files are still stored and listed; only what clients are offered changes
    assert api.get("/api/channels/team/files", params={"name": "gpl"}).json()["total"] == 1

    # an edit is a new version and republishes with it
    edited = api.request("PATCH", "/api/policies/no-gpl3",
                         json={"rules": [*GPL_POLICY["rules"], {"kind": "name", "exclude": ["pip"]}]}).json()
    assert edited["version"] == 2 and edited["channels"] == ["team"]
    assert names(server, "team") == before - {"gpl-1.0-0.conda", "pip-23.2.1-pyhd8ed1ab_0.conda",
                                              "pip-24.0-pyhd8ed1ab_0.conda"}
    shown = api.get("/api/policies/no-gpl3").json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert [r["kind"] for r in shown["versions"][0]["rules"]] == ["license"]
    assert shown["versions"][0]["rules"][0]["deny_families"] == ["GPL3"]  # stored normalised, defaults filled

    # a policy in use cannot be deleted; detaching publishes everything again
    err = api.request("DELETE", "/api/policies/no-gpl3", expect=409).json()["error"]
    assert "applied to team" in err["message"]
    api.post("/api/policies/no-gpl3/detach", json={"channel": "team"})
    assert names(server, "team") == before
    api.post("/api/policies/no-gpl3/detach", 409, json={"channel": "team"})
    api.request("DELETE", "/api/policies/no-gpl3")
    api.get("/api/policies/no-gpl3", 404)


def test_a_filtered_channel_installs_with_a_real_client(server: Server, team: Api, tmp_path: Path) -> None:
    """py-rattler solves against the published indexes: the excluded package is gone for it too."""
    import asyncio

    import rattler
    from rattler import Gateway

    api = team
    api.post("/api/policies", 201, json=GPL_POLICY)
    api.post("/api/policies/no-gpl3/apply", json={"channel": "team"})

    async def try_solve(spec: str) -> list[str]:
        gateway = Gateway(cache_dir=tmp_path / f"cache-{spec}")
        records = await rattler.solve([f"{server.url}/api/repo/team"], [spec], gateway=gateway,
                                      platforms=["linux-64", "noarch"])
        return sorted(r.name.normalized for r in records)

    assert asyncio.run(try_solve("good")) == ["good"]
    with pytest.raises(Exception, match="gpl"):
        asyncio.run(try_solve("app"))


def test_bad_policies_and_targets_leave_nothing_behind(team: Api) -> None:
    api = team
    err = api.post("/api/policies", 400, json={"name": "x", "rules": [{"kind": "cve", "min_score": 12}]}).json()
    assert "0 to 10" in err["error"]["message"]
    api.get("/api/policies/x", 404)
    api.post("/api/policies", 201, json=GPL_POLICY)
    api.post("/api/policies", 409, json=GPL_POLICY)
    api.post("/api/policies/no-gpl3/apply", 404, json={"channel": "nope"})
    api.post("/api/policies/missing/apply", 404, json={"channel": "team"})
    api.post("/api/policies/no-gpl3/apply", 400, json={})
    gen = api.get("/api/channels/team").json()["generation"]
    api.post("/api/policies/no-gpl3/apply", json={"channel": "team"})
    again = api.post("/api/policies/no-gpl3/apply", json={"channel": "team"}).json()
    assert not again["changed"] and api.get("/api/channels/team").json()["generation"] == gen + 1


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamChannel]:
    up = UpstreamChannel(tmp_path / "up")
    up.add("liba", "1.0", license="MIT")
    up.add("liba", "2.0", license="GPL-3.0-or-later")
    up.add("appb", "1.0", subdir="linux-64", depends=["liba >=2"], license="MIT")
    up.add("appc", "1.0", subdir="linux-64", depends=["liba"], license="MIT")
    up.index()
    up.start()
    yield up
    up.stop()


def wait_run(api: Api, path: str) -> dict:
    import time

    deadline = time.monotonic() + 60
    while True:
        m = api.get(path).json()
        run = m["current_run"] or m["last_run"]
        if run and run["status"] in ("completed", "failed", "stopped"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def test_mirror_policy_overrides_the_channel_policy_and_conflicts_are_409(server: Server, api: Api,
                                                                          upstream: UpstreamChannel) -> None:
    api.post("/api/channels", 201, json={"name": "mirrored"})
    api.post("/api/policies", 201, json=GPL_POLICY)
    api.post("/api/policies", 201, json={"name": "newest-only", "rules": [{"kind": "keep_newest", "count": 1}]})
    api.post("/api/policies/no-gpl3/apply", json={"channel": "mirrored"})
    base = "/api/channels/mirrored/mirrors"

    # the channel's own policy cannot also be the mirror's: 409, and no mirror is left behind
    err = api.post(base, 409, json={"name": "up", "source_url": upstream.url, "policy": "no-gpl3"}).json()["error"]
    assert "already applied to channel 'mirrored'" in err["message"]
    api.get(f"{base}/up", 404)

    # without its own policy, a mirror follows its channel's
    m = api.post(base, 201, json={"name": "up", "source_url": upstream.url, "run_now": True}).json()
    assert (m["policy"], m["effective_policy"], m["policy_from"]) == (None, "no-gpl3", "channel")
    run = wait_run(api, f"{base}/up")
    assert run["status"] == "completed" and run["figures"]["filtered_by_rule"] == {"license": 1}, run
    assert "liba-2.0-0.conda" not in names(server, "mirrored")
    details = api.get(f"{base}/up").json()
    assert details["packages"]["filtered_by_rule"] == {"license": 1}

    # its own policy overrides the channel's on the next run
    api.post("/api/policies/no-gpl3/apply", 409, json={"channel": "mirrored", "mirror": "up"})
    m = api.request("PATCH", f"{base}/up", json={"policy": "newest-only", "run_now": True}).json()
    assert (m["policy"], m["effective_policy"], m["policy_from"]) == ("newest-only", "newest-only", "mirror")
    run = wait_run(api, f"{base}/up")
    assert run["figures"]["filtered_by_rule"] == {"keep_newest": 1}, run
    published = names(server, "mirrored")
    assert "liba-2.0-0.conda" in published and "liba-1.0-0.conda" not in published

    # detached: back to the channel's
    api.post("/api/policies/newest-only/detach", json={"channel": "mirrored", "mirror": "up"})
    m = api.get(f"{base}/up").json()
    assert (m["policy"], m["effective_policy"]) == (None, "no-gpl3")


def test_preview_of_a_channel_and_of_an_upstream_url_changes_nothing(server: Server, team: Api,
                                                                     upstream: UpstreamChannel) -> None:
    api = team
    api.post("/api/policies", 201, json=GPL_POLICY)
    gen = api.get("/api/channels/team").json()["generation"]
    r = api.post("/api/policies/no-gpl3/preview", json={"channel": "team"}).json()
    assert (r["records"], r["excluded"], r["by_rule"]) == (5, 1, {"license": 1})
    assert r["excluded_records"][0]["filename"] == "gpl-1.0-0.conda"
    assert "GPL-3.0-only" in r["excluded_records"][0]["reason"]
    assert [(u["filename"], u["failing"]) for u in r["uninstallable"]] == [("app-1.0-0.conda", ["gpl >=1"])]
    assert api.get("/api/channels/team").json()["generation"] == gen
    assert names(server, "team") >= {"gpl-1.0-0.conda"}

    # a draft edit, previewed before it is saved
    draft = api.post("/api/policies/no-gpl3/preview",
                     json={"channel": "team", "rules": [{"kind": "name", "exclude": ["good"]}]}).json()
    assert draft["by_rule"] == {"name": 1} and draft["uninstallable_count"] == 0
    assert api.get("/api/policies/no-gpl3").json()["version"] == 1

    up = api.post("/api/policies/no-gpl3/preview", json={"url": upstream.url}).json()
    assert up["source"] == {"url": upstream.url} and up["records"] == 4 and up["by_rule"] == {"license": 1}
    assert [u["filename"] for u in up["uninstallable"]] == ["appb-1.0-0.conda"]  # appc still has liba 1.0
    api.post("/api/policies/no-gpl3/preview", 400, json={"channel": "team", "url": upstream.url})


def test_cve_import_is_idempotent_and_feeds_the_artifact_view(server: Server, team: Api) -> None:
    api = team
    records = [d for _, d in read_path(SHARED_DATA / "osv" / "pysec")]
    first = api.post("/api/cves", json={"records": records}).json()
    assert (first["created"], first["updated"], first["unchanged"]) == (133, 0, 0)
    again = api.post("/api/cves", json={"records": records}).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 133)
    changed = dict(next(d for d in records if d["id"] == "PYSEC-2023-228"), summary="pip may pass extra options")
    assert api.post("/api/cves", json={"records": [changed]}).json()["updated"] == 1
    bad = api.post("/api/cves", 400, json={"records": [records[0], {"id": "X-1", "affected": []}]}).json()
    assert "record 2" in bad["error"]["message"]

    shown = api.get("/api/cves/CVE-2023-5752").json()  # by alias
    assert shown["id"] == "PYSEC-2023-228" and shown["summary"] == "pip may pass extra options"
    assert shown["score"] == 3.3 and shown["cvss"][0]["vector"].startswith("CVSS:3")
    listed = api.get("/api/cves", params={"package": "pip"}).json()
    assert listed["total"] == 7 and all(c["packages"] == [{"ecosystem": "PyPI", "name": "pip"}]
                                        for c in listed["items"])
    high = api.get("/api/cves", params={"min_score": 7}).json()
    assert high["total"] == 6 and {c["severity"] for c in high["items"]} == {"high"}

    for base in ("/api/channels/team", "/api/channels/team/subchannels/sub"):
        if base.endswith("sub"):
            api.post("/api/channels/team/subchannels", 201, json={"name": "sub"})
            src = api.get("/api/channels/team/files", params={"name": "pip"}).json()["items"]
            api.post("/api/channels/team/files/copy",
                     json={"files": [f"{f['subdir']}/{f['filename']}" for f in src], "target": "team/sub"})
        view = api.get(f"{base}/artifacts/conda/pip/cves").json()
        assert view["ecosystem"] == "PyPI" and view["total"] == 7 and view["affecting"] == 1
        c = view["cves"][0]
        assert (c["id"], c["cve"], c["affects_artifact"], c["fixed_versions"]) == (
            "PYSEC-2023-228", "CVE-2023-5752", True, ["23.3"])
        assert [f["filename"] for f in c["affected_files"]] == ["pip-23.2.1-pyhd8ed1ab_0.conda"]
        files = {f["version"]: f["cves"] for f in view["files"]}
        assert files == {"23.2.1": ["PYSEC-2023-228"], "24.0": []}
    # a package no advisory names
    assert api.get("/api/channels/team/artifacts/conda/good/cves").json()["total"] == 0


def test_cve_rules_follow_imports(server: Server, team: Api) -> None:
    api = team
    api.post("/api/policies", 201, json={"name": "no-cves", "rules": [{"kind": "cve", "only_fixed": True}]})
    api.post("/api/policies/no-cves/apply", json={"channel": "team"})
    assert "pip-23.2.1-pyhd8ed1ab_0.conda" in names(server, "team")  # no CVE data yet
    pip = [d for _, d in read_path(SHARED_DATA / "osv" / "pysec" / "pip")]
    api.post("/api/cves", json={"records": pip})  # new advisories: the channel publishes again
    assert "pip-23.2.1-pyhd8ed1ab_0.conda" not in names(server, "team")
    assert "pip-24.0-pyhd8ed1ab_0.conda" in names(server, "team")


def test_license_information_in_responses_and_license_search(team: Api) -> None:
    api = team
    f = api.get("/api/channels/team/files/noarch/app-1.0-0.conda").json()
    assert f["license"] == "BSD 3-Clause"
    assert {k: f["license_info"][k] for k in ("spdx", "family", "osi_approved", "fsf_libre", "known")} == {
        "spdx": "BSD-3-Clause", "family": "BSD", "osi_approved": True, "fsf_libre": True, "known": True}
    a = api.get("/api/channels/team/artifacts/conda/gpl").json()
    assert a["license_info"]["spdx"] == "GPL-3.0-only" and a["license_info"]["family"] == "GPL3"
    found = api.get("/api/channels/team/files", params={"license": "BSD-3-Clause"}).json()
    assert [x["name"] for x in found["items"]] == ["app"]
    found = api.get("/api/channels/team/files", params={"license_family": "MIT"}).json()
    assert sorted({x["name"] for x in found["items"]}) == ["good", "pip"]
    hits = api.get("/api/search", params={"license": "BSD-3-Clause"}).json()["items"]
    assert [h["name"] for h in hits] == ["app"]  # its license is written "BSD 3-Clause"
    hits = api.get("/api/search", params={"license": "GPL-3.0-only"}).json()["items"]
    assert [h["name"] for h in hits] == ["gpl"]


REAL_RULES = [{"kind": "name", "exclude": ["libffi"]}, {"kind": "license", "deny_families": ["GPL3"]},
              {"kind": "age", "not_before": "2019-01-01"}, {"kind": "keep_newest", "count": 5}]


@pytest.fixture
def real_upstream(tmp_path: Path) -> Iterator[tuple[UpstreamChannel, dict]]:
    """The real conda-forge linux-64 and noarch repodata of shared/data, served as an upstream channel."""
    import zstandard

    up = UpstreamChannel(tmp_path / "real")
    records = {}
    for subdir in ("linux-64", "noarch"):
        src = SHARED_DATA / "repodata" / "conda-forge-subchannel-py39" / subdir / "repodata.json.zst"
        raw = zstandard.ZstdDecompressor().stream_reader(src.open("rb")).read()
        (up.root / subdir).mkdir(exist_ok=True)
        (up.root / subdir / "repodata.json").write_bytes(raw)
        import orjson

        doc = orjson.loads(raw)
        records[subdir] = {**doc.get("packages", {}), **doc.get("packages.conda", {})}
    up.start()
    yield up, records
    up.stop()


def test_preview_and_mirror_runs_on_real_conda_forge_repodata(server: Server, api: Api, real_upstream) -> None:
    from conda_platform_plugin.policy import Policy, summarize

    up, records = real_upstream
    policy = Policy.from_json({"name": "real", "rules": REAL_RULES}).compile()
    expected = {s: policy.exclusions(s, recs) for s, recs in records.items()}
    counts = summarize(v for ex in expected.values() for v in ex.values())
    total = sum(len(r) for r in records.values())
    api.post("/api/policies", 201, json={"name": "real", "rules": REAL_RULES})

    r = api.post("/api/policies/real/preview", json={"url": up.url, "subdirs": ["linux-64", "noarch"],
                                                      "limit": 100_000}).json()
    assert (r["records"], r["excluded"], r["by_rule"]) == (total, sum(counts.values()), counts)
    assert {(e["subdir"], e["filename"]) for e in r["excluded_records"]} == {
        (s, fn) for s, ex in expected.items() for fn in ex}
    broken = {(u["subdir"], u["name"]) for u in r["uninstallable"]}
    assert ("linux-64", "python") in broken  # every CPython build needs libffi

    api.post("/api/channels", 201, json={"name": "forge"})
    m = api.post("/api/channels/forge/mirrors", 201,
                 json={"name": "cf", "source_url": up.url, "subdirs": ["linux-64"], "policy": "real",
                       "run_now": True}).json()
    assert m["effective_policy"] == "real"
    run = wait_run(api, "/api/channels/forge/mirrors/cf")
    assert run["status"] == "completed", run
    assert run["figures"]["filtered_by_rule"] == counts
    details = api.get("/api/channels/forge/mirrors/cf").json()["packages"]
    assert (details["seen"], details["filtered"]) == (total, sum(counts.values()))
    published = names(server, "forge", "linux-64") | names(server, "forge", "noarch")
    assert len(published) == total - sum(counts.values())
    assert not published & {fn for ex in expected.values() for fn in ex}
