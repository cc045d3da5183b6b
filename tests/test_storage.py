"""Storage on SQLite and PostgreSQL: everything survives a restart, migrations are at head, blobs are
committed atomically, and a generation written but not published (a crash) is published at start-up."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from builders import MOTO, ZLIB_CONDA, build_conda_package
from conftest import Api, Server, channel_api

from conda_platform_plugin.errors import InvalidPackage, TooLarge
from conda_platform_plugin.formats import conda_record, read_conda_package
from proxy.store.blobs import BlobStore
from proxy.store.db import MIGRATIONS
from proxy.store.files import NewFile


@pytest.fixture
def db_server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    server = Server(tmp_path / "data", database_url=database_url).start()
    yield server
    server.stop()


def create(api: Api, name: str) -> None:
    api.post("/api/channels", expect=201, json={"name": name})


def state(api: Api, channels: list[str], subdirs: tuple[str, ...] = ("noarch", "linux-64")) -> dict:
    """What a client and an admin can see of the given channels."""
    out: dict = {"channels": api.get("/api/channels", params={"per_page": 1000}).json()}
    for ch in channels:
        info = api.get(channel_api(ch)).json()
        files = api.get(f"{channel_api(ch)}/files", params={"per_page": 1000}).json()
        repo: dict = {}
        for sub in subdirs:
            for index in ("repodata.json", "repodata.json.zst", "current_repodata.json",
                          "repodata_shards.msgpack.zst"):
                r = api.get(f"/api/repo/{ch}/{sub}/{index}", expect=(200, 404))
                repo[f"{sub}/{index}"] = (r.status_code, r.content, r.headers.get("ETag"))
        repo["channeldata.json"] = api.get(f"/api/repo/{ch}/channeldata.json").content
        packages = {}
        for f in files["items"]:
            packages[f["filename"]] = hashlib.sha256(
                api.get(f"/api/repo/{ch}/{f['subdir']}/{f['filename']}", expect=(200, 404)).content).hexdigest()
        out[ch] = {"info": info, "files": files, "repo": repo, "downloads": packages}
    return out


def test_everything_survives_a_restart(db_server: Server, tmp_path: Path) -> None:
    api = Api(db_server)
    create(api, "team")
    create(api, "team/dev")
    create(api, "frozen")
    create(api, "gone")
    a = build_conda_package(tmp_path, "aaa", depends=["python"])
    b = build_conda_package(tmp_path, "bbb", subdir="linux-64", fmt=".tar.bz2")
    c = build_conda_package(tmp_path, "ccc")
    api.upload("team", a, b, c, ZLIB_CONDA)
    api.upload("team/dev", MOTO)
    api.upload("gone", a)
    api.post("/api/channels/team/files/copy", json={"files": [f"noarch/{a.name}"], "target": "team/dev"})
    api.post("/api/channels/team/files/move", json={"files": [f"linux-64/{b.name}"], "target": "frozen"})
    api.request("DELETE", f"/api/channels/team/files/noarch/{c.name}")
    api.request("PATCH", "/api/channels/team", json={"description": "kept", "private": False})
    api.upload("frozen", c)
    api.post("/api/channels/frozen/freeze")
    api.upload("frozen", build_conda_package(tmp_path / "late", "late"))  # lands after the published generation
    api.request("DELETE", "/api/channels/gone")
    names = ["team", "team/dev", "frozen"]
    before = state(api, names)
    assert before["frozen"]["info"]["generation"] == before["frozen"]["info"]["published_generation"] + 1
    assert before["team"]["info"]["description"] == "kept"

    db_server.restart()
    api = Api(db_server)
    after = state(api, names)
    assert after == before
    api.get("/api/channels/gone", expect=404)
    api.get("/api/repo/gone/noarch/repodata.json", expect=404)
    etag = before["team"]["repo"]["noarch/repodata.json"][2]
    api.get("/api/repo/team/noarch/repodata.json", expect=304, headers={"If-None-Match": etag})

    # the store keeps working after the restart, the frozen channel publishes on unfreeze
    api.upload("team", build_conda_package(tmp_path / "new", "after-restart"), expect=201)
    assert "after-restart-1.0-0.conda" in api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]
    info = api.post("/api/channels/frozen/unfreeze").json()
    assert info["published_generation"] == info["generation"]
    assert sorted(api.get("/api/repo/frozen/noarch/repodata.json").json()["packages.conda"]) == [
        c.name, "late-1.0-0.conda"]
    api.post("/api/channels/team/freeze")

    db_server.restart()
    api = Api(db_server)
    assert api.get("/api/channels/team").json()["frozen"] is True
    api.post("/api/channels/team/freeze", expect=409)


def test_migrations_at_head(db_server: Server) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head

    async def versions() -> list[str]:
        async with db_server.platform.db.read() as conn:
            return list((await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars())

    assert db_server.call(versions()) == [head]
    # a restart on an up-to-date database changes nothing and loses nothing
    Api(db_server).post("/api/channels", expect=201, json={"name": "team"})
    db_server.restart()
    assert db_server.call(versions()) == [head]
    Api(db_server).get("/api/channels/team")


def test_unpublished_generation_is_published_at_start(db_server: Server, tmp_path: Path) -> None:
    """A crash after the generation's rows were committed but before its publish finished."""
    api = Api(db_server)
    create(api, "team")
    first = build_conda_package(tmp_path, "first")
    api.upload("team", first)
    before = api.get("/api/repo/team/noarch/repodata.json").content
    platform = db_server.platform

    pkg = build_conda_package(tmp_path, "crashed", "2.0", subdir="linux-64", depends=["first"])
    data = pkg.read_bytes()
    writer = platform.blobs.writer(1 << 30)
    writer.write(data)
    blob = writer.finish()
    parsed = read_conda_package(blob.path, pkg.name)
    record = conda_record(parsed, sha256=blob.sha256, md5=blob.md5, size=blob.size)
    new = NewFile(
        type="conda", subdir=parsed.subdir, filename=pkg.name, name=parsed.name, version=parsed.version,
        build=parsed.build, sha256=blob.sha256, md5=blob.md5, size=blob.size,
        record=orjson.dumps(record, option=orjson.OPT_SORT_KEYS), about=orjson.dumps(parsed.about),
        contents=orjson.dumps({"paths": parsed.paths, "readme": parsed.readme}), license="MIT", summary="",
    )
    platform.blobs.commit(blob)

    async def write_generation() -> int | None:
        ch = await platform.channels.get("team")
        gen, _ = await platform.files.add(ch, [new], "written, then the process died")
        return gen

    gen = db_server.call(write_generation())
    info = api.get("/api/channels/team").json()
    assert info["generation"] == gen and info["published_generation"] == gen - 1
    assert api.get("/api/repo/team/noarch/repodata.json").content == before
    api.get("/api/repo/team/linux-64/repodata.json", expect=404)
    api.get(f"/api/repo/team/linux-64/{pkg.name}", expect=404)

    db_server.restart()
    api = Api(db_server)
    info = api.get("/api/channels/team").json()
    assert info["published_generation"] == info["generation"] == gen
    linux = api.get("/api/repo/team/linux-64/repodata.json").json()
    assert linux["packages.conda"] == {pkg.name: record}
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert api.get(f"/api/repo/team/linux-64/{pkg.name}").content == data
    assert first.name in api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]
    assert "crashed" in api.get("/api/repo/team/channeldata.json").json()["packages"]


