"""Publishing, white-box: the publish-time policy seam (contract A: ``Publisher.policy_for`` filters
uploaded files out of every rendered index, a changed policy fingerprint re-renders in full, no
policy filters nothing) and CEP-16 shards served from a render's shard pack.

The policy test sets the seam itself with a real compiled policy (conda_platform_plugin.policy);
the policy API and its end-to-end tests belong to the policy module's own tests.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import orjson
import requests
import zstandard
from builders import build_conda_package
from conftest import Api, Server

from conda_platform_plugin.policy import CompiledPolicy, Policy


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _published(api: Api, subdir: str) -> dict[str, set[str]]:
    """What a client sees of the subdir: filenames per index, and names with a shard / channeldata."""
    base = f"/api/repo/team/{subdir}"
    repodata = api.get(f"{base}/repodata.json").json()
    current = api.get(f"{base}/current_repodata.json").json()
    index = msgpack.unpackb(_unzstd(api.get(f"{base}/repodata_shards.msgpack.zst").content))
    shard_files: set[str] = set()
    for digest in index["shards"].values():
        shard = msgpack.unpackb(_unzstd(api.get(f"{base}/shards/{digest.hex()}.msgpack.zst").content))
        shard_files |= set(shard["packages"]) | set(shard["packages.conda"])
    return {
        "repodata": set(repodata["packages"]) | set(repodata["packages.conda"]),
        "zst": set(orjson.loads(_unzstd(api.get(f"{base}/repodata.json.zst").content))["packages.conda"]),
        "current": set(current["packages"]) | set(current["packages.conda"]),
        "shards": shard_files,
        "shard_names": set(index["shards"]),
        "channeldata": set(api.get("/api/repo/team/channeldata.json").json()["packages"]),
    }


def test_policy_for_filters_uploads_and_refingerprints(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "good", "1.0"), build_conda_package(pk, "bad-thing", "1.0"))
    before = _published(api, "noarch")
    assert before["repodata"] == {"good-1.0-0.conda", "bad-thing-1.0-0.conda"}

    policy: dict[str, CompiledPolicy | None] = {"now": None}
    calls: list[int] = []

    async def policy_for(channel_id: int) -> CompiledPolicy | None:
        calls.append(channel_id)
        return policy["now"]

    server.platform.publisher.policy_for = policy_for
    policy["now"] = Policy.from_json({"name": "no-bad", "rules": [{"kind": "name", "exclude": ["bad*"]}]}).compile()

    # the next publish (any change) renders in full with the policy: bad-thing is gone everywhere
    api.upload("team", build_conda_package(pk, "other", "1.0"))
    seen = _published(api, "noarch")
    assert calls, "the publish asked for the channel's policy"
    want = {"good-1.0-0.conda", "other-1.0-0.conda"}
    assert seen["repodata"] == seen["zst"] == seen["current"] == seen["shards"] == want
    assert seen["shard_names"] == seen["channeldata"] == {"good", "other"}

    # incremental renders keep filtering (same fingerprint), including a newer excluded version
    api.upload("team", build_conda_package(pk, "bad-thing", "2.0"), build_conda_package(pk, "good", "2.0"))
    seen = _published(api, "noarch")
    want = {"good-1.0-0.conda", "good-2.0-0.conda", "other-1.0-0.conda"}
    assert seen["repodata"] == seen["shards"] == want
    assert seen["current"] == {"good-2.0-0.conda", "other-1.0-0.conda"}
    assert "bad-thing" not in seen["channeldata"]
    # the package files stay in the channel (the policy filters the indexes, not the storage)
    assert api.get("/api/channels/team/artifacts/conda/bad-thing").status_code == 200

    # no policy any more: a different fingerprint, so everything is rendered again, unfiltered
    policy["now"] = None
    api.upload("team", build_conda_package(pk, "late", "1.0"))
    seen = _published(api, "noarch")
    assert {"bad-thing-1.0-0.conda", "bad-thing-2.0-0.conda"} <= seen["repodata"] == seen["shards"]
    assert "bad-thing" in seen["channeldata"] and "bad-thing" in seen["shard_names"]


def test_shards_are_served_from_the_render_layout(server: Server, api: Api, tmp_path: Path) -> None:
    """A process that did not render a generation (a restart, another server process) finds its shards
    through the render's layout: the same bytes, named and tagged by their sha256, 304 on a match."""
    import hashlib

    api.post("/api/channels", 201, json={"name": "team"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "one", "1.0"), build_conda_package(pk, "two", "1.0"))
    api.upload("team", build_conda_package(pk, "one", "2.0"))  # incremental: "two" keeps its shard
    index = msgpack.unpackb(_unzstd(api.get("/api/repo/team/noarch/repodata_shards.msgpack.zst").content))
    urls = {name: f"/api/repo/team/noarch/shards/{d.hex()}.msgpack.zst" for name, d in index["shards"].items()}
    first = {name: api.get(url).content for name, url in urls.items()}
    server.platform.publisher._shards.clear()  # as after a restart
    for name, url in urls.items():
        r = api.get(url)
        assert r.content == first[name]
        digest = hashlib.sha256(r.content).hexdigest()
        assert url.endswith(f"/{digest}.msgpack.zst") and r.headers["ETag"] == f'"{digest}"'
        assert api.get(url, expect=304, headers={"If-None-Match": f'W/"{digest}"'}).content == b""
    shard = msgpack.unpackb(_unzstd(first["one"]))
    assert set(shard["packages.conda"]) == {"one-1.0-0.conda", "one-2.0-0.conda"}
    api.get("/api/repo/team/noarch/shards/" + "f" * 64 + ".msgpack.zst", expect=404)


