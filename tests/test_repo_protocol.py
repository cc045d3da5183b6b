"""The conda repository protocol: indexes (+ .zst), current_repodata, channeldata, CEP-16 shards,
package downloads (HEAD, Range, ETag/304), frozen channels and incremental publishing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest
import requests
import zstandard
from builders import MOTO, XTENSOR, ZLIB_CONDA, ZLIB_DIR, ZLIB_TAR, build_conda_package, expected_record, section
from conftest import Api

SECTIONS = ("packages", "packages.conda")


# -- helpers -----------------------------------------------------------------------------------
def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def create(api: Api, name: str) -> None:
    api.post("/api/channels", expect=201, json={"name": name})


def assert_404_envelope(r: requests.Response) -> None:
    assert r.status_code == 404, f"{r.request.url}: {r.status_code} {r.text[:200]}"
    assert r.json()["error"]["code"] == "not_found"


class Model:
    """The expected contents of one channel, kept by the test: subdir → filename → record."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, dict]] = {}
        self.paths: dict[str, Path] = {}

    def add(self, *paths: Path) -> None:
        for p in paths:
            rec = expected_record(p)
            self.files.setdefault(rec["subdir"], {})[p.name] = rec
            self.paths[p.name] = p

    def remove(self, subdir: str, filename: str) -> None:
        del self.files[subdir][filename]

    def remove_name(self, name: str) -> None:
        for recs in self.files.values():
            for fn in [fn for fn, r in recs.items() if r["name"] == name]:
                del recs[fn]

    def repodata(self, subdir: str) -> dict:
        out = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": [], "repodata_version": 1}
        for fn, rec in self.files.get(subdir, {}).items():
            out[section(fn)][fn] = rec
        return out

    def current(self, subdir: str) -> dict:
        """Only the newest version of each name (every build of it)."""
        from rattler import Version

        full = self.repodata(subdir)
        newest: dict[str, Version] = {}
        for sec in SECTIONS:
            for rec in full[sec].values():
                v = Version(rec["version"])
                if rec["name"] not in newest or v > newest[rec["name"]]:
                    newest[rec["name"]] = v
        for sec in SECTIONS:
            full[sec] = {fn: r for fn, r in full[sec].items() if Version(r["version"]) == newest[r["name"]]}
        return full


def check_subdir(api: Api, base: str, subdir: str, model: Model) -> dict:
    """repodata.json(.zst), current_repodata.json(.zst) and the shards all say what the model says."""
    want = model.repodata(subdir)
    raw = api.get(f"{base}/{subdir}/repodata.json").content
    got = json.loads(raw)
    assert got == want, f"{base}/{subdir}"
    assert unzstd(api.get(f"{base}/{subdir}/repodata.json.zst").content) == raw
    current_raw = api.get(f"{base}/{subdir}/current_repodata.json").content
    assert json.loads(current_raw) == model.current(subdir)
    assert unzstd(api.get(f"{base}/{subdir}/current_repodata.json.zst").content) == current_raw
    check_shards(api, base, subdir, got)
    return got


def check_shards(api: Api, base: str, subdir: str, repodata: dict) -> None:
    r = api.get(f"{base}/{subdir}/repodata_shards.msgpack.zst")
    index = msgpack.unpackb(unzstd(r.content))
    assert index["version"] == 1
    assert index["info"]["subdir"] == subdir
    by_name: dict[str, dict] = {}
    for sec in SECTIONS:
        for fn, rec in repodata[sec].items():
            by_name.setdefault(rec["name"], {"packages": {}, "packages.conda": {}})[sec][fn] = rec
    assert sorted(index["shards"]) == sorted(by_name)
    shards_base = index["info"].get("shards_base_url") or "./shards/"
    assert shards_base in ("./shards/", "shards/")
    for name, digest in index["shards"].items():
        assert isinstance(digest, bytes) and len(digest) == 32
        s = api.get(f"{base}/{subdir}/shards/{digest.hex()}.msgpack.zst")
        assert hashlib.sha256(s.content).digest() == digest, name
        assert "immutable" in s.headers["Cache-Control"]
        shard = msgpack.unpackb(unzstd(s.content))
        decoded = {}
        for sec in SECTIONS:
            decoded[sec] = {}
            for fn, rec in shard.get(sec, {}).items():
                assert isinstance(rec["sha256"], bytes) and len(rec["sha256"]) == 32
                assert isinstance(rec["md5"], bytes) and len(rec["md5"]) == 16
                decoded[sec][fn] = {**rec, "sha256": rec["sha256"].hex(), "md5": rec["md5"].hex()}
        assert decoded == by_name[name], name


