"""Uploads: real archives in, conda-exact records out; bad input refused with nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import requests
from builders import (
    MOCK,
    MOTO,
    XTENSOR,
    ZLIB_CONDA,
    ZLIB_DIR,
    ZLIB_TAR,
    build_bad_archives,
    build_conda_package,
    expected_record,
    info_member,
    section,
)
from conftest import Api, Server, channel_api

REAL = [ZLIB_CONDA, ZLIB_TAR, MOCK, XTENSOR, MOTO]


# -- helpers about server state ----------------------------------------------------------------
def blob_files(server: Server) -> list[str]:
    root = server.data_dir / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def tmp_entries(server: Server) -> list[str]:
    return sorted(os.listdir(server.data_dir / "blobs" / "tmp"))


def head_gen(api: Api, channel: str) -> int:
    return api.get(channel_api(channel)).json()["generation"]


def create(api: Api, name: str) -> None:
    api.post("/api/channels", expect=201, json={"name": name})


def assert_error(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    err = r.json()["error"]
    assert err["code"] == code, err
    assert isinstance(err["detail"], dict)
    assert err["message"]
    return err


def post_files(api: Api, channel: str, *paths: Path, params: dict | None = None) -> requests.Response:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    return api.session.post(api.server.url + f"{channel_api(channel)}/files", files=files, params=params, timeout=60)


class Snapshot:
    """Everything an upload could change: generation, files, blobs, temp files, published repodata."""

    def __init__(self, api: Api, channel: str, subdirs: tuple[str, ...] = ("noarch",)):
        self.api, self.channel = api, channel
        self.gen = head_gen(api, channel)
        self.files = api.get(f"{channel_api(channel)}/files").json()
        self.blobs = blob_files(api.server)
        self.repodata = {s: self._repodata(s) for s in subdirs}

    def _repodata(self, subdir: str) -> bytes | None:
        r = self.api.get(f"/api/repo/{self.channel}/{subdir}/repodata.json", expect=(200, 404))
        return r.content if r.status_code == 200 else None

    def assert_unchanged(self) -> None:
        assert head_gen(self.api, self.channel) == self.gen
        assert self.api.get(f"{channel_api(self.channel)}/files").json() == self.files
        assert blob_files(self.api.server) == self.blobs
        assert tmp_entries(self.api.server) == []
        for subdir, body in self.repodata.items():
            assert self._repodata(subdir) == body, subdir


# -- good uploads ------------------------------------------------------------------------------
@pytest.mark.parametrize("archive", REAL, ids=lambda p: p.name)
def test_upload_real_archive(api: Api, archive: Path) -> None:
    create(api, "team")
    expected = expected_record(archive)
    subdir = expected["subdir"]
    out = api.upload("team", archive, expect=201)
    assert out["generation"] == 1
    (f,) = out["files"]
    assert f["created"] is True
    assert (f["subdir"], f["filename"], f["name"]) == (subdir, archive.name, expected["name"])
    assert (f["version"], f["build"]) == (expected["version"], expected["build"])
    assert (f["sha256"], f["md5"], f["size"]) == (expected["sha256"], expected["md5"], expected["size"])
    assert f["record"] == expected
    assert f["download_url"] == f"/api/repo/team/{subdir}/{archive.name}"

    repodata = api.get(f"/api/repo/team/{subdir}/repodata.json").json()
    assert repodata["info"]["subdir"] == subdir
    assert repodata[section(archive.name)] == {archive.name: expected}
    other = "packages" if section(archive.name) == "packages.conda" else "packages.conda"
    assert repodata[other] == {}
    assert api.get(f"/api/repo/team/{subdir}/{archive.name}").content == archive.read_bytes()
    assert api.get(f"/api/channels/team/files/{subdir}/{archive.name}/download").content == archive.read_bytes()
    assert blob_files(api.server) == [f"{expected['sha256'][:2]}/{expected['sha256']}"]
    assert tmp_entries(api.server) == []


def test_zlib_records_equal_the_real_repodata(api: Api) -> None:
    real = json.loads((ZLIB_DIR / "repodata.json").read_text())
    create(api, "team")
    api.upload("team", ZLIB_CONDA, ZLIB_TAR, expect=201)
    repodata = api.get("/api/repo/team/linux-64/repodata.json").json()
    assert repodata["packages"] == {ZLIB_TAR.name: real["packages"][ZLIB_TAR.name]}
    assert repodata["packages.conda"] == {ZLIB_CONDA.name: real["packages.conda"][ZLIB_CONDA.name]}


def test_moto_record_agrees_with_the_legacy_repodata(api: Api) -> None:
    legacy = json.loads((MOTO.parent / "repodata.json").read_text())["packages"][MOTO.name]
    create(api, "team")
    api.upload("team", MOTO, expect=201)
    ours = api.get("/api/repo/team/noarch/repodata.json").json()["packages"][MOTO.name]
    # the old index had no noarch/license_family keys; every key it has must agree
    assert {k: ours[k] for k in legacy} == legacy
    assert ours["noarch"] == "python"


def test_many_files_in_one_request_make_one_generation(api: Api) -> None:
    create(api, "team")
    create(api, "team/dev")
    out = api.upload("team/dev", *REAL, expect=201)
    assert out["generation"] == 1
    assert [f["filename"] for f in out["files"]] == [p.name for p in REAL]
    assert all(f["created"] for f in out["files"])
    assert head_gen(api, "team/dev") == 1
    by_subdir: dict[str, dict] = {}
    for p in REAL:
        rec = expected_record(p)
        by_subdir.setdefault(rec["subdir"], {"packages": {}, "packages.conda": {}})[section(p.name)][p.name] = rec
    for subdir, want in by_subdir.items():
        got = api.get(f"/api/repo/team/dev/{subdir}/repodata.json").json()
        assert {"packages": got["packages"], "packages.conda": got["packages.conda"]} == want, subdir
    for p in REAL:
        rec = expected_record(p)
        assert api.get(f"/api/repo/team/dev/{rec['subdir']}/{p.name}").content == p.read_bytes()
    assert api.get("/api/channels/team/subchannels/dev/files").json()["total"] == len(REAL)
    assert len(blob_files(api.server)) == len(REAL)
    assert tmp_entries(api.server) == []


@pytest.mark.parametrize("archive", [ZLIB_CONDA, XTENSOR, MOTO, MOCK], ids=lambda p: p.name)
def test_about_fields_through_the_artifact(api: Api, archive: Path) -> None:
    about = info_member(archive, "info/about.json")
    name = expected_record(archive)["name"]
    create(api, "team")
    create(api, "team/sub")
    api.upload("team", archive)
    api.upload("team/sub", archive)
    for base in ("/api/channels/team", "/api/channels/team/subchannels/sub"):
        art = api.get(f"{base}/artifacts/conda/{name}").json()
        assert art["name"] == name and art["type"] == "conda"
        assert art["license"] == about["license"]
        assert art["summary"] == about["summary"]
        assert art["description"] == about.get("description", "")
        for key in ("home", "dev_url", "doc_url"):
            assert art[key] == about.get(key), key
    if archive is ZLIB_CONDA:  # make sure the fields under test are really there
        assert about["dev_url"] and about["doc_url"] and about["description"]


def test_built_package_about_and_record(api: Api, tmp_path: Path) -> None:
    pkg = build_conda_package(
        tmp_path, "built", "2.1", "py_0", subdir="linux-64", depends=["python >=3.9"], constrains=["other <2"],
        license="Apache-2.0", summary="a summary", description="a *long* description", fmt=".tar.bz2",
    )
    create(api, "team")
    api.upload("team", pkg)
    rec = api.get("/api/repo/team/linux-64/repodata.json").json()["packages"][pkg.name]
    assert rec == expected_record(pkg)
    assert rec["constrains"] == ["other <2"] and rec["depends"] == ["python >=3.9"]
    art = api.get("/api/channels/team/artifacts/conda/built").json()
    assert (art["license"], art["summary"], art["description"], art["home"]) == (
        "Apache-2.0", "a summary", "a *long* description", "https://example.com/built",
    )


# -- bad input ---------------------------------------------------------------------------------
BAD_KEYS = ["not_archive", "truncated", "truncated_bz2", "unsafe_path", "absolute_path", "symlink_escape",
            "hardlink_escape", "device_file", "no_index", "name_mismatch", "bad_subdir"]


@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    bad = build_bad_archives(tmp_path_factory.mktemp("bad"))
    assert sorted(bad) == sorted(BAD_KEYS), "build_bad_archives grew: add the new keys here"
    return bad


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_archive_refused_without_trace(api: Api, bad_archives: dict[str, Path], key: str) -> None:
    path = bad_archives[key]
    create(api, "team")
    snap = Snapshot(api, "team")
    err = assert_error(post_files(api, "team", path), 422, "invalid_package")
    assert path.name in err["message"]
    assert err["detail"].get("filename") == path.name
    snap.assert_unchanged()
    assert blob_files(api.server) == []  # only the (empty) tmp dir is in the blob store
    assert (api.server.data_dir / "blobs" / "tmp").is_dir()
    assert api.get("/api/search", params={"q": path.name.split("-")[0]}).json()["total"] == 0


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_one_bad_file_stores_none(api: Api, bad_archives: dict[str, Path], tmp_path: Path, position: str) -> None:
    good1 = build_conda_package(tmp_path, "good-one")
    good2 = build_conda_package(tmp_path, "good-two", fmt=".tar.bz2")
    bad = bad_archives["unsafe_path"]
    order = {"first": [bad, good1, good2], "middle": [good1, bad, good2], "last": [good1, good2, bad]}[position]
    create(api, "team")
    snap = Snapshot(api, "team")
    err = assert_error(post_files(api, "team", *order), 422, "invalid_package")
    assert bad.name in err["message"]
    snap.assert_unchanged()
    assert blob_files(api.server) == []
    assert api.get("/api/channels/team/files").json()["total"] == 0
    api.get("/api/channels/team/artifacts/conda/good-one", expect=404)


def test_oversize_is_413_without_trace(tmp_path: Path) -> None:
    server = Server(tmp_path / "d", max_upload_bytes=50_000).start()
    try:
        api = Api(server)
        create(api, "team")
        small = build_conda_package(tmp_path, "small")
        assert small.stat().st_size < 50_000 < MOTO.stat().st_size
        snap = Snapshot(api, "team")
        err = assert_error(post_files(api, "team", MOTO), 413, "too_large")
        assert "50000" in err["message"]
        snap.assert_unchanged()
        assert blob_files(server) == []
        # a good small file in the same request is not stored either, in either order
        for order in ([small, MOTO], [MOTO, small]):
            assert_error(post_files(api, "team", *order), 413, "too_large")
            snap.assert_unchanged()
            assert blob_files(server) == []
        # and the server still takes small uploads
        api.upload("team", small, expect=201)
        assert head_gen(api, "team") == 1
    finally:
        server.stop()


def test_too_many_files_is_413_without_trace(tmp_path: Path) -> None:
    server = Server(tmp_path / "d", max_files_per_upload=2).start()
    try:
        api = Api(server)
        create(api, "team")
        pkgs = [build_conda_package(tmp_path, f"many{i}") for i in range(3)]
        snap = Snapshot(api, "team")
        err = assert_error(post_files(api, "team", *pkgs), 413, "too_large")
        assert "2" in err["message"]
        snap.assert_unchanged()
        assert blob_files(server) == []
        api.upload("team", *pkgs[:2], expect=201)
    finally:
        server.stop()


def test_same_filename_other_bytes_is_conflict(api: Api, tmp_path: Path) -> None:
    first = build_conda_package(tmp_path / "a", "dup", "1.0", "0", files={"share/dup.txt": b"first\n"})
    second = build_conda_package(tmp_path / "b", "dup", "1.0", "0", files={"share/dup.txt": b"second\n"})
    assert first.name == second.name and first.read_bytes() != second.read_bytes()
    create(api, "team")
    api.upload("team", first, expect=201)
    snap = Snapshot(api, "team")
    err = assert_error(post_files(api, "team", second), 409, "conflict")
    assert first.name in err["message"]
    snap.assert_unchanged()
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"][first.name]["sha256"] == sha
    assert api.get(f"/api/repo/team/noarch/{first.name}").content == first.read_bytes()
    # with a good new file in the same request: nothing is stored
    other = build_conda_package(tmp_path, "bystander")
    assert_error(post_files(api, "team", other, second), 409, "conflict")
    snap.assert_unchanged()
    # the same name twice with different bytes in one request is a conflict too
    create(api, "fresh")
    snap2 = Snapshot(api, "fresh")
    assert_error(post_files(api, "fresh", first, second), 409, "conflict")
    snap2.assert_unchanged()
    # the same file name with other bytes is fine in another channel
    api.upload("fresh", second, expect=201)


def test_same_bytes_again_is_idempotent(api: Api, tmp_path: Path) -> None:
    pkg = build_conda_package(tmp_path, "again")
    create(api, "team")
    api.upload("team", pkg, expect=201)
    before = api.get("/api/repo/team/noarch/repodata.json")
    snap = Snapshot(api, "team")
    r = post_files(api, "team", pkg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generation"] is None
    assert [f["created"] for f in body["files"]] == [False]
    assert body["files"][0]["generation"] == 1
    snap.assert_unchanged()
    after = api.get("/api/repo/team/noarch/repodata.json")
    assert after.content == before.content and after.headers["ETag"] == before.headers["ETag"]
    # one known file and one new one: 201, a new generation holding only the new one
    new = build_conda_package(tmp_path, "again-new")
    body = api.upload("team", pkg, new, expect=201)
    assert [f["created"] for f in body["files"]] == [False, True]
    assert body["generation"] == 2 and head_gen(api, "team") == 2
    assert sorted(api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]) == sorted(
        [pkg.name, new.name]
    )
    # the same file twice in one request is stored once
    twice = build_conda_package(tmp_path, "twice")
    body = api.upload("team", twice, twice, expect=201)
    assert [f["created"] for f in body["files"]] == [True, False]
    assert api.get("/api/channels/team/files", params={"name": "twice"}).json()["total"] == 1


def test_subdir_parameter(api: Api, tmp_path: Path) -> None:
    noarch = build_conda_package(tmp_path, "na")
    linux = build_conda_package(tmp_path, "lx", subdir="linux-64")
    create(api, "team")
    snap = Snapshot(api, "team", ("noarch", "linux-64"))
    err = assert_error(post_files(api, "team", noarch, params={"subdir": "linux-64"}), 422, "invalid_package")
    assert noarch.name in err["message"] and "linux-64" in err["message"]
    snap.assert_unchanged()
    # a mismatch on any one file refuses the whole request
    assert_error(post_files(api, "team", linux, noarch, params={"subdir": "linux-64"}), 422, "invalid_package")
    snap.assert_unchanged()
    # a subdir that does not exist is bad input, and leaves nothing behind either
    assert_error(post_files(api, "team", linux, params={"subdir": "linux-999"}), 400, "bad_request")
    snap.assert_unchanged()
    assert blob_files(api.server) == []
    out = api.upload("team", linux, subdir="linux-64", expect=201)
    assert out["files"][0]["subdir"] == "linux-64"


def test_unknown_channel_is_404(api: Api, tmp_path: Path) -> None:
    pkg = build_conda_package(tmp_path, "orphan")
    assert_error(post_files(api, "nope", pkg), 404, "not_found")
    create(api, "team")
    assert_error(post_files(api, "team/nope", pkg), 404, "not_found")
    assert blob_files(api.server) == [] and tmp_entries(api.server) == []


def test_malformed_upload_requests(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    snap = Snapshot(api, "team")
    url = api.server.url + "/api/channels/team/files"
    r = api.session.post(url, data=b"raw bytes", headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "bad_request")
    r = api.session.post(url, files=[("other", ("x-1-0.conda", b"abc"))])
    assert_error(r, 400, "bad_request")
    r = api.session.post(url, files=[("file", ("../evil-1-0.conda", b"abc"))])
    assert_error(r, 400, "bad_request")
    pkg = build_conda_package(tmp_path, "renamed")
    r = api.session.post(url, files=[("file", ("renamed-1.0-0.whl", pkg.read_bytes()))])
    assert r.status_code in (400, 422), r.text
    snap.assert_unchanged()