def test_frozen_channel_stays_unpublished_across_restart(db_server: Server, tmp_path: Path) -> None:
    api = Api(db_server)
    create(api, "team")
    api.upload("team", build_conda_package(tmp_path, "one"))
    before = api.get("/api/repo/team/noarch/repodata.json").content
    api.post("/api/channels/team/freeze")
    api.upload("team", build_conda_package(tmp_path, "two"))
    db_server.restart()  # recovery must not publish a frozen channel
    api = Api(db_server)
    assert api.get("/api/repo/team/noarch/repodata.json").content == before
    api.post("/api/channels/team/unfreeze")
    assert sorted(api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]) == [
        "one-1.0-0.conda", "two-1.0-0.conda"]


# -- the blob store ----------------------------------------------------------------------------
def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_blob_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    writer = store.writer(1 << 20)
    writer.write(b"a" * 1000)
    assert all_files(store.root) != []  # the temp file exists while writing
    writer.abort()
    assert all_files(store.root) == []
    assert os.listdir(store.tmp) == []

    # over the limit mid-way: TooLarge, and the partial temp file is gone
    writer = store.writer(1500)
    writer.write(b"b" * 1000)
    with pytest.raises(TooLarge):
        writer.write(b"b" * 1000)
    assert all_files(store.root) == []
    writer.abort()  # aborting twice is harmless
    assert all_files(store.root) == []


def test_blob_commit_verifies_and_is_atomic(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"some package bytes\n" * 100
    sha = hashlib.sha256(data).hexdigest()

    writer = store.writer(1 << 20)
    writer.write(data)
    blob = writer.finish()
    assert (blob.sha256, blob.md5, blob.size) == (sha, hashlib.md5(data).hexdigest(), len(data))
    with pytest.raises(InvalidPackage):
        store.commit(blob, expect_sha256="0" * 64)
    assert all_files(store.root) == [] and not store.exists(sha)

    writer = store.writer(1 << 20)
    writer.write(data)
    with pytest.raises(InvalidPackage):
        store.commit(writer.finish(), expect_sha256=sha, expect_size=len(data) + 1)
    assert all_files(store.root) == []

    writer = store.writer(1 << 20)
    writer.write(data)
    assert store.commit(writer.finish(), expect_sha256=sha, expect_size=len(data)) is True
    assert all_files(store.root) == [f"{sha[:2]}/{sha}"]
    assert store.path(sha).read_bytes() == data

    # the same bytes again: nothing new, no temp file left
    writer = store.writer(1 << 20)
    writer.write(data)
    assert store.commit(writer.finish()) is False
    assert all_files(store.root) == [f"{sha[:2]}/{sha}"]
    assert os.listdir(store.tmp) == []

    with pytest.raises(ValueError):
        store.path("../../etc/passwd")