# -- indexes -----------------------------------------------------------------------------------
def test_indexes_of_real_packages(api: Api) -> None:
    create(api, "team")
    api.upload("team", ZLIB_CONDA, ZLIB_TAR, XTENSOR, MOTO)
    model = Model()
    model.add(ZLIB_CONDA, ZLIB_TAR, XTENSOR, MOTO)
    linux = check_subdir(api, "/api/repo/team", "linux-64", model)
    real = json.loads((ZLIB_DIR / "repodata.json").read_text())
    assert linux["packages.conda"][ZLIB_CONDA.name] == real["packages.conda"][ZLIB_CONDA.name]
    check_subdir(api, "/api/repo/team", "noarch", model)

    cd = api.get("/api/repo/team/channeldata.json").json()
    assert cd["channeldata_version"] == 1
    assert set(cd["subdirs"]) == {"linux-64", "noarch"}
    assert sorted(cd["packages"]) == ["moto", "xtensor-io", "zlib"]
    zlib = cd["packages"]["zlib"]
    assert zlib["version"] == "1.2.11" and zlib["subdirs"] == ["linux-64"]
    assert zlib["license"] == "zlib"
    assert zlib["home"] == "http://zlib.net/" and zlib["dev_url"] == "https://github.com/madler/zlib"
    assert zlib["summary"].startswith("Massively spiffy")
    assert cd["packages"]["moto"]["subdirs"] == ["noarch"]


