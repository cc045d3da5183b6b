"""``conda-platform mirror …`` run as the installed executable against a real server and upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, Server
from terminal import run_on_terminal
from test_cli import EXE, _env, cli, cli_json, error_line
from upstream import UpstreamChannel


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamChannel]:
    up = UpstreamChannel(tmp_path / "up", token="tok-secret")
    up.add("liba", "2.0")
    up.add("appb", "1.0", subdir="linux-64", depends=["liba", "libz"])
    up.index()
    up.start()
    yield up
    up.stop()


def test_mirror_commands(server: Server, api: Api, upstream: UpstreamChannel, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    r = cli(server, "mirror", "create", "team", "up", "--source", upstream.url, "--cron", "0 0 * *", code=1)
    assert "invalid cron expression '0 0 * *'" in error_line(r)
    r = cli(server, "mirror", "create", "team", "up", "--source", upstream.url, "--cron", "0 3 * * *")
    assert "created passive mirror team/up of http://127.0.0.1" in r.stdout and "/t/***/" in r.stdout
    assert "tok-secret" not in r.stdout
    r = cli(server, "mirror", "list", "team")
    assert "up" in r.stdout and "0 3 * * *" in r.stdout and "never run" in r.stdout
    assert [m["name"] for m in cli_json(server, "mirror", "list")["items"]] == ["up"]

    # run --wait follows the steps (plain lines without a terminal) and ends with the outcome
    r = cli(server, "mirror", "run", "team", "up", "--wait")
    lines = r.stdout.splitlines()
    assert any("fetching index of" in line for line in lines) or any("[queued]" in line for line in lines), r.stdout
    assert lines[-1].startswith("run #1 of team/up: #1 completed at ")
    assert cli(server, "mirror", "stop", "team", "up", code=1).stderr.startswith("error: mirror 'up' has no run going")

    r = cli(server, "mirror", "show", "team", "up")
    assert "2 seen, 2 published, 0 filtered" in r.stdout and "completed" in r.stdout
    r = cli(server, "mirror", "show", "team", "up", "--packages")
    assert "liba-2.0-0.conda" in r.stdout and "passive" in r.stdout
    shown = cli_json(server, "mirror", "show", "team", "up")
    assert shown["runs"][0]["figures"]["records_published"] == 2

    assert "cannot change" in error_line(cli(server, "mirror", "edit", "team", "up", "--mode", "active", code=1))
    r = cli(server, "mirror", "edit", "team", "up", "--concurrency", "3", "--subdir", "linux-64")
    assert "updated mirror team/up" in r.stdout
    assert cli_json(server, "mirror", "show", "team", "up")["subdirs"] == ["linux-64", "noarch"]

    api.post("/api/policies", 201, json={"name": "newest", "rules": [{"kind": "keep_newest", "count": 1}]})
    assert "policy" in cli(server, "mirror", "edit", "team", "up", "--policy", "nope", code=1).stderr
    r = cli(server, "mirror", "edit", "team", "up", "--policy", "newest")
    assert "newest (the mirror's own)" in r.stdout
    r = cli(server, "mirror", "edit", "team", "up", "--channel-policy")
    assert cli_json(server, "mirror", "show", "team", "up")["effective_policy"] is None

    r = cli(server, "mirror", "report", "team", "up")
    assert "missing" in r.stdout and "libz" in r.stdout and "1 dependency cannot be satisfied" in r.stdout
    out = tmp_path / "report.csv"
    cli(server, "mirror", "report", "team", "up", "--format", "csv", "-o", str(out))
    assert out.read_text().startswith("status,dependency,subdir,resolved_to,direct,needed_by")
    assert cli_json(server, "mirror", "report", "team")["satisfied"] is False

    r = cli(server, "mirror", "restart", "team", "up", "--wait")
    assert r.stdout.splitlines()[-1].startswith("run #2 of team/up: #2 completed")
    assert "refusing to delete mirror up without confirmation" in error_line(
        cli(server, "mirror", "delete", "team", "up", code=1))
    r = cli(server, "mirror", "delete", "team", "up", "--remove-packages", "-y")
    assert r.stdout.strip() == "deleted mirror team/up and 2 package(s)"
    assert cli_json(server, "mirror", "list", "team")["items"] == []


def test_run_wait_shows_live_progress_on_a_terminal(server: Server, api: Api, upstream: UpstreamChannel) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    cli(server, "mirror", "create", "team", "up", "--source", upstream.url, "--subdir", "linux-64")
    upstream.fault("linux-64/repodata.json.zst", "slow", delay=1.5)
    code, out, shown = run_on_terminal([str(EXE), "mirror", "run", "team", "up", "--wait"], _env(server.url, server.admin_token))
    assert code == 0, (out, shown)
    assert b"fetching index of linux-64" in shown  # the live status line, on the terminal only
    assert b"fetching index" not in out and out.decode().strip().startswith("run #1 of team/up: #1 completed")
