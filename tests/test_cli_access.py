"""The ``conda-platform`` access commands (login, token, user, audit), run as a subprocess against real servers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from builders import build_conda_package
from conftest import Server

EXE = Path(sys.executable).with_name("conda-platform")
if not EXE.exists():
    EXE = Path(shutil.which("conda-platform") or EXE)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Where ``login`` writes: a directory that does not exist yet, so the command has to create it."""
    return tmp_path / "config" / "conda-platform"


class Cli:
    """Runs the executable with a clean environment: no URL, token or login unless given."""

    def __init__(self, config_dir: Path):
        self.config_dir = config_dir

    def env(self, url: str | None, token: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDA_PLATFORM_")}
        env["CONDA_PLATFORM_CONFIG_DIR"] = str(self.config_dir)
        env["COLUMNS"] = "200"
        if url:
            env["CONDA_PLATFORM_URL"] = url
        if token:
            env["CONDA_PLATFORM_TOKEN"] = token
        return env

    def __call__(self, *args: str, url: str | None = None, token: str | None = None, code: int = 0,
                 stdin: str | None = None) -> subprocess.CompletedProcess:
        assert EXE.exists(), "conda-platform is not installed: pip install -e '.[test]'"
        r = subprocess.run([str(EXE), *args], env=self.env(url, token), capture_output=True, text=True,
                           input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=60)
        assert r.returncode == code, f"{args}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return r

    def json(self, *args: str, **kw: object) -> dict:
        return json.loads(self(*args, "--json", **kw).stdout)  # type: ignore[arg-type]


@pytest.fixture
def cli(config_dir: Path) -> Cli:
    return Cli(config_dir)


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_admin_token_bootstraps_a_fresh_data_dir(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    r = cli("token", "create", "--admin", "--data-dir", str(data))
    first = r.stdout.strip()
    assert first.startswith("cpt_") and r.stdout == first + "\n"  # only the secret on stdout, for $(...)
    assert "not shown again" in r.stderr and first not in r.stderr
    second = cli.json("token", "create", "--admin", "--data-dir", str(data))
    assert second["user"] == "admin" and second["bootstrap"] is False and second["token"] != first

    server = Server(data).start()
    try:
        assert server.admin_token is None  # the database had a user: no first-start token this time
        for token in (first, second["token"]):
            me = cli.json("whoami", url=server.url, token=token)
            assert me["name"] == "admin" and me["admin"] is True and me["anonymous"] is False
        cli("channel", "create", "boot", url=server.url, token=first)
        listed = cli.json("token", "list", url=server.url, token=first)["items"]
        assert [t["description"] for t in listed] == ["created on first start", "created with token create --admin"]
    finally:
        server.stop()

    r = cli("token", "create", "--admin", code=2)
    assert "--data-dir" in r.stderr
    r = cli("token", "create", "--admin", "--data-dir", str(data), "--scope", "channels.create", code=2)
    assert "--admin makes an unscoped" in r.stderr
    r = cli("token", "create", "--admin", "--data-dir", str(data), "--database-url", "nosuch://x", code=1)
    assert error_line(r).startswith(f"error: cannot open the platform database of {data}")


def test_login_whoami_logout(cli: Cli, server: Server, config_dir: Path) -> None:
    login_file = config_dir / "login.json"
    r = cli("login", "--url", server.url, "--token", server.admin_token)
    assert r.stdout.strip() == f"logged in to {server.url} as admin (saved in {login_file})"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert json.loads(login_file.read_text()) == {"url": server.url, "token": server.admin_token}
    assert [p.name for p in config_dir.iterdir()] == ["login.json"]  # no temporary file left behind

    # no --url, no --token, no environment: the stored login is used
    cli("channel", "create", "loggedin")
    me = cli.json("whoami")
    assert (me["name"], me["url"], me["admin"]) == ("admin", server.url, True)
    assert "admin" in cli("whoami").stdout
    # the stored token goes only to the server it was stored for
    other = server.url.replace("127.0.0.1", "localhost")
    assert cli.json("whoami", "--url", other)["anonymous"] is True
    # --token and the environment win over the stored token
    r = cli("whoami", "--token", "cpt_not-a-real-token", code=1)
    assert error_line(r) == "error: invalid token"
    cli("whoami", token="cpt_not-a-real-token", code=1)

    # a refused token is not stored; the old login stays
    r = cli("login", "--url", server.url, "--token", "cpt_wrong", code=1)
    assert error_line(r) == "error: invalid token"
    assert json.loads(login_file.read_text())["token"] == server.admin_token
    r = cli("login", "--url", server.url, code=1)  # no terminal to prompt on
    assert "--token -" in error_line(r)

    # --token - reads standard input (the token stays out of the process list and shell history)
    alice = cli.json("token", "create", "--description", "second")["token"]
    cli("login", "--token", "-", stdin=alice + "\n")  # URL: the stored one
    assert json.loads(login_file.read_text()) == {"url": server.url, "token": alice}
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600

    assert cli("logout").stdout.startswith(f"logged out: removed {login_file}")
    assert not login_file.exists()
    assert cli("logout").stdout.strip() == "not logged in: nothing to forget"
    assert cli.json("whoami", url=server.url)["anonymous"] is True
    assert "anonymous" in cli("whoami", url=server.url).stdout
    r = cli("channel", "create", "nope", url=server.url, code=1)
    assert error_line(r) == ("error: this needs the 'channels.create' permission (no token was given: "
                             "use --token, CONDA_PLATFORM_TOKEN or 'conda-platform login')")

    login_file.write_text("{not json")
    r = cli("whoami", url=server.url)
    assert f"warning: ignoring {login_file}" in r.stderr and "anonymous" in r.stdout


def test_tokens_users_grants_scopes_and_audit(cli: Cli, server: Server, tmp_path: Path) -> None:
    url, admin = server.url, server.admin_token

    def run(*args: str, code: int = 0, token: str | None = admin) -> subprocess.CompletedProcess:
        return cli(*args, url=url, token=token, code=code)

    def run_json(*args: str, token: str | None = admin) -> dict:
        return json.loads(run(*args, "--json", token=token).stdout)

    run("channel", "create", "team")
    run("channel", "create", "secret", "--private")
    pkg = build_conda_package(tmp_path / "pkgs", "alpha", "1.0")
    run("upload", "-c", "team", str(pkg))

    # users and service accounts
    assert run("user", "create", "alice").stdout.startswith("created user alice")
    ci = run_json("user", "create", "ci", "--service")
    assert (ci["name"], ci["kind"], ci["admin"]) == ("ci", "service", False)
    assert run_json("user", "create", "boss", "--admin")["admin"] is True
    assert "already exists" in error_line(run("user", "create", "alice", code=1))
    assert "invalid user name" in error_line(run("user", "create", "Not Valid", code=1))

    granted = run_json("user", "grant", "alice", "channel.write:team")
    assert granted["permissions"] == ["channel.write:team"]
    r = run("user", "grant", "alice", "channels.create")
    assert r.stdout.strip() == "granted channels.create to alice; now: channel.write:team, channels.create"
    assert "invalid permission 'channel.own:team'" in error_line(run("user", "grant", "alice", "channel.own:team", code=1))
    assert "channel 'nope' not found" in error_line(run("user", "grant", "alice", "channel.read:nope", code=1))
    assert run_json("user", "revoke", "alice", "channels.create")["permissions"] == ["channel.write:team"]
    assert "does not have" in error_line(run("user", "revoke", "alice", "channels.create", code=1))
    assert "not found" in error_line(run("user", "show", "nobody", code=1))

    users = {u["name"]: u for u in run_json("user", "list")["items"]}
    assert set(users) == {"admin", "alice", "boss", "ci"} and users["ci"]["kind"] == "service"
    human = run("user", "list").stdout
    assert "alice" in human and "channel.write:team" in human and "service" in human
    shown = run("user", "show", "alice").stdout
    assert "alice" in shown and "channel.write:team" in shown
    assert run_json("user", "show", "alice")["permissions"] == ["channel.write:team"]

    # tokens: the secret is printed once, on stdout alone, with a warning on stderr
    r = run("token", "create", "--user", "alice", "--description", "laptop")
    full = r.stdout.strip()
    assert full.startswith("cpt_") and r.stdout == full + "\n"
    assert "for alice" in r.stderr and "not shown again" in r.stderr
    scoped = run_json("token", "create", "--user", "alice", "--scope", "channel.read:team", "--expires-in-days", "7")
    assert scoped["scopes"] == ["channel.read:team"] and scoped["expires_at"] and scoped["token"].startswith("cpt_")
    assert "invalid permission" in error_line(run("token", "create", "--scope", "everything", code=1))
    run("token", "create", "--expires-in-days", "0", code=2)

    listed = run_json("token", "list", "--user", "alice")["items"]
    assert [t["description"] for t in listed] == ["laptop", ""]
    assert all("token" not in t for t in listed) and all(t["state"] == "active" for t in listed)
    human = run("token", "list", "--user", "alice").stdout
    assert "laptop" in human and "channel.read:team" in human and "never" in human
    assert full not in human and scoped["token"] not in human
    me = run_json("whoami", token=scoped["token"])
    assert (me["name"], me["token_scopes"]) == ("alice", ["channel.read:team"])

    # alice's full token: her grants; the private channel is not there for her; not an admin
    run("upload", "-c", "team", str(build_conda_package(tmp_path / "pkgs", "beta", "1.0")), token=full)
    assert error_line(run("channel", "show", "secret", token=full, code=1)) == "error: channel 'secret' not found"
    assert "users.manage" in error_line(run("user", "list", token=full, code=1))
    assert "users.manage" in error_line(run("token", "list", "--user", "admin", token=full, code=1))
    assert error_line(run("audit", token=full, code=1)).startswith("error: ")
    assert [t["user"] for t in run_json("token", "list", token=full)["items"]] == ["alice", "alice"]

    # the scoped token reads but cannot upload, although alice may
    names = {a["name"] for a in run_json("package", "list", "team", token=scoped["token"])["items"]}
    assert names == {"alpha", "beta"}
    r = run("upload", "-c", "team", str(build_conda_package(tmp_path / "pkgs", "gamma", "1.0")),
            token=scoped["token"], code=1)
    assert error_line(r) == "error: this needs write permission on channel 'team'"

    # revoking: the token stops working at once, with a clear message
    tid = next(t["id"] for t in listed if t["description"] == "laptop")
    assert run("token", "revoke", str(tid)).stdout.strip() == f"revoked token #{tid} of alice"
    assert error_line(run("whoami", token=full, code=1)) == "error: token has been revoked"
    assert error_line(run("package", "list", "team", token=full, code=1)) == "error: token has been revoked"
    assert "already revoked" in error_line(run("token", "revoke", str(tid), code=1))
    assert "not found" in error_line(run("token", "revoke", "99999", code=1))
    run("token", "revoke", "abc", code=2)
    states = {t["id"]: t["state"] for t in run_json("token", "list", "--user", "alice")["items"]}
    assert states[tid] == "revoked"
    # a user may revoke their own token
    run("token", "revoke", str(scoped["id"]), token=scoped["token"])
    run("whoami", token=scoped["token"], code=1)

    # the audit log has every write, newest first, with who did it and how it went
    log = run_json("audit")
    actions = [(e["actor"], e["action"], e["target"], e["status"]) for e in log["items"]]
    assert ("admin", "POST /api/channels", "/api/channels", 201) in actions
    assert ("admin", "POST /api/users/{user}/grants", "/api/users/alice/grants", 200) in actions
    assert ("admin", "DELETE /api/tokens/{token_id}", f"/api/tokens/{tid}", 200) in actions
    assert any(a == ("alice", "POST /api/channels/{channel}/files", "/api/channels/team/files", 403) for a in actions)
    assert log["total"] == len(log["items"]) and log["page"] == 1
    alice_log = run_json("audit", "--actor", "alice")["items"]
    assert alice_log and {e["actor"] for e in alice_log} == {"alice"}
    page = run_json("audit", "--per-page", "2", "--page", "2")
    assert page["page"] == 2 and len(page["items"]) == 2 and page["items"][0] == log["items"][2]
    human = run("audit", "--per-page", "2").stdout
    assert "DELETE /api/tokens/{token_id}" in human and "more with --page 2" in human
