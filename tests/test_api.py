"""The REST API: artifact endpoints (DESIGN.md §5), files, bulk delete, copy/move, search,
OpenAPI + Swagger UI, and the error envelope for unknown routes and bad bodies."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from builders import ZLIB_CONDA, ZLIB_TAR, build_conda_package
from conftest import Api, channel_api
from openapi_spec_validator import validate

from proxy.api.routing import routes


def create(api: Api, name: str) -> None:
    api.post("/api/channels", expect=201, json={"name": name})


def assert_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}, body
    if code:
        assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def repo_filenames(api: Api, channel: str, subdir: str = "noarch") -> list[str]:
    r = api.get(f"/api/repo/{channel}/{subdir}/repodata.json", expect=(200, 404))
    if r.status_code == 404:
        return []
    rd = r.json()
    return sorted([*rd["packages"], *rd["packages.conda"]])


def filenames(api: Api, channel: str) -> list[str]:
    items = api.get(f"{channel_api(channel)}/files", params={"per_page": 1000}).json()["items"]
    return sorted(f"{f['subdir']}/{f['filename']}" for f in items)


# -- artifacts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_artifact_endpoints(api: Api, tmp_path: Path, channel: str) -> None:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    base = channel_api(channel)
    old = build_conda_package(tmp_path, "tool", "1.0", "0", depends=["python >=3.8"], summary="old summary",
                              description="The old text.")
    new_a = build_conda_package(tmp_path, "tool", "1.10", "0", depends=["python >=3.9", "numpy"],
                                constrains=["scipy <2"], summary="A tool", description="# Tool\n\nDoes things.")
    new_b = build_conda_package(tmp_path, "tool", "1.10", "0", subdir="linux-64", depends=["libgcc-ng >=7"],
                                fmt=".tar.bz2", summary="A tool", description="# Tool\n\nDoes things.")
    plain = build_conda_package(tmp_path, "plain", "3.0", summary="only a summary")
    api.upload(channel, old, new_a, new_b, plain)

    art = api.get(f"{base}/artifacts/conda/tool").json()
    assert art["channel"] == channel and art["type"] == "conda" and art["name"] == "tool"
    assert art["latest_version"] == "1.10"
    assert art["versions"] == ["1.10", "1.0"]
    assert art["summary"] == "A tool" and art["description"] == "# Tool\n\nDoes things."
    assert art["license"] == "MIT" and art["home"] == "https://example.com/tool"
    assert art["subdirs"] == ["linux-64", "noarch"]
    assert art["file_count"] == 3
    assert art["last_upload"].endswith("Z")

    readme = api.get(f"{base}/artifacts/conda/tool/readme").json()
    assert readme["name"] == "tool" and readme["version"] == "1.10" and readme["format"] == "markdown"
    assert readme["content"] == "# Tool\n\nDoes things."
    assert "only a summary" in api.get(f"{base}/artifacts/conda/plain/readme").json()["content"]

    cves = api.get(f"{base}/artifacts/conda/tool/cves").json()
    assert cves["cves"] == [] and cves["total"] == 0  # no advisories imported: none known

    files = api.get(f"{base}/artifacts/conda/tool/files").json()
    assert files["total"] == 3 and files["page"] == 1
    assert sorted(f["filename"] for f in files["items"]) == sorted([old.name, new_a.name, new_b.name])
    for f in files["items"]:
        assert f["channel"] == channel
        assert f["download_url"] == f"/api/repo/{channel}/{f['subdir']}/{f['filename']}"
    page = api.get(f"{base}/artifacts/conda/tool/files", params={"per_page": 2, "page": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 1

    deps = api.get(f"{base}/artifacts/conda/tool/dependencies").json()
    assert deps["name"] == "tool" and deps["version"] == "1.10"
    by_file = {f["filename"]: f for f in deps["files"]}
    assert sorted(by_file) == sorted([new_a.name, new_b.name])
    assert by_file[new_a.name]["depends"] == [
        {"spec": "python >=3.9", "name": "python", "constraint": ">=3.9"},
        {"spec": "numpy", "name": "numpy", "constraint": ""},
    ]
    assert by_file[new_a.name]["constrains"] == [{"spec": "scipy <2", "name": "scipy", "constraint": "<2"}]
    assert by_file[new_b.name]["subdir"] == "linux-64"
    old_deps = api.get(f"{base}/artifacts/conda/tool/dependencies", params={"version": "1.0"}).json()
    assert [f["depends"] for f in old_deps["files"]] == [[{"spec": "python >=3.8", "name": "python",
                                                          "constraint": ">=3.8"}]]
    assert_error(api.get(f"{base}/artifacts/conda/tool/dependencies", params={"version": "9"}, expect=404), 404)

    listing = api.get(f"{base}/artifacts").json()
    assert [(i["type"], i["name"], i["file_count"]) for i in listing["items"]] == [("conda", "plain", 1),
                                                                                  ("conda", "tool", 3)]
    assert [i["license"] for i in listing["items"]] == ["MIT", "MIT"]

    for suffix in ("", "/readme", "/cves", "/files", "/dependencies"):
        assert_error(api.get(f"{base}/artifacts/conda/nope{suffix}", expect=404), 404, "not_found")
        assert_error(api.get(f"{base}/artifacts/rpm/tool{suffix}", expect=400), 400, "bad_request")

    out = api.request("DELETE", f"{base}/artifacts/conda/tool").json()
    assert out["deleted"] == "conda/tool" and out["channel"] == channel and isinstance(out["generation"], int)
    assert_error(api.get(f"{base}/artifacts/conda/tool", expect=404), 404)
    assert_error(api.request("DELETE", f"{base}/artifacts/conda/tool", expect=404), 404)
    assert repo_filenames(api, channel) == [plain.name]
    assert repo_filenames(api, channel, "linux-64") == []
    assert_error(api.get(f"/api/repo/{channel}/noarch/{new_a.name}", expect=404), 404)
    assert api.get(f"{base}/artifacts").json()["total"] == 1


def test_listing_and_search_show_the_newest_versions_summary(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    api.upload("team", build_conda_package(tmp_path, "tool", "1.0", summary="old summary"),
               build_conda_package(tmp_path, "tool", "2.0", summary="A tool"))
    assert api.get("/api/channels/team/artifacts/conda/tool").json()["summary"] == "A tool"
    assert [i["summary"] for i in api.get("/api/channels/team/artifacts").json()["items"]] == ["A tool"]
    assert [i["summary"] for i in api.get("/api/search", params={"q": "tool"}).json()["items"]] == ["A tool"]


def test_artifacts_of_channel_and_subchannel_are_apart(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/sub")
    api.upload("team", build_conda_package(tmp_path, "toponly"))
    api.upload("team/sub", build_conda_package(tmp_path, "subonly"))
    api.get("/api/channels/team/artifacts/conda/toponly")
    api.get("/api/channels/team/subchannels/sub/artifacts/conda/subonly")
    assert_error(api.get("/api/channels/team/artifacts/conda/subonly", expect=404), 404)
    assert_error(api.get("/api/channels/team/subchannels/sub/artifacts/conda/toponly", expect=404), 404)
    assert_error(api.request("DELETE", "/api/channels/team/artifacts/conda/subonly", expect=404), 404)
    api.get("/api/channels/team/subchannels/sub/artifacts/conda/subonly")


# -- files -------------------------------------------------------------------------------------
def test_file_list_show_download_delete(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/sub")
    api.upload("team", ZLIB_CONDA, ZLIB_TAR)
    a = build_conda_package(tmp_path, "aaa", "1.0")
    a2 = build_conda_package(tmp_path, "aaa", "2.0")
    api.upload("team", a, a2)
    api.upload("team/sub", a)

    listing = api.get("/api/channels/team/files").json()
    assert listing["total"] == 4
    assert [f["filename"] for f in listing["items"]] == [a.name, a2.name, ZLIB_CONDA.name, ZLIB_TAR.name]
    assert api.get("/api/channels/team/files", params={"name": "zlib"}).json()["total"] == 2
    assert api.get("/api/channels/team/files", params={"subdir": "noarch"}).json()["total"] == 2
    assert api.get("/api/channels/team/files", params={"version": "2.0"}).json()["items"][0]["filename"] == a2.name
    assert api.get("/api/channels/team/files", params={"type": "conda"}).json()["total"] == 4
    paged = api.get("/api/channels/team/files", params={"per_page": 3, "page": 2}).json()
    assert (paged["total"], paged["page"], paged["per_page"], len(paged["items"])) == (4, 2, 3, 1)
    assert api.get("/api/channels/team/subchannels/sub/files").json()["total"] == 1
    assert_error(api.get("/api/channels/team/files", params={"per_page": 0}, expect=400), 400)
    assert_error(api.get("/api/channels/team/files", params={"page": "x"}, expect=400), 400)

    shown = api.get(f"/api/channels/team/files/linux-64/{ZLIB_CONDA.name}").json()
    data = ZLIB_CONDA.read_bytes()
    assert shown["sha256"] == hashlib.sha256(data).hexdigest() and shown["size"] == len(data)
    assert shown["md5"] == hashlib.md5(data).hexdigest()
    assert shown["record"]["depends"] == ["libgcc-ng >=7.3.0"]
    assert shown["license"] == "zlib" and shown["channel"] == "team"
    sub_shown = api.get(f"/api/channels/team/subchannels/sub/files/noarch/{a.name}").json()
    assert sub_shown["channel"] == "team/sub" and sub_shown["download_url"] == f"/api/repo/team/sub/noarch/{a.name}"

    dl = api.get(f"/api/channels/team/files/linux-64/{ZLIB_CONDA.name}/download")
    assert dl.content == data
    assert ZLIB_CONDA.name in dl.headers["Content-Disposition"]
    assert api.get(f"/api/channels/team/subchannels/sub/files/noarch/{a.name}/download").content == a.read_bytes()

    for bad in (f"/api/channels/team/files/linux-64/{a.name}", "/api/channels/team/files/noarch/nope-1-0.conda",
                f"/api/channels/team/files/linux-64/{ZLIB_CONDA.name}/nope", "/api/channels/nope/files"):
        assert_error(api.get(bad, expect=404), 404)
    assert_error(api.get(f"/api/channels/team/files/linux-999/{a.name}", expect=400), 400, "bad_request")

    out = api.request("DELETE", f"/api/channels/team/files/noarch/{a.name}").json()
    assert out["deleted"] == [f"noarch/{a.name}"] and isinstance(out["generation"], int)
    assert_error(api.get(f"/api/channels/team/files/noarch/{a.name}", expect=404), 404)
    assert_error(api.request("DELETE", f"/api/channels/team/files/noarch/{a.name}", expect=404), 404)
    assert repo_filenames(api, "team") == [a2.name]
    # the same bytes stay available where they are still listed
    assert api.get(f"/api/repo/team/sub/noarch/{a.name}").content == a.read_bytes()
    assert api.get("/api/channels/team/subchannels/sub/files").json()["total"] == 1


def test_bulk_delete_all_or_nothing(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    pkgs = [build_conda_package(tmp_path, f"bulk{i}") for i in range(4)]
    api.upload("team", *pkgs)
    gen = api.get("/api/channels/team").json()["generation"]
    keys = [f"noarch/{p.name}" for p in pkgs]

    err = assert_error(api.post("/api/channels/team/files/delete", expect=404,
                                json={"files": [keys[0], keys[1], "noarch/missing-1.0-0.conda"]}), 404, "not_found")
    assert err["detail"]["missing"] == ["noarch/missing-1.0-0.conda"]
    assert filenames(api, "team") == sorted(keys)
    assert repo_filenames(api, "team") == sorted(p.name for p in pkgs)
    assert api.get("/api/channels/team").json()["generation"] == gen

    for body in ({}, {"files": []}, {"files": "noarch/x"}, {"files": [1]}, {"files": ["no-subdir.conda"]},
                 {"files": ["linux-999/x-1-0.conda"]}):
        assert_error(api.post("/api/channels/team/files/delete", expect=400, json=body), 400, "bad_request")
    assert filenames(api, "team") == sorted(keys)

    out = api.post("/api/channels/team/files/delete", json={"files": keys[:3]}).json()
    assert out["deleted"] == sorted(keys[:3]) and out["generation"] == gen + 1
    assert filenames(api, "team") == [keys[3]]
    assert repo_filenames(api, "team") == [pkgs[3].name]


def test_copy_and_move_between_channel_and_subchannel(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/stage")
    a = build_conda_package(tmp_path, "aaa")
    b = build_conda_package(tmp_path, "bbb", subdir="linux-64")
    c = build_conda_package(tmp_path, "ccc")
    api.upload("team", a, b, c)

    out = api.post("/api/channels/team/files/copy",
                   json={"files": [f"noarch/{a.name}", f"linux-64/{b.name}"], "target": "team/stage"}).json()
    assert out["source"] == "team" and out["target"] == "team/stage"
    assert out["source_generation"] is None and isinstance(out["target_generation"], int)
    assert filenames(api, "team") == sorted([f"noarch/{a.name}", f"linux-64/{b.name}", f"noarch/{c.name}"])
    assert filenames(api, "team/stage") == sorted([f"noarch/{a.name}", f"linux-64/{b.name}"])
    assert api.get(f"/api/repo/team/stage/linux-64/{b.name}").content == b.read_bytes()
    assert repo_filenames(api, "team/stage") == [a.name]
    # copying again the same bytes changes nothing
    again = api.post("/api/channels/team/files/copy", json={"files": [f"noarch/{a.name}"], "target": "team/stage"})
    assert again.json()["target_generation"] is None

    # move back up from the subchannel
    api.post("/api/channels/team/subchannels/stage/files/move",
             json={"files": [f"linux-64/{b.name}"], "target": "other"}, expect=404)
    out = api.post("/api/channels/team/files/move", json={"files": [f"noarch/{c.name}"], "target": "team/stage"}).json()
    assert isinstance(out["source_generation"], int) and isinstance(out["target_generation"], int)
    assert filenames(api, "team") == sorted([f"noarch/{a.name}", f"linux-64/{b.name}"])
    assert filenames(api, "team/stage") == sorted([f"noarch/{a.name}", f"linux-64/{b.name}", f"noarch/{c.name}"])
    assert repo_filenames(api, "team") == [a.name]
    assert repo_filenames(api, "team/stage") == sorted([a.name, c.name])
    assert_error(api.get(f"/api/repo/team/noarch/{c.name}", expect=404), 404)

    # a conflict (same file name, other bytes) leaves both channels as they were
    a_other = build_conda_package(tmp_path / "other", "aaa", files={"share/aaa.txt": b"different\n"})
    create(api, "side")
    api.upload("side", a_other, build_conda_package(tmp_path / "other", "ddd"))
    before = {ch: (filenames(api, ch), api.get(f"/api/repo/{ch}/noarch/repodata.json").content,
                   api.get(channel_api(ch)).json()["generation"]) for ch in ("team", "side")}
    for verb in ("copy", "move"):
        err = assert_error(api.post(f"/api/channels/side/files/{verb}", expect=409, json={
            "files": ["noarch/ddd-1.0-0.conda", f"noarch/{a_other.name}"], "target": "team"}), 409, "conflict")
        assert a_other.name in err["message"]
    after = {ch: (filenames(api, ch), api.get(f"/api/repo/{ch}/noarch/repodata.json").content,
                  api.get(channel_api(ch)).json()["generation"]) for ch in ("team", "side")}
    assert after == before

    # bad requests
    for body in ({"files": [f"noarch/{a.name}"]}, {"files": [f"noarch/{a.name}"], "target": "team"},
                 {"files": [f"noarch/{a.name}"], "target": "Bad Name"}, {"target": "team/stage"}):
        assert_error(api.post("/api/channels/team/files/copy", expect=400, json=body), 400, "bad_request")
    assert_error(api.post("/api/channels/team/files/copy", expect=404,
                          json={"files": [f"noarch/{a.name}"], "target": "nope"}), 404)
    assert_error(api.post("/api/channels/team/files/move", expect=404,
                          json={"files": ["noarch/zzz-1-0.conda"], "target": "team/stage"}), 404)
    assert after == {ch: (filenames(api, ch), api.get(f"/api/repo/{ch}/noarch/repodata.json").content,
                          api.get(channel_api(ch)).json()["generation"]) for ch in ("team", "side")}


# -- search ------------------------------------------------------------------------------------
@pytest.fixture
def search_api(api: Api, tmp_path: Path) -> Api:
    create(api, "team")
    create(api, "team/sub")
    create(api, "other")

    def pkg(name: str, **kw) -> Path:  # noqa: ANN003
        return build_conda_package(tmp_path / name / kw.get("subdir", "noarch"), name, **kw)

    api.upload("team", pkg("numpy", license="BSD-3-Clause", summary="arrays"),
               pkg("numpy", subdir="linux-64", license="BSD-3-Clause"),
               pkg("numpy-base", license="BSD-3-Clause"), pkg("pynumpy", license="MIT"),
               pkg("scipy", license="BSD-3-Clause"), pkg("zlib", subdir="linux-64", license="Zlib"))
    api.upload("team/sub", pkg("numpy", license="BSD-3-Clause"), pkg("numba", license="BSD-2-Clause"))
    api.upload("other", pkg("numpy", license="BSD-3-Clause"), pkg("gone", license="MIT"))
    api.request("DELETE", "/api/channels/other/artifacts/conda/gone")
    return api


def search(api: Api, **params) -> dict:  # noqa: ANN003
    return api.get("/api/search", params=params).json()


def hits(api: Api, **params) -> list[tuple[str, str]]:  # noqa: ANN003
    return [(i["channel"], i["name"]) for i in search(api, per_page=100, **params)["items"]]


def test_search_substring_and_ranking(search_api: Api) -> None:
    api = search_api
    out = search(api, q="numpy", per_page=100)
    names = [i["name"] for i in out["items"]]
    assert names == ["numpy", "numpy", "numpy", "numpy-base", "pynumpy"]
    assert [i["match"] for i in out["items"]] == ["exact"] * 3 + ["prefix", "substring"]
    assert out["total"] == 5
    assert sorted(i["channel"] for i in out["items"][:3]) == ["other", "team", "team/sub"]
    numpy_team = next(i for i in out["items"] if i["channel"] == "team" and i["name"] == "numpy")
    assert numpy_team["file_count"] == 2 and numpy_team["type"] == "conda"
    assert numpy_team["license"] == "BSD-3-Clause"
    # case-insensitive; substrings in the middle
    assert hits(api, q="NUMP") == hits(api, q="nump")
    assert {n for _, n in hits(api, q="ump")} == {"numpy", "numpy-base", "pynumpy"}
    assert hits(api, q="cip") == [("team", "scipy")]
    assert hits(api, q="nothing-like-this") == []
    # deleted artifacts are not found
    assert hits(api, q="gone") == []
    # a LIKE wildcard in a substring query is a plain character
    assert hits(api, q="num_y") == []
    assert hits(api, q="%") == []


def test_search_globs(search_api: Api) -> None:
    api = search_api
    assert {n for _, n in hits(api, q="num*")} == {"numpy", "numpy-base", "numba"}
    assert {n for _, n in hits(api, q="*py")} == {"numpy", "pynumpy", "scipy"}
    assert {n for _, n in hits(api, q="num?a")} == {"numba"}
    assert {n for _, n in hits(api, q="[sz]*")} == {"scipy", "zlib"}
    assert hits(api, q="numpy*base") == [("team", "numpy-base")]
    assert all(i["match"] == "glob" for i in search(api, q="num*")["items"])
    # a glob matches the whole name
    assert hits(api, q="ump*") == []


def test_search_filters_and_paging(search_api: Api) -> None:
    api = search_api
    assert hits(api, q="numpy", channel="team/sub") == [("team/sub", "numpy")]
    assert {n for _, n in hits(api, channel="team")} == {"numpy", "numpy-base", "pynumpy", "scipy", "zlib"}
    assert_error(api.get("/api/search", params={"q": "numpy", "channel": "nope"}, expect=404), 404, "not_found")
    assert {(c, n) for c, n in hits(api, subdir="linux-64")} == {("team", "numpy"), ("team", "zlib")}
    linux_numpy = search(api, q="numpy", subdir="linux-64")["items"]
    assert [(i["channel"], i["file_count"]) for i in linux_numpy] == [("team", 1)]
    assert {n for _, n in hits(api, license="mit")} == {"pynumpy"}
    assert {n for _, n in hits(api, license="BSD-2")} == {"numba"}
    assert {n for _, n in hits(api, q="numpy", license="bsd")} == {"numpy", "numpy-base"}
    assert len(hits(api, type="conda")) == 8
    assert hits(api, type="python") == []

    everything = search(api, per_page=100)
    assert everything["total"] == 8
    collected = []
    for page in (1, 2, 3, 4):
        out = search(api, per_page=2, page=page)
        assert (out["total"], out["page"], out["per_page"]) == (8, page, 2)
        collected += [(i["channel"], i["name"]) for i in out["items"]]
    assert collected == [(i["channel"], i["name"]) for i in everything["items"]]
    assert search(api, per_page=2, page=5)["items"] == []
    assert_error(api.get("/api/search", params={"per_page": 5000}, expect=400), 400, "bad_request")
    assert_error(api.get("/api/search", params={"page": 0}, expect=400), 400, "bad_request")


# -- OpenAPI, Swagger UI, errors ---------------------------------------------------------------
def test_openapi_document(api: Api) -> None:
    doc = api.get("/api/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    channel_routes = [r for r in routes.routes if r.path.startswith("/api/channels")]
    assert len(channel_routes) > 20
    for r in channel_routes:
        assert r.path in doc["paths"], r.path
        op = doc["paths"][r.path][r.method.lower()]
        assert op["summary"] == r.summary
        assert op["x-permission"] == r.permission
        params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert params == {seg[1:-1].split(":")[0] for seg in r.path.split("/") if seg.startswith("{")}
    for path in ("/api/channels/{channel}/artifacts/{type}/{name}",
                 "/api/channels/{channel}/subchannels/{subchannel}/artifacts/{type}/{name}"):
        assert set(doc["paths"][path]) == {"get", "delete"}
        for suffix in ("/readme", "/cves", "/files", "/dependencies"):
            assert "get" in doc["paths"][path + suffix]
    assert "get" in doc["paths"]["/api/search"]
    op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids))


def test_swagger_ui_served_locally(api: Api) -> None:
    page = api.get("/swagger/ui")
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/api/openapi.json" in page.text
    assert "/swagger/ui/assets/swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    bundle = api.get("/swagger/ui/assets/swagger-ui-bundle.js")
    assert len(bundle.content) > 100_000 and b"SwaggerUIBundle" in bundle.content
    assert api.get("/swagger/ui/assets/swagger-ui.css").content
    api.get("/swagger/ui/assets/swagger-ui-standalone-preset.js")


def test_unknown_routes_and_bad_bodies(api: Api) -> None:
    for path in ("/api/nothing", "/api/channels/x/y/z/w", "/nothing", "/api/channels/team/artifacts"):
        assert_error(api.get(path, expect=404), 404, "not_found")
    assert_error(api.request("PUT", "/api/channels", expect=405), 405)
    create(api, "team")
    for path in ("/api/channels", "/api/channels/team/subchannels", "/api/channels/team/files/delete",
                 "/api/channels/team/files/copy"):
        err = assert_error(api.post(path, expect=400, data=b'{"name": "x",',
                                    headers={"Content-Type": "application/json"}), 400, "bad_request")
        assert "JSON" in err["message"]
    assert_error(api.request("PATCH", "/api/channels/team", expect=400, data=b"[1, 2",
                             headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert_error(api.post("/api/channels", expect=400, data=b'"a string"'), 400, "bad_request")
    big = api.post("/api/channels", expect=(400, 413), data=b'{"name": "big", "description": "' + b"x" * (2 << 20))
    assert_error(big, big.status_code)  # 413 would match DESIGN.md §7 better; reported
    assert api.get("/api/channels").json()["total"] == 1
