"""Mirrors: create/edit/delete with validation, passive runs against a real upstream channel, figures,
unchanged upstreams (304), missing subdirs, details and reports."""

from __future__ import annotations

import bz2
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
from builders import build_conda_package
from conftest import Api, Server
from upstream import UpstreamChannel

BASE = "/api/channels/team/mirrors"


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """These tests run on SQLite and on PostgreSQL."""
    s = Server(tmp_path / "data", database_url).start()
    yield s
    s.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamChannel]:
    """noarch: liba 1.0 and 2.0; linux-64: appb (needs liba >=2 and libz, which nobody has)."""
    up = UpstreamChannel(tmp_path / "up")
    up.add("liba", "1.0", files={"share/liba/a.txt": b"one"})
    up.add("liba", "2.0", files={"share/liba/a.txt": b"two"})
    up.add("appb", "1.0", subdir="linux-64", depends=["liba >=2", "libz"], files={"bin/appb": b"#!/bin/sh\n"})
    up.index()
    up.start()
    yield up
    up.stop()


def wait_run(api: Api, mirror: str, *, until: tuple[str, ...] = ("completed", "failed", "stopped"),
             base: str = BASE, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = api.get(f"{base}/{mirror}").json()
        run = m["current_run"] or m["last_run"]
        if run and run["status"] in until:
            return run
        assert time.monotonic() < deadline, f"run did not reach {until}: {run}"
        time.sleep(0.05)


def repodata(server: Server, channel: str, subdir: str) -> dict:
    r = requests.get(f"{server.url}/api/repo/{channel}/{subdir}/repodata.json", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def create(api: Api, upstream_url: str, name: str = "up", expect: int = 201, base: str = BASE, **fields) -> dict:  # noqa: ANN003
    return api.post(base, expect, json={"name": name, "source_url": upstream_url, **fields}).json()


@pytest.fixture
def team(api: Api) -> Api:
    api.post("/api/channels", 201, json={"name": "team"})
    return api


def test_create_validation_and_edit(team: Api, upstream: UpstreamChannel) -> None:
    api = team
    bad = [
        ({"cron": "every day"}, "invalid cron expression 'every day'"),
        ({"cron": "0 0 1 * * *"}, "use 5 fields"),
        ({"cron": "61 0 * * *"}, "invalid cron expression"),
        ({"mode": "eager"}, "'mode' must be one of passive, active"),
        ({"source_url": "ftp://x/y"}, "invalid source URL"),
        ({"source_url": ""}, "'source_url' is required"),
        ({"subdirs": ["linux-65"]}, "unknown conda subdir(s): linux-65"),
        ({"concurrency": 0}, "'concurrency' must be a whole number"),
        ({"name": "Bad Name"}, "invalid mirror name"),
        ({"name": None}, "'name' is required"),
        ({"colour": "red"}, "unknown field(s): colour"),
    ]
    for fields, message in bad:
        body = {"name": "up", "source_url": upstream.url, **fields}
        r = api.post(BASE, 400, json=body)
        assert message in r.json()["error"]["message"], (fields, r.json())
    assert api.get(BASE).json()["total"] == 0  # bad input leaves nothing behind

    m = create(api, upstream.url)
    assert m["mode"] == "passive" and m["cron"] == "0 0 1 * *" and m["subdirs"] is None
    assert m["status"] == "never run" and m["next_run_at"].endswith(("-01T00:00:00Z", "-01T00:00:00+00:00"))
    create(api, upstream.url, expect=409)  # the same name again

    r = api.request("PATCH", f"{BASE}/up", 409, json={"mode": "active"})
    assert "mode" in r.json()["error"]["message"] and "cannot change" in r.json()["error"]["message"]
    api.request("PATCH", f"{BASE}/up", 400, json={"cron": "nope"})
    m = api.request("PATCH", f"{BASE}/up", json={"cron": "*/5 * * * *", "subdirs": ["linux-64"],
                                                  "concurrency": 8}).json()
    assert (m["cron"], m["subdirs"], m["concurrency"]) == ("*/5 * * * *", ["linux-64", "noarch"], 8)
    m = api.request("PATCH", f"{BASE}/up", json={"name": "renamed"}).json()
    assert m["name"] == "renamed"
    api.get(f"{BASE}/up", 404)
    listed = api.get("/api/mirrors").json()
    assert [x["name"] for x in listed["items"]] == ["renamed"] and listed["items"][0]["channel"] == "team"
    api.request("DELETE", f"{BASE}/renamed")
    assert api.get(BASE).json()["total"] == 0


def test_tokens_are_never_shown(team: Api, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/t/sekrit-token-123/api/repo/private"
    m = create(team, url, name="tok")
    assert "sekrit" not in orjson.dumps(m).decode()
    assert m["source_url"] == "http://127.0.0.1:9/t/***/api/repo/private"
    assert "sekrit" not in team.get(f"{BASE}/tok").text and "sekrit" not in team.get(BASE).text
    assert "sekrit" not in team.get("/api/mirrors").text


def test_passive_run_publishes_upstream_records(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    m = create(api, upstream.url, run_now=True)
    assert m["name"] == "up"
    run = wait_run(api, "up")
    assert run["status"] == "completed", run
    assert run["trigger"] == "create" and run["finished_at"]
    fig = run["figures"]
    assert (fig["records_seen"], fig["records_published"], fig["records_filtered"]) == (3, 3, 0)
    assert fig["added"] == 3 and fig["subdirs_missing"] == []
    # discovered by asking for each known subdir: this upstream has no channeldata.json
    assert set(fig["subdirs"]) == {"noarch", "linux-64"}
    assert upstream.hits["channeldata.json"] == 1 and upstream.hits["osx-arm64/repodata.json"] == 1
    noarch = repodata(server, "team", "noarch")
    assert sorted(noarch["packages.conda"]) == ["liba-1.0-0.conda", "liba-2.0-0.conda"]
    up_noarch = orjson.loads((upstream.root / "noarch" / "repodata.json").read_bytes())
    assert noarch["packages.conda"]["liba-2.0-0.conda"]["sha256"] == \
        up_noarch["packages.conda"]["liba-2.0-0.conda"]["sha256"]
    assert "appb-1.0-0.conda" in repodata(server, "team", "linux-64")["packages.conda"]
    # passive: metadata only, no bytes fetched by the run
    assert not [p for p in upstream.hits if p.endswith(".conda")]
    details = api.get(f"{BASE}/up").json()
    assert details["packages"] == {"seen": 3, "published": 3, "filtered": 0, "filtered_by_rule": {},
                                   "filtered_by_reason": []}
    pkgs = api.get(f"{BASE}/up/packages").json()
    assert pkgs["total"] == 3 and {p["stored"] for p in pkgs["items"]} == {"passive"}
    assert api.get(f"{BASE}/up/packages", params={"per_page": 2, "page": 2}).json()["items"][0]["name"] == "liba"
    history = api.get(f"{BASE}/up/runs").json()
    assert history["total"] == 1 and history["items"][0]["figures"]["records_published"] == 3

    # an unchanged upstream: conditional GETs answered 304, no new generation, done quickly
    head = api.get("/api/channels/team").json()["generation"]
    zst_hits = upstream.hits["noarch/repodata.json.zst"]
    t0 = time.monotonic()
    api.post(f"{BASE}/up/run", 202)
    run = wait_run(api, "up")
    assert time.monotonic() - t0 < 3
    assert run["status"] == "completed" and run["generation"] is None
    assert run["figures"]["upstream_unchanged"] is True
    assert run["figures"]["subdirs"]["noarch"]["index"] == "unchanged"
    assert upstream.hits["noarch/repodata.json.zst"] == zst_hits + 1
    assert api.get("/api/channels/team").json()["generation"] == head

    # the upstream changes: one package gone, one new; one new generation with exactly that
    (upstream.root / "noarch" / "liba-1.0-0.conda").unlink()
    upstream.add("libz", "1.0")
    upstream.index()
    api.post(f"{BASE}/up/run", 202)
    run = wait_run(api, "up")
    assert run["status"] == "completed" and run["generation"] == head + 1, run
    assert (run["figures"]["added"], run["figures"]["removed"]) == (1, 1)
    assert sorted(repodata(server, "team", "noarch")["packages.conda"]) == ["liba-2.0-0.conda", "libz-1.0-0.conda"]


def test_records_without_sha256_are_filtered_and_a_missing_subdir_does_not_fail(
        server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    # the upstream's noarch index loses one sha256 (only repodata.json: the .zst goes away)
    path = upstream.root / "noarch" / "repodata.json"
    doc = orjson.loads(path.read_bytes())
    del doc["packages.conda"]["liba-1.0-0.conda"]["sha256"]
    path.write_bytes(orjson.dumps(doc))
    (upstream.root / "noarch" / "repodata.json.zst").unlink()
    create(api, upstream.url, subdirs=["linux-64", "osx-arm64"], run_now=True)
    run = wait_run(api, "up")
    assert run["status"] == "completed", run
    fig = run["figures"]
    assert fig["subdirs_missing"] == ["osx-arm64"] and fig["subdirs"]["osx-arm64"]["index"] == "missing"
    assert (fig["records_seen"], fig["records_published"], fig["records_filtered"]) == (3, 2, 1)
    assert fig["filtered_by_rule"] == {"sha256": 1}
    assert sorted(repodata(server, "team", "noarch")["packages.conda"]) == ["liba-2.0-0.conda"]
    filtered = api.get(f"{BASE}/up/packages", params={"state": "filtered"}).json()
    assert filtered["total"] == 1
    item = filtered["items"][0]
    assert (item["filename"], item["rule"]) == ("liba-1.0-0.conda", "sha256")
    assert "no sha256" in item["reason"]
    details = api.get(f"{BASE}/up").json()["packages"]
    assert details["filtered_by_rule"] == {"sha256": 1} and details["seen"] == 3


def test_dependency_reports(server: Server, team: Api, upstream: UpstreamChannel, tmp_path: Path) -> None:
    api = team
    create(api, upstream.url, run_now=True)
    assert wait_run(api, "up")["status"] == "completed"
    report = api.get(f"{BASE}/up/report").json()
    assert report["mirror"] == "up" and report["satisfied"] is False
    missing = {(m["spec"], m["subdir"]): m["needed_by"] for m in report["missing"]}
    assert missing == {("libz", "linux-64"): ["linux-64/appb-1.0-0.conda"]}
    assert report["dependencies"] == []  # liba is the mirror's own: a root, not a dependency
    r = api.get(f"{BASE}/up/report", params={"format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"] == 'attachment; filename="team-up-dependencies.csv"'
    lines = r.text.splitlines()
    assert lines[0].startswith("status,dependency") and "missing,libz,linux-64,,,linux-64/appb-1.0-0.conda" in lines
    channel = api.get("/api/channels/team/report", params={"format": "json"}).json()
    assert channel["mirror"] is None and channel["missing"] == report["missing"]
    # the team adds what was missing: the mirror's report resolves it in the channel
    api.upload("team", build_conda_package(tmp_path / "pk", "libz", "1.0"))
    report = api.get(f"{BASE}/up/report").json()
    assert report["satisfied"] is True and report["missing"] == []
    assert [(d["name"], d["direct"], d["needed_by"]) for d in report["dependencies"]] == \
        [("libz", True, ["linux-64/appb-1.0-0.conda"])]
    assert api.get("/api/channels/team/report").json()["satisfied"] is True
    api.get("/api/channels/team/report", 400, params={"format": "xml"})


def test_delete_keeps_or_removes_packages(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    create(api, upstream.url, run_now=True)
    assert wait_run(api, "up")["status"] == "completed"
    api.request("DELETE", f"{BASE}/up")
    assert len(repodata(server, "team", "noarch")["packages.conda"]) == 2  # packages stay
    create(api, upstream.url, name="again", run_now=True)
    run = wait_run(api, "again")
    # the kept files are the channel's own now: the new mirror does not take them over
    assert run["figures"]["filtered_by_rule"] == {"conflict": 3}, run
    api.request("DELETE", "/api/channels/team/files/noarch/liba-1.0-0.conda")
    api.request("DELETE", f"{BASE}/again", params={"remove_packages": "true"})
    api.post("/api/channels", 201, json={"name": "fresh"})
    create(api, upstream.url, name="m", base="/api/channels/fresh/mirrors", run_now=True)
    assert wait_run(api, "m", base="/api/channels/fresh/mirrors")["status"] == "completed"
    gen = api.get("/api/channels/fresh").json()["generation"]
    out = api.request("DELETE", "/api/channels/fresh/mirrors/m", params={"remove_packages": "true"}).json()
    assert out["packages_removed"] == 3
    assert api.get("/api/channels/fresh").json()["published_generation"] == gen + 1
    assert repodata(server, "fresh", "noarch")["packages.conda"] == {}


def test_subchannel_mirrors(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    api.post("/api/channels/team/subchannels", 201, json={"name": "sub"})
    base = "/api/channels/team/subchannels/sub/mirrors"
    create(api, upstream.url, base=base, subdirs=[], run_now=True)
    assert wait_run(api, "up", base=base)["status"] == "completed"
    assert sorted(repodata(server, "team/sub", "noarch")["packages.conda"]) == ["liba-1.0-0.conda",
                                                                                "liba-2.0-0.conda"]
    assert api.get(BASE).json()["total"] == 0
    assert [m["channel"] for m in api.get("/api/mirrors").json()["items"]] == ["team/sub"]


def test_bz2_index_base_url_and_both_package_formats(server: Server, team: Api, tmp_path: Path) -> None:
    """An upstream with only repodata.json.bz2, whose CEP-15 base_url puts the files elsewhere, and
    with .tar.bz2 ("packages") beside .conda ("packages.conda") records."""
    up = UpstreamChannel(tmp_path / "up")
    up.add("old", "1.0", fmt=".tar.bz2")
    up.add("new", "1.0")
    up.index()
    noarch = up.root / "noarch"
    doc = orjson.loads((noarch / "repodata.json").read_bytes())
    doc.setdefault("info", {})["base_url"] = "../files"  # relative to the index: <channel>/files/
    (up.root / "files").mkdir()
    for p in list(noarch.glob("*.tar.bz2")) + list(noarch.glob("*.conda")):
        p.rename(up.root / "files" / p.name)
    (noarch / "repodata.json.bz2").write_bytes(bz2.compress(orjson.dumps(doc)))
    for name in ("repodata.json", "repodata.json.zst"):
        (noarch / name).unlink()
    up.start()
    try:
        create(team, up.url, subdirs=[], mode="active", run_now=True)
        run = wait_run(team, "up")
        assert run["status"] == "completed", run
        assert run["figures"]["records_published"] == 2 and run["figures"]["files_done"] == 2
        assert up.hits["noarch/repodata.json.zst"] == up.hits["noarch/repodata.json"] == 1  # 404s, then .bz2
        assert up.hits["files/old-1.0-0.tar.bz2"] == up.hits["files/new-1.0-0.conda"] == 1
        served = repodata(server, "team", "noarch")
        assert list(served["packages"]) == ["old-1.0-0.tar.bz2"] and list(served["packages.conda"]) == ["new-1.0-0.conda"]
        r = requests.get(f"{server.url}/api/repo/team/noarch/old-1.0-0.tar.bz2", timeout=30)
        assert r.content == (up.root / "files" / "old-1.0-0.tar.bz2").read_bytes()
    finally:
        up.stop()


def test_all_mirrors_lists_what_the_caller_manages(server: Server, team: Api) -> None:
    api = team
    api.post("/api/channels", 201, json={"name": "other"})
    create(api, "http://127.0.0.1:9/a", name="m1")
    create(api, "http://127.0.0.1:9/b", name="m2", base="/api/channels/other/mirrors")
    tokens = {}
    for user, grant in (("boss", "channel.manage:team"), ("reader", "channel.read:team"),
                        ("watcher", "mirrors.channel.read")):
        api.post("/api/users", 201, json={"name": user})
        api.post(f"/api/users/{user}/grants", json={"permission": grant})
        tokens[user] = api.post("/api/tokens", 201, json={"user": user}).json()["token"]

    def names(user: str) -> list[str]:
        return [f"{m['channel']}/{m['name']}" for m in Api(server, token=tokens[user]).get("/api/mirrors").json()["items"]]

    assert [f"{m['channel']}/{m['name']}" for m in api.get("/api/mirrors").json()["items"]] == ["other/m2", "team/m1"]
    assert names("boss") == ["team/m1"]
    assert names("reader") == []
    assert names("watcher") == ["other/m2", "team/m1"]
    Api(server, token=None).get("/api/mirrors", 401)
    Api(server, token=tokens["reader"]).post(BASE, 403, json={"name": "x", "source_url": "http://127.0.0.1:9/c"})


def test_policy_step_filters_with_reasons_and_a_new_policy_rewrites(server: Server, team: Api,
                                                                     upstream: UpstreamChannel) -> None:
    """The run's policy step with a real compiled policy, handed to the engine through the one seam
    stored policies come through (PolicyService.mirror_policy), so the test can swap it between runs."""
    from conda_platform_plugin.policy import Policy

    current = {"policy": Policy.from_json({"name": "p", "rules": [
        {"kind": "name", "exclude": ["appb"]}, {"kind": "keep_newest", "count": 1}]}).compile()}

    async def mirror_policy(_mirror):  # noqa: ANN001, ANN202
        return current["policy"]

    server.platform.policy.mirror_policy = mirror_policy
    create(team, upstream.url, run_now=True)
    run = wait_run(team, "up")
    assert run["status"] == "completed", run
    fig = run["figures"]
    assert (fig["records_seen"], fig["records_published"], fig["records_filtered"]) == (3, 1, 2)
    assert fig["filtered_by_rule"] == {"name": 1, "keep_newest": 1}
    assert list(repodata(server, "team", "noarch")["packages.conda"]) == ["liba-2.0-0.conda"]
    assert requests.get(f"{server.url}/api/repo/team/linux-64/repodata.json", timeout=30).status_code == 404
    filtered = {f["filename"]: f for f in team.get(f"{BASE}/up/packages", params={"state": "filtered"}).json()["items"]}
    assert set(filtered) == {"appb-1.0-0.conda", "liba-1.0-0.conda"}
    assert filtered["appb-1.0-0.conda"]["rule"] == "name" and filtered["appb-1.0-0.conda"]["reason"]
    details = team.get(f"{BASE}/up").json()["packages"]
    assert details["filtered_by_rule"] == {"name": 1, "keep_newest": 1}
    assert sorted(c["rule"] for c in details["filtered_by_reason"]) == ["keep_newest", "name"]

    # the upstream is unchanged, the policy is not: the run writes again (no 'unchanged' shortcut)
    current["policy"] = Policy.from_json({"name": "p", "version": 2, "rules": []}).compile()
    team.post(f"{BASE}/up/run", 202)
    run = wait_run(team, "up")
    assert "upstream_unchanged" not in run["figures"] and run["figures"]["added"] == 2, run
    assert team.get(f"{BASE}/up/packages", params={"state": "filtered"}).json()["total"] == 0
    assert sorted(repodata(server, "team", "noarch")["packages.conda"]) == ["liba-1.0-0.conda", "liba-2.0-0.conda"]


def test_a_new_source_url_moves_where_bytes_come_from(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    create(team, upstream.url, subdirs=[], run_now=True)
    assert wait_run(team, "up")["status"] == "completed"
    moved = UpstreamChannel(upstream.root, prefix="/conda/moved").start()  # the same channel, elsewhere
    try:
        team.request("PATCH", f"{BASE}/up", json={"source_url": moved.url})
        team.post(f"{BASE}/up/run", 202)
        run = wait_run(team, "up")
        assert (run["figures"]["added"], run["figures"]["removed"]) == (2, 2), run  # same records, new URLs
        r = requests.get(f"{server.url}/api/repo/team/noarch/liba-2.0-0.conda", timeout=30)
        assert r.status_code == 200 and r.content == (upstream.root / "noarch" / "liba-2.0-0.conda").read_bytes()
        assert moved.hits["noarch/liba-2.0-0.conda"] == 1 and upstream.hits["noarch/liba-2.0-0.conda"] == 0
    finally:
        moved.stop()


def test_a_signature_policy_keeps_what_the_upstream_signed(server: Server, team: Api,
                                                            upstream: UpstreamChannel) -> None:
    """An upstream whose repodata carries content-trust signatures (made with our trust module, as
    conda-content-trust makes them), mirrored under a policy that requires valid signed metadata."""
    import json
    from datetime import datetime, timedelta, timezone

    import zstandard

    from conda_platform_plugin import trust

    key_mgr_key, pkg_key = trust.new_private_key(), trust.new_private_key()
    now = datetime.now(timezone.utc)
    key_mgr = trust.sign_signable(trust.delegating_metadata(
        "key_mgr", {"pkg_mgr": ([trust.public_key(pkg_key)], 1)}, version=1, now=now, lifetime=timedelta(days=30)),
        key_mgr_key)
    path = upstream.root / "noarch" / "repodata.json"
    doc = json.loads(path.read_text())
    records = doc["packages.conda"]
    doc["signatures"] = {
        "liba-2.0-0.conda": trust.sign_record(records["liba-2.0-0.conda"], pkg_key),
        # signed by a key key_mgr does not delegate to
        "liba-1.0-0.conda": trust.sign_record(records["liba-1.0-0.conda"], trust.new_private_key()),
    }
    path.write_text(json.dumps(doc))
    (upstream.root / "noarch" / "repodata.json.zst").write_bytes(zstandard.compress(path.read_bytes()))

    team.post("/api/policies", 201, json={"name": "signed", "rules": [{"kind": "signature", "key_mgr": key_mgr}]})
    create(team, upstream.url, subdirs=[], policy="signed", run_now=True)
    run = wait_run(team, "up")
    assert run["status"] == "completed", run
    assert run["figures"]["filtered_by_rule"] == {"signature": 1}
    assert list(repodata(server, "team", "noarch")["packages.conda"]) == ["liba-2.0-0.conda"]
    filtered = team.get(f"{BASE}/up/packages", params={"state": "filtered"}).json()["items"]
    assert [(f["filename"], f["rule"]) for f in filtered] == [("liba-1.0-0.conda", "signature")]
    assert "not valid" in filtered[0]["reason"]
