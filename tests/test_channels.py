"""Channels and subchannels through the REST API: CRUD, names, conflicts, delete, freeze."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import build_conda_package
from conftest import Api


def assert_envelope(r, status: int, code: str | None = None) -> dict:  # noqa: ANN001 - a Response
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "detail"}, err
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["detail"], dict)
    if code is not None:
        assert err["code"] == code, err
    return err


def create(api: Api, name: str, expect: int = 201, **fields) -> dict:  # noqa: ANN003
    return api.post("/api/channels", expect=expect, json={"name": name, **fields}).json()


# -- create, list, show, update ------------------------------------------------------------------
def test_create_show_list_update_channel(api: Api) -> None:
    body = create(api, "team", description="the team's channel")
    assert body["name"] == "team"
    assert body["parent"] is None
    assert body["description"] == "the team's channel"
    assert body["private"] is False
    assert body["frozen"] is False
    assert body["subchannels"] == []
    assert body["url"] == "/api/repo/team"
    assert isinstance(body["generation"], int)
    assert body["published_generation"] == body["generation"]

    shown = api.get("/api/channels/team").json()
    assert {k: shown[k] for k in ("name", "description", "private", "frozen", "subchannels")} == {
        "name": "team", "description": "the team's channel", "private": False, "frozen": False, "subchannels": [],
    }

    create(api, "alpha")
    create(api, "zeta", private=True)
    listing = api.get("/api/channels").json()
    assert listing["total"] == 3
    assert [c["name"] for c in listing["items"]] == ["alpha", "team", "zeta"]
    assert listing["page"] == 1 and listing["per_page"] == 50
    page2 = api.get("/api/channels", params={"page": 2, "per_page": 2}).json()
    assert [c["name"] for c in page2["items"]] == ["zeta"]
    assert page2["total"] == 3

    updated = api.request("PATCH", "/api/channels/team", json={"description": "new words", "private": True}).json()
    assert updated["description"] == "new words"
    assert updated["private"] is True
    shown = api.get("/api/channels/team").json()
    assert shown["description"] == "new words" and shown["private"] is True
    # only description and private may change
    r = api.request("PATCH", "/api/channels/team", expect=400, json={"name": "other"})
    assert_envelope(r, 400, "bad_request")
    r = api.request("PATCH", "/api/channels/team", expect=400, json={"private": "maybe"})
    assert_envelope(r, 400)
    r = api.request("PATCH", "/api/channels/nope", expect=404, json={"description": "x"})
    assert_envelope(r, 404, "not_found")


def test_subchannels_crud(api: Api) -> None:
    create(api, "team")
    sub = api.post("/api/channels/team/subchannels", expect=201, json={"name": "dev", "description": "d"}).json()
    assert sub["name"] == "team/dev"
    assert sub["parent"] == "team"
    assert sub["url"] == "/api/repo/team/dev"
    # CH/SUB as a name on the top-level route creates a subchannel too
    create(api, "team/staging")

    shown = api.get("/api/channels/team/subchannels/dev").json()
    assert shown["name"] == "team/dev" and shown["description"] == "d" and shown["parent"] == "team"
    assert api.get("/api/channels/team").json()["subchannels"] == ["dev", "staging"]
    subs = api.get("/api/channels/team/subchannels").json()
    assert [s["name"] for s in subs["items"]] == ["team/dev", "team/staging"]
    assert subs["total"] == 2
    # the top-level listing holds top-level channels only
    assert [c["name"] for c in api.get("/api/channels").json()["items"]] == ["team"]

    upd = api.request("PATCH", "/api/channels/team/subchannels/dev", json={"description": "changed"}).json()
    assert upd["description"] == "changed"
    assert api.get("/api/channels/team/subchannels/dev").json()["description"] == "changed"
    assert api.get("/api/channels/team").json()["description"] == ""

    assert api.request("DELETE", "/api/channels/team/subchannels/dev").json() == {"deleted": "team/dev"}
    assert_envelope(api.get("/api/channels/team/subchannels/dev", expect=404), 404, "not_found")
    assert api.get("/api/channels/team").json()["subchannels"] == ["staging"]
    # the parent and its other subchannel are untouched
    api.get("/api/channels/team/subchannels/staging")


def test_subchannel_needs_existing_parent(api: Api) -> None:
    assert_envelope(api.post("/api/channels/ghost/subchannels", expect=404, json={"name": "dev"}), 404)
    assert_envelope(api.post("/api/channels", expect=404, json={"name": "ghost/dev"}), 404)
    assert api.get("/api/channels").json()["total"] == 0


# -- names -----------------------------------------------------------------------------------
BAD_CHANNEL_NAMES = ["Team", "UPPER", "..", ".hidden", "-dash", "a b", "a%2fb", "", "x" * 65, "t", "api",
                     "noarch", "linux-64", "emoji\u00e9"]


@pytest.mark.parametrize("name", BAD_CHANNEL_NAMES)
def test_bad_channel_names(api: Api, name: str) -> None:
    err = assert_envelope(api.post("/api/channels", expect=400, json={"name": name}), 400, "bad_request")
    assert "name" in err["message"] or "channel" in err["message"]
    assert api.get("/api/channels").json()["total"] == 0


@pytest.mark.parametrize("name", ["noarch", "linux-64", "osx-arm64", "win-64", "Dev", "..", "a/b", "shards"])
def test_bad_subchannel_names(api: Api, name: str) -> None:
    create(api, "team")
    assert_envelope(api.post("/api/channels/team/subchannels", expect=400, json={"name": name}), 400, "bad_request")
    assert_envelope(api.post("/api/channels", expect=400, json={"name": f"team/{name}"}), 400, "bad_request")
    assert api.get("/api/channels/team").json()["subchannels"] == []


def test_three_levels_refused(api: Api) -> None:
    create(api, "a")
    create(api, "a/b")
    err = assert_envelope(api.post("/api/channels", expect=400, json={"name": "a/b/c"}), 400, "bad_request")
    assert "subchannel" in err["message"]
    # there is no route for a subchannel's subchannels
    r = api.post("/api/channels/a/subchannels/b/subchannels", expect=(404, 405), json={"name": "c"})
    assert_envelope(r, r.status_code)
    assert api.get("/api/channels/a").json()["subchannels"] == ["b"]


def test_bad_bodies(api: Api) -> None:
    assert_envelope(api.post("/api/channels", expect=400, json={}), 400)
    assert_envelope(api.post("/api/channels", expect=400, json={"name": 5}), 400)
    assert_envelope(api.post("/api/channels", expect=400, json=["team"]), 400)
    assert_envelope(api.post("/api/channels", expect=400, json={"name": "ok", "description": 3}), 400)
    assert_envelope(api.post("/api/channels", expect=400, json={"name": "ok", "private": "perhaps"}), 400)
    r = api.post("/api/channels", expect=400, data=b"{not json", headers={"Content-Type": "application/json"})
    assert "JSON" in assert_envelope(r, 400, "bad_request")["message"]
    assert api.get("/api/channels").json()["total"] == 0


def test_duplicate_is_conflict(api: Api) -> None:
    create(api, "team", description="first")
    err = assert_envelope(api.post("/api/channels", expect=409, json={"name": "team"}), 409, "conflict")
    assert "team" in err["message"]
    create(api, "team/dev")
    assert_envelope(api.post("/api/channels/team/subchannels", expect=409, json={"name": "dev"}), 409, "conflict")
    assert api.get("/api/channels/team").json()["description"] == "first"
    # the same subchannel name under another channel is fine
    create(api, "other")
    create(api, "other/dev")


def test_unknown_is_404(api: Api) -> None:
    create(api, "team")
    for method, path in [
        ("GET", "/api/channels/nope"),
        ("DELETE", "/api/channels/nope"),
        ("PATCH", "/api/channels/nope"),
        ("POST", "/api/channels/nope/freeze"),
        ("POST", "/api/channels/nope/unfreeze"),
        ("GET", "/api/channels/nope/subchannels"),
        ("GET", "/api/channels/team/subchannels/nope"),
        ("DELETE", "/api/channels/team/subchannels/nope"),
        ("POST", "/api/channels/team/subchannels/nope/freeze"),
        ("GET", "/api/repo/nope/noarch/repodata.json"),
        ("GET", "/api/repo/team/nope/noarch/repodata.json"),
    ]:
        r = api.request(method, path, expect=404, json={"description": "x"} if method == "PATCH" else None)
        assert_envelope(r, 404, "not_found")


# -- delete ----------------------------------------------------------------------------------
def test_delete_removes_contents_subchannels_and_repo_urls(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/dev")
    create(api, "keep")
    pkg = build_conda_package(tmp_path, "delme", "1.0", subdir="linux-64")
    sub_pkg = build_conda_package(tmp_path / "s", "subpkg", "2.0")
    api.upload("team", pkg)
    api.upload("team/dev", sub_pkg)
    api.upload("keep", pkg)
    urls = [
        "/api/repo/team/noarch/repodata.json",
        "/api/repo/team/linux-64/repodata.json",
        "/api/repo/team/linux-64/repodata.json.zst",
        "/api/repo/team/channeldata.json",
        f"/api/repo/team/linux-64/{pkg.name}",
        "/api/repo/team/dev/noarch/repodata.json",
        f"/api/repo/team/dev/noarch/{sub_pkg.name}",
        "/api/repo/team/dev/channeldata.json",
    ]
    for url in urls:
        api.get(url)
    assert api.request("DELETE", "/api/channels/team").json() == {"deleted": "team"}

    for url in urls:
        assert_envelope(api.get(url, expect=404), 404, "not_found")
    assert_envelope(api.get("/api/channels/team", expect=404), 404)
    assert_envelope(api.get("/api/channels/team/subchannels/dev", expect=404), 404)
    assert [c["name"] for c in api.get("/api/channels").json()["items"]] == ["keep"]
    assert [i["channel"] for i in api.get("/api/search", params={"q": "delme"}).json()["items"]] == ["keep"]
    assert api.get("/api/search", params={"q": "subpkg"}).json()["total"] == 0
    # the other channel holding the same bytes still serves them
    assert api.get(f"/api/repo/keep/linux-64/{pkg.name}").content == pkg.read_bytes()

    # a new channel of the same name starts empty
    create(api, "team")
    assert api.get("/api/channels/team").json()["subchannels"] == []
    repodata = api.get("/api/repo/team/noarch/repodata.json").json()
    assert repodata["packages"] == {} and repodata["packages.conda"] == {}
    assert_envelope(api.get("/api/repo/team/linux-64/repodata.json", expect=404), 404)
    assert_envelope(api.get(f"/api/repo/team/linux-64/{pkg.name}", expect=404), 404)
    assert api.get("/api/channels/team/files").json()["total"] == 0
    assert api.get("/api/repo/team/channeldata.json").json()["packages"] == {}


def test_delete_subchannel_keeps_parent(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/dev")
    pkg = build_conda_package(tmp_path, "parentpkg")
    api.upload("team", pkg)
    api.upload("team/dev", pkg)
    api.request("DELETE", "/api/channels/team/subchannels/dev")
    assert_envelope(api.get("/api/repo/team/dev/noarch/repodata.json", expect=404), 404)
    assert pkg.name in api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]
    assert api.get(f"/api/repo/team/noarch/{pkg.name}").content == pkg.read_bytes()


# -- freeze ----------------------------------------------------------------------------------
def test_freeze_unfreeze(api: Api) -> None:
    create(api, "team")
    create(api, "team/dev")
    frozen = api.post("/api/channels/team/freeze").json()
    assert frozen["frozen"] is True
    assert api.get("/api/channels/team").json()["frozen"] is True
    err = assert_envelope(api.post("/api/channels/team/freeze", expect=409), 409, "conflict")
    assert "frozen" in err["message"]
    # the subchannel is a channel of its own
    assert api.get("/api/channels/team/subchannels/dev").json()["frozen"] is False
    assert api.post("/api/channels/team/subchannels/dev/freeze").json()["frozen"] is True
    assert_envelope(api.post("/api/channels/team/subchannels/dev/freeze", expect=409), 409, "conflict")

    assert api.post("/api/channels/team/unfreeze").json()["frozen"] is False
    assert_envelope(api.post("/api/channels/team/unfreeze", expect=409), 409, "conflict")
    assert api.get("/api/channels/team").json()["frozen"] is False
    assert api.post("/api/channels/team/subchannels/dev/unfreeze").json()["frozen"] is False
    # freeze survives a listing round trip
    api.post("/api/channels/team/freeze")
    assert [c["frozen"] for c in api.get("/api/channels").json()["items"]] == [True]


@pytest.mark.parametrize("name", ["channeldata.json", "repodata.json", "x.conda", "a-b_c.d", "0", "shards", "trust"])
def test_every_subchannel_that_can_be_created_is_addressable(api: Api, tmp_path: Path, name: str) -> None:
    """A subchannel name that the repository URLs would read as something else must be refused."""
    create(api, "team")
    r = api.post("/api/channels/team/subchannels", expect=(201, 400), json={"name": name})
    if r.status_code == 400:
        assert_envelope(r, 400, "bad_request")
        return
    pkg = build_conda_package(tmp_path, "reach")
    api.upload(f"team/{name}", pkg)
    assert pkg.name in api.get(f"/api/repo/team/{name}/noarch/repodata.json").json()["packages.conda"]
    assert api.get(f"/api/repo/team/{name}/channeldata.json").json()["packages"].keys() == {"reach"}
    assert api.get(f"/api/repo/team/{name}/noarch/{pkg.name}").content == pkg.read_bytes()
