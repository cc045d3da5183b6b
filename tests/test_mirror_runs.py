"""Mirror runs end to end: stop, restart, crash recovery, the schedule on a controlled clock,
active downloads, freeze interplay, our server mirroring another one of ours, and a real client
installing through a passive mirror."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import rattler
import requests
from builders import build_conda_package
from conftest import Api, Server
from rattler import Gateway
from test_mirror import BASE, create, repodata, wait_run
from upstream import UpstreamChannel

from proxy.mirror.clock import ManualClock


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """The tests on the ``server`` fixture run on SQLite and on PostgreSQL."""
    s = Server(tmp_path / "data", database_url).start()
    yield s
    s.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamChannel]:
    up = UpstreamChannel(tmp_path / "up")
    up.add("liba", "1.0", files={"share/liba/a.txt": b"one"})
    up.add("liba", "2.0", files={"share/liba/a.txt": b"two"})
    up.add("appb", "1.0", subdir="linux-64", depends=["liba >=2"], files={"bin/appb": b"#!/bin/sh\necho appb\n"})
    up.index()
    up.start()
    yield up
    up.stop()


@pytest.fixture
def team(api: Api) -> Api:
    api.post("/api/channels", 201, json={"name": "team"})
    return api


def wait_step(api: Api, mirror: str, description: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"{BASE}/{mirror}").json()["current_run"]
        if run and run["description"] == description:
            return run
        assert time.monotonic() < deadline, f"never reached {description!r}: {run}"
        time.sleep(0.02)


def test_stop_mid_run_then_restart(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    hold = upstream.fault("linux-64/repodata.json.zst", "hold")
    create(api, upstream.url, subdirs=["linux-64"], run_now=True)
    run = wait_step(api, "up", "fetching index of linux-64")
    assert run["status"] == "running" and run["step"] == "fetch"
    api.post(f"{BASE}/up/run", 409)  # two runs of one mirror never overlap
    t0 = time.monotonic()
    stopped = api.post(f"{BASE}/up/stop").json()
    assert stopped["status"] == "stopped" and time.monotonic() - t0 < 5, stopped
    assert api.get(f"{BASE}/up").json()["status"] == "stopped"
    assert api.get("/api/channels/team").json()["generation"] == 0  # nothing half-written
    api.post(f"{BASE}/up/stop", 409)  # nothing to stop

    hold.release()
    restarted = api.post(f"{BASE}/up/restart", 202).json()
    assert restarted["trigger"] == "restart"
    run = wait_run(api, "up")
    assert run["status"] == "completed" and run["figures"]["records_published"] == 3, run
    assert [r["status"] for r in api.get(f"{BASE}/up/runs").json()["items"]] == ["completed", "stopped"]

    # restart while a run is going: the going one stops, a new one runs from the beginning
    upstream.clear_faults()
    upstream.fault("noarch/repodata.json.zst", "hold", times=1)
    api.post(f"{BASE}/up/run", 202)
    wait_step(api, "up", "fetching index of noarch")
    api.post(f"{BASE}/up/restart", 202)
    assert wait_run(api, "up")["status"] == "completed"
    assert [r["status"] for r in api.get(f"{BASE}/up/runs").json()["items"]][:2] == ["completed", "stopped"]


def test_a_run_cut_off_by_a_restart_is_failed_and_can_run_again(server: Server, team: Api,
                                                                 upstream: UpstreamChannel) -> None:
    upstream.fault("noarch/repodata.json.zst", "hold")
    create(team, upstream.url, subdirs=[], run_now=True)
    wait_step(team, "up", "fetching index of noarch")
    server.restart()
    m = team.get(f"{BASE}/up").json()
    assert m["current_run"] is None
    assert (m["last_run"]["status"], m["last_run"]["reason"]) == ("failed", "interrupted by a server restart")
    upstream.clear_faults()
    team.post(f"{BASE}/up/run", 202)
    assert wait_run(team, "up")["status"] == "completed"


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_the_schedule_fires_on_the_clock_once_across_processes(tmp_path: Path, upstream: UpstreamChannel,
                                                                 database_url: str | None) -> None:
    one = Server(tmp_path / "data", database_url, mirror_tick_interval=0).start()
    two = None
    try:
        api = Api(one)
        api.post("/api/channels", 201, json={"name": "team"})
        clock = ManualClock(_at("2026-03-01T00:30:00"))
        one.platform.mirrors.engine.clock = clock
        m = create(api, upstream.url, cron="0 * * * *", subdirs=[])
        assert m["next_run_at"].startswith("2026-03-01T01:00:00")
        assert one.call(one.platform.mirrors.engine.tick()) == []
        assert api.get(f"{BASE}/up/runs").json()["total"] == 0
        # a second server process on the same data dir ticks at the same moments: one run, not two
        two = Server(tmp_path / "data", database_url, mirror_tick_interval=0).start()
        two.platform.mirrors.engine.clock = clock
        clock.advance(1800)
        started = one.call(one.platform.mirrors.engine.tick()) + two.call(two.platform.mirrors.engine.tick())
        assert len(started) == 1 and started[0].trigger == "schedule"
        run_id = started[0].id
        owner = one if run_id in one.platform.mirrors.engine.live else two
        run = owner.call(owner.platform.mirrors.engine.wait(run_id))
        assert run.status == "completed", run
        assert one.call(one.platform.mirrors.engine.tick()) == []  # not due again until 02:00
        assert api.get(f"{BASE}/up").json()["next_run_at"].startswith("2026-03-01T02:00:00")
        # the schedule survives a restart
        two.stop()
        two = None
        one.restart()
        assert api.get(f"{BASE}/up").json()["next_run_at"].startswith("2026-03-01T02:00:00")
        one.platform.mirrors.engine.clock = clock
        clock.advance(3600)
        assert [r.trigger for r in one.call(one.platform.mirrors.engine.tick())] == ["schedule"]
    finally:
        if two is not None:
            two.stop()
        one.stop()


def test_active_mode_downloads_every_blob(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    api = team
    create(api, upstream.url, mode="active", concurrency=2, run_now=True)
    run = wait_run(api, "up")
    assert run["status"] == "completed", run
    fig = run["figures"]
    sizes = sum(p.stat().st_size for p in upstream.root.rglob("*.conda"))
    assert (fig["files_total"], fig["files_done"], fig["files_failed"]) == (3, 3, 0)
    assert fig["bytes_total"] == fig["bytes_done"] == sizes
    pkgs = api.get(f"{BASE}/up/packages").json()["items"]
    assert {p["stored"] for p in pkgs} == {"active"}
    for p in upstream.root.rglob("*.conda"):
        assert upstream.hits[f"{p.parent.name}/{p.name}"] == 1
        assert server.platform.blobs.path(hashlib.sha256(p.read_bytes()).hexdigest()).is_file()
    # a client is served from the blob store without touching the upstream
    r = requests.get(f"{server.url}/api/repo/team/noarch/liba-2.0-0.conda", timeout=30)
    assert r.content == (upstream.root / "noarch" / "liba-2.0-0.conda").read_bytes()
    assert upstream.hits["noarch/liba-2.0-0.conda"] == 1
    # the next run skips the blobs it already has
    api.post(f"{BASE}/up/run", 202)
    fig = wait_run(api, "up")["figures"]
    assert (fig["files_present"], fig["files_total"]) == (3, 0)


def test_active_download_failures_fail_the_run(server: Server, team: Api, upstream: UpstreamChannel) -> None:
    upstream.fault("noarch/liba-1.0-0.conda", "status", status=500)
    create(team, upstream.url, mode="active", subdirs=[], run_now=True)
    run = wait_run(team, "up")
    assert run["status"] == "failed" and "1 of 2 package downloads failed" in run["reason"], run
    assert run["figures"]["files_done"] == 1
    upstream.clear_faults()
    team.post(f"{BASE}/up/run", 202)
    fig = wait_run(team, "up")["figures"]
    assert (fig["files_present"], fig["files_total"], fig["files_done"]) == (1, 1, 1)


def test_freeze_create_run_unfreeze(server: Server, team: Api, upstream: UpstreamChannel, tmp_path: Path) -> None:
    api = team
    api.upload("team", build_conda_package(tmp_path / "pk", "own", "1.0"))
    frozen = api.post("/api/channels/team/freeze").json()
    create(api, upstream.url, run_now=True)
    run = wait_run(api, "up")
    assert run["status"] == "completed" and run["generation"] == frozen["generation"] + 1
    # clients keep the frozen generation while the mirror lands in a newer one
    assert sorted(repodata(server, "team", "noarch")["packages.conda"]) == ["own-1.0-0.conda"]
    ch = api.get("/api/channels/team").json()
    assert ch["published_generation"] == frozen["published_generation"] < ch["generation"]
    api.post("/api/channels/team/unfreeze")
    assert sorted(repodata(server, "team", "noarch")["packages.conda"]) == [
        "liba-1.0-0.conda", "liba-2.0-0.conda", "own-1.0-0.conda"]
    assert "appb-1.0-0.conda" in repodata(server, "team", "linux-64")["packages.conda"]


def _install(channel: str, specs: list[str], tmp_path: Path, tag: str) -> list:
    async def go() -> list:
        gateway = Gateway(cache_dir=tmp_path / f"repodata-{tag}")
        records = await rattler.solve([channel], specs, gateway=gateway, platforms=["linux-64", "noarch"])
        await rattler.install(records, tmp_path / f"env-{tag}", cache_dir=tmp_path / f"pkgs-{tag}",
                              show_progress=False)
        return records

    return asyncio.run(go())


def test_rattler_installs_through_a_passive_mirror(server: Server, team: Api, upstream: UpstreamChannel,
                                                  tmp_path: Path) -> None:
    create(team, upstream.url, run_now=True)
    assert wait_run(team, "up")["status"] == "completed"
    assert not [p for p in upstream.hits if p.endswith(".conda")]  # passive: no bytes yet
    channel = f"{server.url}/api/repo/team"
    records = _install(channel, ["appb"], tmp_path, "first")
    assert {r.name.normalized: str(r.version) for r in records} == {"appb": "1.0", "liba": "2.0"}
    assert (tmp_path / "env-first/share/liba/a.txt").read_bytes() == b"two"
    assert (tmp_path / "env-first/bin/appb").read_bytes().startswith(b"#!/bin/sh")
    assert upstream.hits["noarch/liba-2.0-0.conda"] == 1 and upstream.hits["linux-64/appb-1.0-0.conda"] == 1
    # a second client (empty package cache) is served from our blob store: the upstream is not asked again
    _install(channel, ["appb"], tmp_path, "second")
    assert upstream.hits["noarch/liba-2.0-0.conda"] == 1 and upstream.hits["linux-64/appb-1.0-0.conda"] == 1
    pkgs = {p["filename"]: p["stored"] for p in team.get(f"{BASE}/up/packages").json()["items"]}
    assert pkgs == {"appb-1.0-0.conda": "active", "liba-2.0-0.conda": "active", "liba-1.0-0.conda": "passive"}


def test_our_server_mirrors_a_private_channel_of_another(tmp_path: Path, server: Server, team: Api) -> None:
    source = Server(tmp_path / "source").start()
    try:
        src = Api(source)
        src.post("/api/channels", 201, json={"name": "priv", "private": True})
        pk = tmp_path / "pk"
        src.upload("priv", build_conda_package(pk, "tool", "1.0", subdir="linux-64", depends=["helper"]),
                   build_conda_package(pk, "helper", "0.1"))
        src.post("/api/users", 201, json={"name": "mirror-bot"})
        src.post("/api/users/mirror-bot/grants", json={"permission": "channel.read:priv"})
        token = src.post("/api/tokens", 201, json={"user": "mirror-bot"}).json()["token"]
        # without the token the private channel does not exist
        create(team, f"{source.url}/api/repo/priv", name="notoken", run_now=True)
        run = wait_run(team, "notoken")
        assert run["status"] == "failed" and "no conda index found" in run["reason"], run
        m = create(team, f"{source.url}/t/{token}/api/repo/priv", run_now=True)
        assert token not in str(m)
        run = wait_run(team, "up")
        assert run["status"] == "completed", run
        assert set(run["figures"]["subdirs"]) == {"linux-64", "noarch"}  # from the source's channeldata.json
        assert run["figures"]["records_published"] == 2
        assert list(repodata(server, "team", "linux-64")["packages.conda"]) == ["tool-1.0-0.conda"]
        got = requests.get(f"{server.url}/api/repo/team/noarch/helper-0.1-0.conda", timeout=30)
        want = requests.get(f"{source.url}/t/{token}/api/repo/priv/noarch/helper-0.1-0.conda", timeout=30)
        assert got.status_code == 200 and got.content == want.content
        assert token not in team.get(f"{BASE}/up/runs").text
    finally:
        source.stop()


def test_stop_from_another_process_and_delete_while_running(tmp_path: Path, upstream: UpstreamChannel,
                                                             database_url: str | None) -> None:
    one = Server(tmp_path / "data", database_url, mirror_heartbeat_interval=0.2).start()
    two = Server(tmp_path / "data", database_url, mirror_heartbeat_interval=0.2).start()
    try:
        a, b = Api(one), Api(two, token=one.admin_token)
        a.post("/api/channels", 201, json={"name": "team"})
        upstream.fault("noarch/repodata.json.zst", "hold")
        create(a, upstream.url, subdirs=[], run_now=True)
        wait_step(a, "up", "fetching index of noarch")
        b.post(f"{BASE}/up/run", 409)  # the other process sees the live run too
        asked = b.post(f"{BASE}/up/stop").json()  # the run lives in the first process
        assert asked["status"] in ("stopping", "stopped")
        assert wait_run(b, "up", timeout=10)["status"] == "stopped"

        # delete stops a running run first; the packages of earlier runs stay
        upstream.clear_faults()
        a.post(f"{BASE}/up/run", 202)
        assert wait_run(a, "up")["status"] == "completed"
        upstream.fault("noarch/repodata.json.zst", "hold")
        a.post(f"{BASE}/up/run", 202)
        wait_step(a, "up", "fetching index of noarch")
        t0 = time.monotonic()
        a.request("DELETE", f"{BASE}/up")
        assert time.monotonic() - t0 < 10
        assert a.get(BASE).json()["total"] == 0
        assert sorted(repodata(one, "team", "noarch")["packages.conda"]) == ["liba-1.0-0.conda", "liba-2.0-0.conda"]
    finally:
        two.stop()
        one.stop()


def test_runs_beyond_the_limit_wait_queued(tmp_path: Path, upstream: UpstreamChannel) -> None:
    one = Server(tmp_path / "data", mirror_max_runs=1).start()
    try:
        api = Api(one)
        api.post("/api/channels", 201, json={"name": "team"})
        hold = upstream.fault("noarch/repodata.json.zst", "hold")
        create(api, upstream.url, name="first", subdirs=[], run_now=True)
        wait_step(api, "first", "fetching index of noarch")
        second = create(api, upstream.url, name="second", subdirs=[], run_now=True)
        assert second["current_run"]["status"] == "queued"
        assert api.get(f"{BASE}/second").json()["current_run"]["description"] == "waiting to start"
        assert api.post(f"{BASE}/second/stop").json()["status"] == "stopped"  # a queued run stops at once
        api.post(f"{BASE}/second/run", 202)
        hold.release()
        assert wait_run(api, "first")["status"] == "completed"
        assert wait_run(api, "second")["status"] == "completed"
    finally:
        one.stop()


def test_a_run_of_another_host_counts_until_its_heartbeat_goes_stale(server: Server, team: Api,
                                                                     upstream: UpstreamChannel) -> None:
    """A run row owned by a process on another host: live while it heartbeats, failed once it stops."""
    create(team, upstream.url, subdirs=[])
    engine = server.platform.mirrors.engine
    mirror = server.call(server.platform.mirrors.get("team", "up"))
    other = server.call(engine.store.start_run(mirror.id, trigger="manual", owner="elsewhere:4242:abc",
                                               now=time.time(), is_dead=engine.is_dead, dead_reason="x"))
    r = team.post(f"{BASE}/up/run", 409)
    assert f"already has run {other.id}" in r.json()["error"]["message"]
    assert server.call(engine.tick()) == []
    assert server.call(engine.store.run(other.id)).status == "queued"  # still heartbeating: left alone
    stale = time.time() - server.platform.config.mirror_stale_after - 1
    server.call(engine.store.update_run(other.id, heartbeat_at=stale))
    server.call(engine.tick())
    dead = server.call(engine.store.run(other.id))
    assert (dead.status, dead.reason) == ("failed", "interrupted: its server stopped sending heartbeats")
    team.post(f"{BASE}/up/run", 202)
    assert wait_run(team, "up")["status"] == "completed"


def test_the_background_scheduler_fires_due_mirrors(tmp_path: Path, upstream: UpstreamChannel) -> None:
    one = Server(tmp_path / "data", mirror_tick_interval=0.1).start()
    try:
        api = Api(one)
        api.post("/api/channels", 201, json={"name": "team"})
        clock = ManualClock(_at("2026-03-01T00:00:30"))
        one.platform.mirrors.engine.clock = clock
        create(api, upstream.url, cron="* * * * *", subdirs=[])
        time.sleep(0.5)  # several ticks of the loop: nothing is due yet
        assert api.get(f"{BASE}/up/runs").json()["total"] == 0
        clock.advance(60)
        run = wait_run(api, "up")
        assert (run["status"], run["trigger"]) == ("completed", "schedule")
        assert api.get(f"{BASE}/up").json()["next_run_at"].startswith("2026-03-01T00:02:00")
    finally:
        one.stop()
