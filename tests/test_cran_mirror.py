"""CRAN mirrors of a real CRAN-style repository served from 127.0.0.1 (tiny packages built here,
PACKAGES written as write_PACKAGES writes it): passive (bytes fetched on first request, checked
against MD5sum), active, conditional GETs, policies, bad upstream bytes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Api, Server
from rbuilders import build_r_binary, build_r_source, write_cran_repo
from upstream import UpstreamChannel

from conda_platform_plugin.rformats import parse_dcf

BASE = "/api/channels/mc/mirrors"


@pytest.fixture
def cran_up(tmp_path: Path) -> Iterator[UpstreamChannel]:
    pkgs = tmp_path / "pkgs"
    up = UpstreamChannel(tmp_path / "up", prefix="/cran")
    write_cran_repo(up.root, [
        build_r_source(pkgs, "rdep", "0.2.1", License="MIT + file LICENSE"),
        build_r_source(pkgs, "rapp", "1.0", Imports="rdep (>= 0.2)", License="MIT + file LICENSE"),
        build_r_source(pkgs, "rgpl", "3.1-2", License="GPL-3", Depends="R (>= 4.0), rdep (>= 9.0)"),
    ])
    up.start()
    yield up
    up.stop()


def wait_run(api: Api, name: str, run_id: int | None = None) -> dict:
    deadline = time.monotonic() + 60
    while True:
        m = api.get(f"{BASE}/{name}").json()
        run = m["current_run"] or m["last_run"]
        if run and run["status"] in ("completed", "failed", "stopped") and run["id"] == (run_id or run["id"]):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def mirror(api: Api, up: UpstreamChannel, mode: str = "passive", **body) -> dict:  # noqa: ANN003
    api.post("/api/channels", 201, json={"name": "mc"})
    api.post(BASE, 201, json={"name": "up", "type": "cran", "mode": mode, "source_url": up.url, "run_now": True,
                              **body})
    run = wait_run(api, "up")
    assert run["status"] == "completed", run
    return run


@pytest.fixture
def db_server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    """These tests run on SQLite and on PostgreSQL."""
    s = Server(tmp_path / "data", database_url).start()
    yield s
    s.stop()


def test_passive_mirror_serves_packages_and_fetches_each_file_once(db_server: Server,
                                                                   cran_up: UpstreamChannel) -> None:
    server, api = db_server, Api(db_server)
    run = mirror(api, cran_up)
    assert run["figures"]["records_seen"] == 3 and run["figures"]["records_published"] == 3, run
    base = f"{server.url}/api/repo/mc/cran/src/contrib"
    ours = requests.get(f"{base}/PACKAGES", timeout=30).text
    theirs = (cran_up.root / "src" / "contrib" / "PACKAGES").read_text()
    assert ours == theirs  # the same stanzas, byte for byte (MD5sum included)
    assert cran_up.hits["src/contrib/rapp_1.0.tar.gz"] == 0  # passive: no bytes yet
    row = api.get("/api/channels/mc/files/cran-src/rapp_1.0.tar.gz").json()
    assert row["sha256"].startswith("0" * 32) and row["size"] == 0  # not known until the first download
    want = (cran_up.root / "src" / "contrib" / "rapp_1.0.tar.gz").read_bytes()
    assert requests.head(f"{base}/rapp_1.0.tar.gz", timeout=30).status_code == 200
    assert cran_up.hits["src/contrib/rapp_1.0.tar.gz"] == 0  # a HEAD downloads nothing
    assert requests.get(f"{base}/rapp_1.0.tar.gz", timeout=30).content == want
    assert requests.get(f"{base}/rapp_1.0.tar.gz", timeout=30).content == want
    assert cran_up.hits["src/contrib/rapp_1.0.tar.gz"] == 1
    row = api.get("/api/channels/mc/files/cran-src/rapp_1.0.tar.gz").json()
    assert (row["sha256"], row["size"]) == (hashlib.sha256(want).hexdigest(), len(want))
    part = requests.get(f"{base}/rapp_1.0.tar.gz", headers={"Range": "bytes=0-9"}, timeout=30)
    assert part.status_code == 206 and part.content == want[:10]
    assert requests.head(f"{base}/rapp_1.0.tar.gz", timeout=30).headers["Content-Length"] == str(len(want))
    # a second run: PACKAGES unchanged upstream (conditional GET), nothing rewritten
    again = wait_run(api, "up", api.post(f"{BASE}/up/run", 202).json()["id"])
    assert again["status"] == "completed" and again["figures"]["added"] == 0 and again["figures"]["removed"] == 0
    assert api.get("/api/channels/mc/files/cran-src/rapp_1.0.tar.gz").json()["sha256"] == row["sha256"]
    # the dependency report resolves R dependencies among the channel's R packages
    report = api.get(f"{BASE}/up/report").json()
    assert (report["roots"], report["satisfied"]) == (3, False)  # rapp's rdep (>= 0.2) is there, rgpl's is not
    assert [(m["spec"], m["needed_by"]) for m in report["missing"]] == [("rdep (>= 9.0)", ["cran-src/rgpl_3.1-2.tar.gz"])]
    # the artifact views know mirrored R packages too
    art = api.get("/api/channels/mc/artifacts/cran/rapp").json()
    assert (art["type"], art["latest_version"], art["license"]) == ("cran", "1.0", "MIT + file LICENSE")


def test_bad_upstream_bytes_are_never_stored(server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    mirror(api, cran_up)
    base = f"{server.url}/api/repo/mc/cran/src/contrib"
    cran_up.fault("src/contrib/rdep_*", "wrong", times=1)
    r = requests.get(f"{base}/rdep_0.2.1.tar.gz", timeout=30)
    assert r.status_code == 502 and "do not match" in r.json()["error"]["message"]
    assert api.get("/api/channels/mc/files/cran-src/rdep_0.2.1.tar.gz").json()["sha256"].startswith("0" * 32)
    assert not [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"]
    good = (cran_up.root / "src" / "contrib" / "rdep_0.2.1.tar.gz").read_bytes()
    assert requests.get(f"{base}/rdep_0.2.1.tar.gz", timeout=30).content == good  # the next asker gets it


def test_active_mirror_stores_every_kept_file_and_filters_by_license(server: Server, api: Api,
                                                                     cran_up: UpstreamChannel) -> None:
    api.post("/api/policies", 201, json={"name": "no-gpl3", "rules": [{"kind": "license", "deny_families": ["GPL3"]}]})
    run = mirror(api, cran_up, mode="active", policy="no-gpl3")
    fig = run["figures"]
    assert fig["filtered_by_rule"] == {"license": 1} and fig["records_published"] == 2, fig
    assert cran_up.hits["src/contrib/rgpl_3.1-2.tar.gz"] == 0
    pkgs = api.get(f"{BASE}/up/packages").json()["items"]
    assert {(p["filename"], p["stored"]) for p in pkgs} == {("rapp_1.0.tar.gz", "active"),
                                                            ("rdep_0.2.1.tar.gz", "active")}
    filtered = api.get(f"{BASE}/up/packages", params={"state": "filtered"}).json()["items"]
    assert [(f["name"], f["rule"]) for f in filtered] == [("rgpl", "license")]
    base = f"{server.url}/api/repo/mc/cran/src/contrib"
    assert [s["Package"] for s in parse_dcf(requests.get(f"{base}/PACKAGES", timeout=30).text)] == ["rapp", "rdep"]
    cran_up.stop()  # stored: served without the upstream
    want = (cran_up.root / "src" / "contrib" / "rdep_0.2.1.tar.gz").read_bytes()
    assert requests.get(f"{base}/rdep_0.2.1.tar.gz", timeout=30).content == want


def test_cran_mirror_settings_are_checked(api: Api, cran_up: UpstreamChannel) -> None:
    api.post("/api/channels", 201, json={"name": "mc"})
    err = api.post(BASE, 400, json={"name": "x", "type": "cran", "source_url": cran_up.url,
                                    "subdirs": ["linux-64"]}).json()["error"]
    assert "unknown cran subdir" in err["message"]
    m = api.post(BASE, 201, json={"name": "x", "type": "cran", "source_url": cran_up.url,
                                  "subdirs": ["cran-src", "cran-bin-windows-4.2"], "run_now": True}).json()
    assert m["type"] == "cran" and m["subdirs"] == ["cran-bin-windows-4.2", "cran-src"]
    run = wait_run(api, "x")  # the upstream has no Windows binaries: that subdir is missing, the run completes
    assert run["status"] == "completed" and run["figures"]["subdirs_missing"] == ["cran-bin-windows-4.2"], run


def test_mirrors_of_binaries_with_sha256_and_of_another_server(server: Server, api: Api, tmp_path: Path) -> None:
    """Windows binaries of an index that has SHA256 (as R-hub's have) into cran-bin-windows-4.2, then
    a passive mirror of this server's own channel (server to server)."""
    up = UpstreamChannel(tmp_path / "up", prefix="/cran")
    win = build_r_binary(tmp_path / "w", "winpkg", "2.1", kind="windows")
    write_cran_repo(up.root, [win], sha256=True, contrib="bin/windows/contrib/4.2")
    up.start()
    try:
        api.post("/api/channels", 201, json={"name": "mc"})
        api.post(BASE, 201, json={"name": "win", "type": "cran", "source_url": up.url, "run_now": True,
                                  "subdirs": ["cran-bin-windows-4.2"]})
        assert wait_run(api, "win")["status"] == "completed"
        f = api.get("/api/channels/mc/files/cran-bin-windows-4.2/winpkg_2.1.zip").json()
        assert f["record"]["sha256"] == hashlib.sha256(win.read_bytes()).hexdigest()
        url = f"{server.url}/api/repo/mc/cran/bin/windows/contrib/4.2/winpkg_2.1.zip"
        assert requests.get(url, timeout=30).content == win.read_bytes()
    finally:
        up.stop()
    # this server's channel as the upstream of another channel's mirror
    api.post("/api/channels", 201, json={"name": "hosted"})
    src = build_r_source(tmp_path, "hostedpkg", "0.5", Imports="methods")
    api.upload("hosted", src)
    api.post("/api/channels", 201, json={"name": "copy"})
    api.post("/api/channels/copy/mirrors", 201, json={"name": "ours", "type": "cran", "run_now": True,
                                                      "source_url": f"{server.url}/api/repo/hosted/cran"})
    deadline = time.monotonic() + 60
    while (m := api.get("/api/channels/copy/mirrors/ours").json())["last_run"] is None or \
            m["last_run"]["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert m["last_run"]["status"] == "completed", m["last_run"]
    got = requests.get(f"{server.url}/api/repo/copy/cran/src/contrib/hostedpkg_0.5.tar.gz", timeout=30)
    assert got.status_code == 200 and got.content == src.read_bytes()


def test_cli_creates_and_shows_a_cran_mirror(server: Server, api: Api, cran_up: UpstreamChannel) -> None:
    from test_cli import cli

    api.post("/api/channels", 201, json={"name": "mc"})
    cli(server, "mirror", "create", "mc", "up", "--type", "cran", "--source", cran_up.url, "--run-now")
    assert wait_run(api, "up")["status"] == "completed"
    shown = cli(server, "mirror", "show", "mc", "up", "--packages").stdout
    assert "cran" in shown and "rapp_1.0.tar.gz" in shown and "passive" in shown, shown
    report = cli(server, "mirror", "report", "mc", "up").stdout
    assert "rdep (>= 9.0)" in report and "rgpl_3.1-2.tar.gz" in report, report