def test_shards_of_a_render_made_before_shard_packs(server: Server, api: Api, tmp_path: Path) -> None:
    """A generation rendered by an older version (one file per shard, an older layout), e.g. the
    published generation of a frozen channel, keeps serving its shards after an upgrade."""
    api.post("/api/channels", 201, json={"name": "team"})
    api.upload("team", build_conda_package(tmp_path / "pk", "one", "1.0"))
    index = msgpack.unpackb(_unzstd(api.get("/api/repo/team/noarch/repodata_shards.msgpack.zst").content))
    url = f"/api/repo/team/noarch/shards/{index['shards']['one'].hex()}.msgpack.zst"
    data = api.get(url).content
    publisher = server.platform.publisher
    served = server.call(server.platform.serving.lookup("team"))
    render = publisher.subdir_dir(served.id, "noarch", served.subdirs["noarch"])
    (render / "layout.msgpack").write_bytes(msgpack.packb({"bases": {}, "names": []}))  # an older layout
    (render / "shards.pack").unlink()
    legacy = render.parent / "shards"
    legacy.mkdir()
    (legacy / url.rsplit("/", 1)[1]).write_bytes(data)
    publisher._shards.clear()
    assert api.get(url).content == data
    api.get(url.replace(url[-76:-70], "ffffff"), expect=404)


def test_superseded_renders_lose_their_index_files(server: Server, api: Api, tmp_path: Path) -> None:
    """Only the newest render of a subdir is served: the next render deletes the older ones' index
    files (their shard packs stay, newer layouts point into them), so publishing does not grow
    the data directory by a whole repodata.json each time."""
    api.post("/api/channels", 201, json={"name": "team"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "one", "1.0"), build_conda_package(pk, "two", "1.0"))
    for version in ("2.0", "3.0", "4.0"):
        api.upload("team", build_conda_package(pk, "one", version))
    served = server.call(server.platform.serving.lookup("team"))
    gens = sorted(int(p.name) for p in server.platform.publisher.subdir_dir(served.id, "noarch", 0).parent.iterdir()
                  if p.name.isdigit())
    assert len(gens) >= 4 and gens[-1] == served.subdirs["noarch"]
    index_files = {"repodata.json", "repodata.json.zst", "current_repodata.json", "current_repodata.json.zst",
                   "repodata_shards.msgpack.zst", "layout.msgpack"}
    for gen in gens:
        names = {p.name for p in server.platform.publisher.subdir_dir(served.id, "noarch", gen).iterdir()}
        # the served render and the one before it (the last it spliced from) keep their indexes;
        # older ones keep only their shard pack
        assert names == (index_files | {"shards.pack"} if gen >= gens[-2] else {"shards.pack"}), (gen, names)
    channeldata = server.platform.publisher.channeldata_path(served.id, served.gen).parent
    assert sorted(p.name for p in channeldata.iterdir()) == [f"{served.gen - 1}.json", f"{served.gen}.json"]
    published = _published(api, "noarch")  # every shard still served, from the packs of older renders
    assert published["shards"] == published["repodata"] == {
        "one-1.0-0.conda", "one-2.0-0.conda", "one-3.0-0.conda", "one-4.0-0.conda", "two-1.0-0.conda"}


