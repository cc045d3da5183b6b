"""A real conda client (py-rattler) solves and installs environments from the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rattler
from builders import build_conda_package
from conftest import Api, Server
from rattler import Gateway, SourceConfig


@pytest.fixture
def team_channel(server: Server, api: Api, tmp_path: Path) -> list[str]:
    """team: liba 1.0/2.0 (noarch), appb (linux-64, needs liba>=2 and libc); team/extra: libc."""
    api.post("/api/channels", 201, json={"name": "team"})
    api.post("/api/channels/team/subchannels", 201, json={"name": "extra"})
    pk = tmp_path / "pk"
    api.upload(
        "team",
        build_conda_package(pk, "liba", "1.0", files={"share/liba/a.txt": b"one"}),
        build_conda_package(pk, "liba", "2.0", files={"share/liba/a.txt": b"two"}),
        build_conda_package(pk, "appb", "1.0", subdir="linux-64", depends=["liba >=2", "libc"],
                            files={"bin/appb": b"#!/bin/sh\necho appb\n"}, fmt=".tar.bz2"),
    )
    api.upload("team/extra", build_conda_package(pk, "libc", "1.0", files={"share/libc/c.txt": b"c"}))
    return [f"{server.url}/api/repo/team", f"{server.url}/api/repo/team/extra"]


def _solve_install(channels: list[str], tmp_path: Path, *, sharded: bool) -> tuple[list, Path]:
    cache = tmp_path / f"repodata-cache-{sharded}"
    prefix = tmp_path / f"env-{sharded}"

    async def go() -> list:
        gateway = Gateway(cache_dir=cache, default_config=SourceConfig(sharded_enabled=sharded))
        records = await rattler.solve(channels, ["appb"], gateway=gateway, platforms=["linux-64", "noarch"])
        await rattler.install(records, prefix, cache_dir=tmp_path / f"pkgs-{sharded}", show_progress=False)
        return records

    return asyncio.run(go()), prefix


@pytest.mark.parametrize("sharded", [False, True], ids=["monolithic", "sharded"])
def test_solve_and_install(team_channel: list[str], tmp_path: Path, sharded: bool) -> None:
    records, prefix = _solve_install(team_channel, tmp_path, sharded=sharded)
    got = {r.name.normalized: (str(r.version), r.url) for r in records}
    assert got["liba"][0] == "2.0"
    assert got["libc"][1].startswith(team_channel[1] + "/noarch/")  # from the subchannel
    assert (prefix / "share/liba/a.txt").read_bytes() == b"two"
    assert (prefix / "bin/appb").read_bytes().startswith(b"#!/bin/sh")
    assert (prefix / "share/libc/c.txt").read_bytes() == b"c"
    cached = [p.name for p in (tmp_path / f"repodata-cache-{sharded}").rglob("*")]
    shard_files = [n for n in cached if n.endswith(".msgpack")]
    if sharded:  # rattler took the CEP-16 path: it fetched shards, not repodata.json
        assert shard_files
        assert not [n for n in cached if n.endswith(".json") and not n.endswith(".info.json")]
    else:
        assert not shard_files


def test_frozen_channel_keeps_solving_the_frozen_generation(server: Server, api: Api, team_channel: list[str],
                                                            tmp_path: Path) -> None:
    api.post("/api/channels/team/freeze")
    api.upload("team", build_conda_package(tmp_path / "pk2", "liba", "3.0"))
    records, _ = _solve_install(team_channel, tmp_path, sharded=False)
    assert {r.name.normalized: str(r.version) for r in records}["liba"] == "2.0"
    api.post("/api/channels/team/unfreeze")
    records, _ = _solve_install(team_channel, tmp_path / "after", sharded=True)
    assert {r.name.normalized: str(r.version) for r in records}["liba"] == "3.0"