def test_current_repodata_keeps_newest_version_only(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    pkgs = [
        build_conda_package(tmp_path, "alpha", "1.9"),
        build_conda_package(tmp_path, "alpha", "1.10"),  # newer than 1.9 (not a string compare)
        build_conda_package(tmp_path, "alpha", "1.10", "1", build_number=1, fmt=".tar.bz2"),
        build_conda_package(tmp_path, "beta", "2.0a1"),
        build_conda_package(tmp_path, "beta", "2.0"),
        build_conda_package(tmp_path, "gamma", "0.1"),
    ]
    api.upload("team", *pkgs)
    model = Model()
    model.add(*pkgs)
    check_subdir(api, "/api/repo/team", "noarch", model)
    current = api.get("/api/repo/team/noarch/current_repodata.json").json()
    assert sorted(current["packages.conda"]) == ["alpha-1.10-0.conda", "beta-2.0-0.conda", "gamma-0.1-0.conda"]
    assert sorted(current["packages"]) == ["alpha-1.10-1.tar.bz2"]


def test_empty_channel_has_noarch_repodata(api: Api) -> None:
    create(api, "empty")
    create(api, "empty/sub")
    for base in ("/api/repo/empty", "/api/repo/empty/sub"):
        r = api.get(f"{base}/noarch/repodata.json")
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json() == Model().repodata("noarch")
        assert json.loads(unzstd(api.get(f"{base}/noarch/repodata.json.zst").content)) == r.json()
        assert api.get(f"{base}/noarch/current_repodata.json").json()["packages.conda"] == {}
        index = msgpack.unpackb(unzstd(api.get(f"{base}/noarch/repodata_shards.msgpack.zst").content))
        assert index["shards"] == {}
        assert api.get(f"{base}/channeldata.json").json()["packages"] == {}
        assert_404_envelope(api.get(f"{base}/linux-64/repodata.json", expect=404))


def test_headers_etag_304_and_cache_control(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    pkg = build_conda_package(tmp_path, "cached", files={"share/data.bin": b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(200))})
    api.upload("team", pkg)
    sha = hashlib.sha256(pkg.read_bytes()).hexdigest()
    shard_hex = msgpack.unpackb(unzstd(api.get("/api/repo/team/noarch/repodata_shards.msgpack.zst").content))[
        "shards"]["cached"].hex()
    urls = {
        "/api/repo/team/noarch/repodata.json": ("application/json", "index"),
        "/api/repo/team/noarch/repodata.json.zst": (None, "index"),
        "/api/repo/team/noarch/current_repodata.json": ("application/json", "index"),
        "/api/repo/team/noarch/repodata_shards.msgpack.zst": (None, "index"),
        "/api/repo/team/channeldata.json": ("application/json", "index"),
        f"/api/repo/team/noarch/shards/{shard_hex}.msgpack.zst": (None, "immutable"),
        f"/api/repo/team/noarch/{pkg.name}": (None, "package"),
    }
    for url, (ctype, kind) in urls.items():
        r = api.get(url)
        etag = r.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/"), etag  # strong
        if ctype:
            assert r.headers["Content-Type"].startswith(ctype)
        cache = r.headers["Cache-Control"]
        if kind == "index":
            max_age = int(cache.split("max-age=")[1].split(",")[0])
            assert 0 < max_age <= 600 and "immutable" not in cache, (url, cache)
        elif kind == "immutable":
            assert "immutable" in cache and int(cache.split("max-age=")[1].split(",")[0]) >= 86400
        # the same ETag twice, and 304 with an empty body on If-None-Match
        assert api.get(url).headers["ETag"] == etag
        r304 = api.get(url, expect=304, headers={"If-None-Match": etag})
        assert r304.content == b""
        assert api.get(url, headers={"If-None-Match": '"something-else"'}).content == r.content

    # HEAD: the headers of a GET, no body
    url = f"/api/repo/team/noarch/{pkg.name}"
    head = api.request("HEAD", url)
    assert head.content == b""
    assert int(head.headers["Content-Length"]) == pkg.stat().st_size
    assert head.headers["ETag"] == api.get(url).headers["ETag"]
    head = api.request("HEAD", "/api/repo/team/noarch/repodata.json")
    assert int(head.headers["Content-Length"]) == len(api.get("/api/repo/team/noarch/repodata.json").content)
    assert api.request("HEAD", "/api/repo/team/noarch/nothere-1-0.conda", expect=404).content == b""

    # Range
    data = pkg.read_bytes()
    assert len(data) > 2000
    r = api.get(url, expect=206, headers={"Range": "bytes=100-1099"})
    assert r.content == data[100:1100]
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    r = api.get(url, expect=206, headers={"Range": "bytes=-500"})
    assert r.content == data[-500:]
    r = api.get(url, expect=206, headers={"Range": f"bytes={len(data) - 10}-"})
    assert r.content == data[-10:]
    api.get(url, expect=416, headers={"Range": f"bytes={len(data) + 10}-"})
    # the whole package, as conda checks it
    assert hashlib.sha256(api.get(url).content).hexdigest() == sha


def test_not_served_paths_are_fast_404s(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    api.upload("team", build_conda_package(tmp_path, "there"))
    for path in [
        "noarch/repodata.jlap",
        "linux-64/repodata.jlap",
        "noarch/repodata.json.bz2",
        "noarch/index.html",
        "noarch/nothere-1.0-0.conda",
        "noarch/there-1.0-0.whl",
        "noarch/shards/" + "0" * 64 + ".msgpack.zst",
        "noarch/shards/abc.msgpack.zst",
        "noarch/shards/x/y",
        "linux-64/repodata.json",
        "linux-64/there-1.0-0.conda",
        "",
        "noarch",
        "noarch/a/b/c/d",
    ]:
        r = api.get(f"/api/repo/team/{path}", expect=404)
        assert_404_envelope(r)
        assert r.elapsed.total_seconds() < 1.0, path
    for path in ["/api/repo/nope/noarch/repodata.json", "/api/repo/team/nosub/noarch/repodata.json",
                 "/api/repo/nope/noarch/repodata.jlap"]:
        assert_404_envelope(api.get(path, expect=404))


def test_subchannel_and_token_prefixed_urls(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/dev")
    top = build_conda_package(tmp_path, "top", subdir="linux-64")
    sub = build_conda_package(tmp_path / "s", "sub", subdir="linux-64")
    api.upload("team", top)
    api.upload("team/dev", sub)
    top_model, sub_model = Model(), Model()
    top_model.add(top)
    sub_model.add(sub)
    check_subdir(api, "/api/repo/team", "linux-64", top_model)
    check_subdir(api, "/api/repo/team/dev", "linux-64", sub_model)
    check_subdir(api, "/api/repo/team/dev", "noarch", sub_model)
    assert api.get("/api/repo/team/dev/channeldata.json").json()["packages"].keys() == {"sub"}
    assert api.get(f"/api/repo/team/dev/linux-64/{sub.name}").content == sub.read_bytes()
    assert_404_envelope(api.get(f"/api/repo/team/linux-64/{sub.name}", expect=404))
    assert_404_envelope(api.get(f"/api/repo/team/dev/linux-64/{top.name}", expect=404))

    for prefix in ("/api/repo/t/anything", "/api/repo/t/tk-123.abc", "/t/anything/api/repo"):
        for ch, model, pkg in (("team", top_model, top), ("team/dev", sub_model, sub)):
            check_subdir(api, f"{prefix}/{ch}", "linux-64", model)
            assert api.get(f"{prefix}/{ch}/{'linux-64'}/{pkg.name}").content == pkg.read_bytes()
            assert api.get(f"{prefix}/{ch}/channeldata.json").json() == api.get(
                f"/api/repo/{ch}/channeldata.json").json()
    assert_404_envelope(api.get("/api/repo/t/anything/nope/noarch/repodata.json", expect=404))


# -- frozen channels ---------------------------------------------------------------------------
def test_frozen_channel_serves_its_published_generation(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "other")
    a = build_conda_package(tmp_path, "aaa")
    b = build_conda_package(tmp_path, "bbb", fmt=".tar.bz2")
    c = build_conda_package(tmp_path, "ccc")
    d = build_conda_package(tmp_path, "ddd")
    api.upload("team", a, b)
    api.upload("other", c)
    urls = ["noarch/repodata.json", "noarch/repodata.json.zst", "noarch/current_repodata.json",
            "noarch/repodata_shards.msgpack.zst", "channeldata.json"]
    before = {u: api.get(f"/api/repo/team/{u}") for u in urls}
    published = api.get("/api/channels/team").json()["published_generation"]

    assert api.post("/api/channels/team/freeze").json()["frozen"] is True
    api.upload("team", d, expect=201)
    api.request("DELETE", f"/api/channels/team/files/noarch/{a.name}")
    api.post("/api/channels/other/files/copy", json={"files": [f"noarch/{c.name}"], "target": "team"})
    api.post("/api/channels/team/files/move", json={"files": [f"noarch/{b.name}"], "target": "other"})

    info = api.get("/api/channels/team").json()
    assert info["published_generation"] == published
    assert info["generation"] == published + 4
    for u, r in before.items():
        now = api.get(f"/api/repo/team/{u}")
        assert now.content == r.content, u
        assert now.headers["ETag"] == r.headers["ETag"], u
        api.get(f"/api/repo/team/{u}", expect=304, headers={"If-None-Match": r.headers["ETag"]})
    # what was deleted or moved out is still served; what came in is not yet
    assert api.get(f"/api/repo/team/noarch/{a.name}").content == a.read_bytes()
    assert api.get(f"/api/repo/team/noarch/{b.name}").content == b.read_bytes()
    assert_404_envelope(api.get(f"/api/repo/team/noarch/{c.name}", expect=404))
    assert_404_envelope(api.get(f"/api/repo/team/noarch/{d.name}", expect=404))
    # the REST view shows the newest contents
    names = sorted(f["filename"] for f in api.get("/api/channels/team/files").json()["items"])
    assert names == sorted([c.name, d.name])
    # the unfrozen channel moved on at once
    other = Model()
    other.add(b, c)
    check_subdir(api, "/api/repo/other", "noarch", other)

    unfrozen = api.post("/api/channels/team/unfreeze").json()
    assert unfrozen["frozen"] is False
    assert unfrozen["published_generation"] == unfrozen["generation"] == published + 4
    team = Model()
    team.add(c, d)
    check_subdir(api, "/api/repo/team", "noarch", team)
    assert sorted(api.get("/api/repo/team/channeldata.json").json()["packages"]) == ["ccc", "ddd"]
    assert api.get("/api/repo/team/noarch/repodata.json").headers["ETag"] != before[urls[0]].headers["ETag"]
    assert_404_envelope(api.get(f"/api/repo/team/noarch/{a.name}", expect=404))
    assert_404_envelope(api.get(f"/api/repo/team/noarch/{b.name}", expect=404))
    assert api.get(f"/api/repo/team/noarch/{d.name}").content == d.read_bytes()


def test_frozen_subchannel(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    create(api, "team/rel")
    a = build_conda_package(tmp_path, "aaa")
    b = build_conda_package(tmp_path, "bbb")
    api.upload("team/rel", a)
    before = api.get("/api/repo/team/rel/noarch/repodata.json")
    api.post("/api/channels/team/subchannels/rel/freeze")
    api.upload("team/rel", b)
    api.request("DELETE", "/api/channels/team/subchannels/rel/artifacts/conda/aaa")
    assert api.get("/api/repo/team/rel/noarch/repodata.json").content == before.content
    assert api.get(f"/api/repo/team/rel/noarch/{a.name}").content == a.read_bytes()
    api.post("/api/channels/team/subchannels/rel/unfreeze")
    model = Model()
    model.add(b)
    check_subdir(api, "/api/repo/team/rel", "noarch", model)


# -- incremental publishing --------------------------------------------------------------------
def test_incremental_publishing_matches_a_full_render(api: Api, tmp_path: Path) -> None:
    """Many small changes (each rendered by splicing the previous render) end where one full render ends."""
    create(api, "team")
    model = Model()
    out = tmp_path / "pkgs"

    def pkg(name: str, version: str = "1.0", build: str = "0", **kw) -> Path:  # noqa: ANN003
        return build_conda_package(out / f"{name}-{version}-{build}-{kw.get('subdir', 'noarch')}", name, version,
                                   build, **kw)

    def upload(*paths: Path) -> None:
        api.upload("team", *paths, expect=201)
        model.add(*paths)

    def delete(subdir: str, filename: str) -> None:
        api.request("DELETE", f"/api/channels/team/files/{subdir}/{filename}")
        model.remove(subdir, filename)

    def check() -> None:
        for subdir in ("noarch", "linux-64"):
            check_subdir(api, "/api/repo/team", subdir, model)
        cd = api.get("/api/repo/team/channeldata.json").json()
        names = {r["name"] for recs in model.files.values() for r in recs.values()}
        assert set(cd["packages"]) == names

    # a base large enough that one changed name is an incremental render (not a full one)
    names = [f"pkg{i:02d}" for i in range(16)]
    upload(*[pkg(n, depends=[f"dep{n} >=1"]) for n in names[:12]])
    upload(*[pkg(n, subdir="linux-64", fmt=".tar.bz2") for n in names[4:16]])
    check()
    upload(pkg("pkg05", "1.1"))                                      # a newer version of one name
    check()
    upload(pkg("aaa-first"), pkg("zzz-last", subdir="linux-64"))     # names sorting first and last
    check()
    delete("noarch", "pkg03-1.0-0.conda")                            # a name disappears from noarch
    check()
    delete("noarch", "pkg05-1.0-0.conda")                            # an older version of a name goes
    check()
    upload(pkg("pkg07", "0.9", fmt=".tar.bz2"))                      # an older version arrives
    check()
    api.request("DELETE", "/api/channels/team/artifacts/conda/pkg10")  # a name goes from both subdirs
    model.remove_name("pkg10")
    check()
    upload(pkg("pkg03"))                                             # a removed file comes back
    check()
    api.post("/api/channels/team/files/delete", json={"files": [
        "linux-64/pkg06-1.0-0.tar.bz2", "noarch/pkg08-1.0-0.conda", "linux-64/zzz-last-1.0-0.conda"]})
    for key in ("linux-64/pkg06-1.0-0.tar.bz2", "noarch/pkg08-1.0-0.conda", "linux-64/zzz-last-1.0-0.conda"):
        model.remove(*key.split("/"))
    check()
    upload(*[pkg(n, "2.0") for n in names[:8]])                      # a big change: a full render
    check()

    # a channel that gets the same files in one upload renders the very same bytes
    create(api, "fresh")
    api.upload("fresh", *[model.paths[fn] for recs in model.files.values() for fn in recs])
    for subdir in ("noarch", "linux-64"):
        for index in ("repodata.json", "current_repodata.json"):
            assert api.get(f"/api/repo/fresh/{subdir}/{index}").content == api.get(
                f"/api/repo/team/{subdir}/{index}").content, (subdir, index)
        assert msgpack.unpackb(unzstd(api.get(f"/api/repo/fresh/{subdir}/repodata_shards.msgpack.zst").content)) \
            == msgpack.unpackb(unzstd(api.get(f"/api/repo/team/{subdir}/repodata_shards.msgpack.zst").content))
    assert api.get("/api/repo/fresh/channeldata.json").json()["packages"] == api.get(
        "/api/repo/team/channeldata.json").json()["packages"]


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_delete_last_file_of_a_subdir(api: Api, tmp_path: Path, fmt: str) -> None:
    create(api, "team")
    p = build_conda_package(tmp_path, "lonely", subdir="linux-64", fmt=fmt)
    api.upload("team", p)
    api.request("DELETE", f"/api/channels/team/files/linux-64/{p.name}")
    assert api.get("/api/repo/team/linux-64/repodata.json").json() == Model().repodata("linux-64")
    check_shards(api, "/api/repo/team", "linux-64", Model().repodata("linux-64"))
    assert "lonely" not in api.get("/api/repo/team/channeldata.json").json()["packages"]
    assert_404_envelope(api.get(f"/api/repo/team/linux-64/{p.name}", expect=404))


def test_concurrent_uploads_and_deletes_all_published(api: Api, tmp_path: Path) -> None:
    """Publishes racing each other on one channel: the last one published holds every change."""
    from concurrent.futures import ThreadPoolExecutor

    create(api, "team")
    model = Model()
    base = [build_conda_package(tmp_path / "base", f"base{i:02d}") for i in range(16)]
    api.upload("team", *base)
    model.add(*base)
    new = [build_conda_package(tmp_path / "new", f"new{i:02d}", subdir=("noarch", "linux-64")[i % 2])
           for i in range(12)]

    def upload(p: Path) -> int:
        return Api(api.server).upload("team", p, expect=201)["generation"]

    def delete(p: Path) -> int:
        return Api(api.server).request("DELETE", f"/api/channels/team/files/noarch/{p.name}").json()["generation"]

    with ThreadPoolExecutor(6) as pool:
        gens = list(pool.map(upload, new)) + list(pool.map(delete, base[:8]))
    assert sorted(gens) == list(range(2, 2 + len(new) + 8))
    model.add(*new)
    for p in base[:8]:
        model.remove("noarch", p.name)
    info = api.get("/api/channels/team").json()
    assert info["published_generation"] == info["generation"] == 1 + len(new) + 8
    for subdir in ("noarch", "linux-64"):
        check_subdir(api, "/api/repo/team", subdir, model)


def test_current_repodata_keeps_every_spelling_of_the_newest_version(api: Api, tmp_path: Path) -> None:
    """conda orders "3.0" and "3.0.0" as one version: both are the newest, whatever the process."""
    api.post("/api/channels", 201, json={"name": "cur"})
    api.upload("cur", *(build_conda_package(tmp_path, "libg", v, build=b) for v, b in
                        (("2.9", "0"), ("3.0", "a"), ("3.0.0", "b"))))
    current = api.get("/api/repo/cur/noarch/current_repodata.json").json()
    assert sorted(current["packages.conda"]) == ["libg-3.0-a.conda", "libg-3.0.0-b.conda"]