def test_superseded_renders_of_other_types_go_entirely(server: Server, api: Api, tmp_path: Path) -> None:
    """A CRAN (or PyPI) render is self-contained (a newer one hard-links what it reuses): the renders
    older than the one served before the newest are deleted whole."""
    from rbuilders import build_r_source

    api.post("/api/channels", 201, json={"name": "rteam"})
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):
        api.upload("rteam", build_r_source(tmp_path / version, "tinyr", version), subdir="cran-src")
    served = server.call(server.platform.serving.lookup("rteam"))
    root = server.platform.publisher.subdir_dir(served.id, "cran-src", 0).parent
    gens = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    assert len(gens) == 2 and gens[-1] == served.subdirs["cran-src"]
    packages = api.get("/api/repo/rteam/cran/src/contrib/PACKAGES").text
    assert "Version: 1.0.3" in packages
    assert api.get("/api/repo/rteam/cran/src/contrib/Archive/tinyr/tinyr_1.0.1.tar.gz").content



def test_another_process_serving_a_pruned_generation_reloads(server: Server, api: Api, tmp_path: Path) -> None:
    """A second server process on the same data dir caches the published generation (here for an
    hour); two publishes by this one delete that generation's indexes, and the other process then
    answers from the newest instead of a 404."""
    from test_mirror_fetch import _serve_process

    api.post("/api/channels", 201, json={"name": "team"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "one", "1.0"))
    with _serve_process(server.data_dir, CONDA_PLATFORM_SERVING_TTL="3600") as (other, _):
        def names(path: str) -> set[str]:
            r = requests.get(f"{other}/api/repo/team/{path}", timeout=30)
            assert r.status_code == 200, r.text
            return set(r.json()["packages.conda"]) if "repodata" in path else set(r.json()["packages"])

        assert names("noarch/repodata.json") == {"one-1.0-0.conda"}  # cached there from now on
        for version in ("2.0", "3.0"):
            api.upload("team", build_conda_package(pk, "one", version))
        assert names("noarch/repodata.json") == {"one-1.0-0.conda", "one-2.0-0.conda", "one-3.0-0.conda"}
        assert names("channeldata.json") == {"one"}
        assert requests.get(f"{other}/api/repo/team/noarch/repodata.jlap", timeout=30).status_code == 404


def test_publishes_of_one_channel_wait_for_each_other_across_processes(server: Server, api: Api,
                                                                       tmp_path: Path) -> None:
    """Another server process publishing the channel holds its publish lock (a flock on the shared
    data dir): an upload's publish here waits for it, then publishes both."""
    import fcntl
    import os
    import threading

    api.post("/api/channels", 201, json={"name": "team"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "one", "1.0"))
    served = server.call(server.platform.serving.lookup("team"))
    lock = server.platform.publisher.publish_lock(served.id)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the other process does while it publishes
    done: dict = {}
    uploading = threading.Thread(target=lambda: done.update(r=api.upload("team", build_conda_package(pk, "two", "1.0"))))
    uploading.start()
    uploading.join(1.0)
    assert uploading.is_alive() and not done  # its publish waits for the lock
    assert set(api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]) == {"one-1.0-0.conda"}
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    uploading.join(60)
    assert done["r"]["files"][0]["name"] == "two"
    assert set(api.get("/api/repo/team/noarch/repodata.json").json()["packages.conda"]) == {
        "one-1.0-0.conda", "two-1.0-0.conda"}
