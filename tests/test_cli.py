"""The installed ``conda-platform`` executable, run as a subprocess against real servers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from builders import build_conda_package
from conftest import Server
from terminal import run_on_terminal

EXE = Path(sys.executable).with_name("conda-platform")
if not EXE.exists():
    EXE = Path(shutil.which("conda-platform") or EXE)


_NO_LOGIN = tempfile.mkdtemp(prefix="no-login-")


def _env(url: str | None, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDA_PLATFORM_")}
    env["CONDA_PLATFORM_CONFIG_DIR"] = _NO_LOGIN  # never a developer's stored login
    if url:
        env["CONDA_PLATFORM_URL"] = url
    if token:
        env["CONDA_PLATFORM_TOKEN"] = token
    env["COLUMNS"] = "200"
    return env


def cli(server: Server | None, *args: str, code: int = 0, url: str | None = None) -> subprocess.CompletedProcess:
    """Run the executable (server URL from the environment) and check its exit code."""
    assert EXE.exists(), "conda-platform is not installed: pip install -e '.[test]'"
    r = subprocess.run([str(EXE), *args], env=_env(url or (server.url if server else None), server.admin_token if server else None), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == code, f"{args}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def cli_json(server: Server, *args: str, code: int = 0) -> dict:
    return json.loads(cli(server, *args, "--json", code=code).stdout)


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one line a failing command prints on stderr."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- channels ----------------------------------------------------------------------------------
def test_channel_commands_round_trip(server: Server) -> None:
    r = cli(server, "channel", "create", "team", "--description", "Team packages")
    assert r.stdout.strip() == f"created channel team: {server.url}/api/repo/team"
    sub = cli_json(server, "channel", "create", "team/dev", "--private")
    assert (sub["name"], sub["parent"], sub["private"]) == ("team/dev", "team", True)
    cli(server, "--json", "channel", "create", "other")  # global option before the subcommand

    # conflict, bad names, unknown channels: one line and exit 1; --json: the envelope on stdout
    r = cli(server, "channel", "create", "team", code=1)
    assert error_line(r) == "error: channel 'team' already exists"
    env = cli_json(server, "channel", "create", "team", code=1)
    assert env["error"]["code"] == "conflict" and "already exists" in env["error"]["message"]
    assert "invalid channel name 'Bad_Name'" in error_line(cli(server, "channel", "create", "Bad_Name", code=1))
    assert "CH or CH/SUB" in error_line(cli(server, "channel", "show", "a/b/c", code=1))
    assert error_line(cli(server, "channel", "show", "nope", code=1)) == "error: channel 'nope' not found"
    assert cli_json(server, "channel", "show", "nope", code=1)["error"]["code"] == "not_found"
    assert cli(server, "channel", "show", "team/nope", code=1).stderr == "error: channel 'team/nope' not found\n"

    listed = cli_json(server, "channel", "list")
    assert [c["name"] for c in listed["items"]] == ["other", "team"] and listed["total"] == 2
    human = cli(server, "channel", "list").stdout
    assert "team" in human and "Team packages" in human and "other" in human
    assert [c["name"] for c in cli_json(server, "channel", "list", "team")["items"]] == ["team/dev"]
    shown = cli_json(server, "channel", "show", "team")
    assert shown["subchannels"] == ["dev"] and shown["description"] == "Team packages"
    human = cli(server, "channel", "show", "team/dev").stdout
    assert "team/dev" in human and f"{server.url}/api/repo/team/dev" in human

    upd = cli_json(server, "channel", "update", "team", "--description", "New", "--private")
    assert (upd["description"], upd["private"]) == ("New", True)
    assert cli_json(server, "channel", "update", "team", "--public")["private"] is False
    r = cli(server, "channel", "update", "team", code=2)
    assert "nothing to update" in r.stderr
    cli(server, "channel", "update", "team", "--private", "--public", code=2)

    assert cli_json(server, "channel", "freeze", "team")["frozen"] is True
    assert "already frozen" in error_line(cli(server, "channel", "freeze", "team", code=1))
    assert cli(server, "channel", "unfreeze", "team").stdout.startswith("unfroze team: publishing generation")
    assert cli_json(server, "channel", "show", "team")["frozen"] is False
    assert cli(server, "channel", "freeze", "team/dev").stdout.startswith("froze team/dev")

    # deleting asks first; with no terminal to ask on, it refuses and deletes nothing
    r = cli(server, "channel", "delete", "team", code=1)
    assert error_line(r) == "error: refusing to delete channel team without confirmation: pass --yes"
    assert cli_json(server, "channel", "delete", "team", code=1)["error"]["code"] == "confirmation_required"
    cli(server, "channel", "show", "team")
    assert cli_json(server, "channel", "delete", "team/dev", "--yes") == {"deleted": "team/dev"}
    assert cli(server, "channel", "delete", "--yes", "team").stdout.strip() == "deleted channel team"
    cli(server, "channel", "show", "team", code=1)
    assert [c["name"] for c in cli_json(server, "channel", "list")["items"]] == ["other"]


# -- packages ----------------------------------------------------------------------------------
def test_upload_search_and_package_commands(server: Server, tmp_path: Path) -> None:
    a10 = build_conda_package(tmp_path / "a", "alpha", "1.0", subdir="linux-64", depends=["python >=3.10", "numpy"],
                              constrains=["scipy <2"], summary="The alpha package", license="BSD-3-Clause")
    a11 = build_conda_package(tmp_path / "a", "alpha", "1.1", subdir="linux-64", depends=["python >=3.11"])
    beta = build_conda_package(tmp_path / "a", "beta", "2.0")
    cli(server, "channel", "create", "main")
    cli(server, "channel", "create", "main/staging")

    up = cli_json(server, "upload", "--channel", "main", str(a10), str(a11), str(beta))
    assert sorted(f"{f['subdir']}/{f['filename']}" for f in up["files"]) == [
        "linux-64/alpha-1.0-0.conda", "linux-64/alpha-1.1-0.conda", "noarch/beta-2.0-0.conda"]
    assert all(f["created"] for f in up["files"]) and up["generation"] == 1
    r = cli(server, "upload", "-c", "main", str(beta))
    assert "already there" in r.stdout and r.stderr == ""  # no progress bar without a terminal
    r = cli(server, "upload", "-c", "main/staging", str(beta), "--url", server.url)
    assert "uploaded to main/staging (generation 1)" in r.stdout

    # a different file under a name the channel already has: 409, and nothing changes
    other = build_conda_package(tmp_path / "b", "beta", "2.0", files={"share/other.txt": b"other bytes\n"})
    assert "already exists in this channel with different contents" in error_line(
        cli(server, "upload", "-c", "main", str(other), code=1))
    assert cli_json(server, "upload", "-c", "main", str(other), code=1)["error"]["code"] == "conflict"
    assert "not 'linux-64'" in error_line(cli(server, "upload", "-c", "main/staging", str(other), "--subdir",
                                              "linux-64", code=1))
    assert error_line(cli(server, "upload", "-c", "nope", str(beta), code=1)) == "error: channel 'nope' not found"
    assert "cannot read" in error_line(cli(server, "upload", "-c", "main", str(tmp_path / "missing.conda"), code=1))
    cli(server, "upload", str(beta), code=2)  # --channel is required

    # search
    found = cli_json(server, "search", "alp")
    assert [(i["channel"], i["name"], i["file_count"]) for i in found["items"]] == [("main", "alpha", 2)]
    assert "The alpha package" not in cli(server, "search", "zzz").stdout
    assert "no packages found" in cli(server, "search", "zzz").stdout
    both = cli_json(server, "search", "beta")
    assert sorted(i["channel"] for i in both["items"]) == ["main", "main/staging"]
    assert [i["channel"] for i in cli_json(server, "search", "beta", "--channel", "main/staging")["items"]] == [
        "main/staging"]
    assert cli_json(server, "search", "", "--subdir", "linux-64")["total"] == 1
    assert cli_json(server, "search", "*", "--license", "bsd", "--type", "conda")["items"][0]["name"] == "alpha"
    paged = cli_json(server, "search", "--per-page", "1", "--page", "2")
    assert (paged["total"], len(paged["items"]), paged["page"]) == (3, 1, 2)
    assert "of 3: more with --page 2" in cli(server, "search", "--per-page", "1").stdout
    cli(server, "search", "--page", "0", code=2)

    # package list / show / files / deps
    assert {(a["name"], a["file_count"]) for a in cli_json(server, "package", "list", "main")["items"]} == {
        ("alpha", 2), ("beta", 1)}
    shown = cli_json(server, "package", "show", "main", "alpha")
    assert (shown["latest_version"], shown["versions"], shown["subdirs"]) == ("1.1", ["1.1", "1.0"], ["linux-64"])
    human = cli(server, "package", "show", "main", "alpha", "--type", "conda").stdout
    assert "1.1, 1.0" in human and "linux-64" in human
    assert "artifact conda/gamma not found" in error_line(cli(server, "package", "show", "main", "gamma", code=1))
    assert "python" in error_line(cli(server, "package", "show", "main", "alpha", "--type", "python", code=1))
    files = cli_json(server, "package", "files", "main", "alpha")
    assert [f["filename"] for f in files["items"]] == ["alpha-1.1-0.conda", "alpha-1.0-0.conda"]
    assert "linux-64/alpha-1.0-0.conda" in cli(server, "package", "files", "main", "alpha").stdout
    deps = cli_json(server, "package", "deps", "main", "alpha", "--version", "1.0")
    assert [d["spec"] for d in deps["files"][0]["depends"]] == ["python >=3.10", "numpy"]
    assert [d["spec"] for d in deps["files"][0]["constrains"]] == ["scipy <2"]
    human = cli(server, "package", "deps", "main", "alpha").stdout
    assert "alpha 1.1" in human and ">=3.11" in human and "numpy" not in human
    cli(server, "package", "deps", "main", "alpha", "--version", "9", code=1)

    # download: whole, verified, into a new directory
    out = tmp_path / "downloads" / "here"
    got = cli_json(server, "package", "download", "main", "linux-64/alpha-1.0-0.conda", "noarch/beta-2.0-0.conda",
                   "-o", str(out))
    assert [Path(f["path"]).name for f in got["files"]] == ["alpha-1.0-0.conda", "beta-2.0-0.conda"]
    assert (out / "alpha-1.0-0.conda").read_bytes() == a10.read_bytes()
    assert hashlib.sha256((out / "beta-2.0-0.conda").read_bytes()).hexdigest() == got["files"][1]["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["alpha-1.0-0.conda", "beta-2.0-0.conda"]
    r = cli(server, "package", "download", "main", "linux-64/zeta-1-0.conda", "-o", str(out), code=1)
    assert "zeta-1-0.conda not found" in error_line(r)
    assert "SUBDIR/FILENAME" in error_line(cli(server, "package", "download", "main", "alpha-1.0-0.conda", code=1))
    assert sorted(p.name for p in out.iterdir()) == ["alpha-1.0-0.conda", "beta-2.0-0.conda"]  # no leftovers
    r = cli(server, "package", "download", "main/staging", "noarch/beta-2.0-0.conda", "-o", str(tmp_path / "s"))
    assert "sha256 verified" in r.stdout

    # copy and move between a channel and its subchannel
    copied = cli_json(server, "package", "copy", "main", "linux-64/alpha-1.0-0.conda", "--to", "main/staging")
    assert (copied["source"], copied["target"], copied["files"]) == ("main", "main/staging",
                                                                      ["linux-64/alpha-1.0-0.conda"])
    r = cli(server, "package", "move", "main", "linux-64/alpha-1.1-0.conda", "--to", "main/staging")
    assert r.stdout.startswith("moved 1 file(s) from main to main/staging")
    assert [f["filename"] for f in cli_json(server, "package", "files", "main/staging", "alpha")["items"]] == [
        "alpha-1.1-0.conda", "alpha-1.0-0.conda"]
    assert cli_json(server, "package", "show", "main", "alpha")["versions"] == ["1.0"]
    assert "not found" in error_line(cli(server, "package", "copy", "main", "noarch/beta-2.0-0.conda", "--to",
                                         "nowhere", code=1))
    cli(server, "package", "move", "main", "noarch/beta-2.0-0.conda", code=2)  # --to is required

    # delete files: all or nothing, asks first
    assert "without confirmation" in error_line(
        cli(server, "package", "delete", "main/staging", "noarch/beta-2.0-0.conda", code=1))
    r = cli(server, "package", "delete", "main/staging", "noarch/beta-2.0-0.conda", "linux-64/nope-1-0.conda",
            "--yes", code=1)
    assert "not found" in error_line(r)
    assert cli_json(server, "search", "beta", "--channel", "main/staging")["total"] == 1  # nothing was deleted
    gone = cli_json(server, "package", "delete", "main/staging", "noarch/beta-2.0-0.conda",
                    "linux-64/alpha-1.0-0.conda", "--yes")
    assert gone["deleted"] == ["linux-64/alpha-1.0-0.conda", "noarch/beta-2.0-0.conda"]
    assert cli_json(server, "search", "beta", "--channel", "main/staging")["total"] == 0
    # delete a whole artifact
    assert "without confirmation" in error_line(cli(server, "package", "delete", "main/staging", "--artifact",
                                                    "alpha", code=1))
    r = cli(server, "package", "delete", "main/staging", "--artifact", "alpha", "-y")
    assert r.stdout.startswith("deleted conda/alpha from main/staging")
    assert cli_json(server, "package", "list", "main/staging")["items"] == []
    cli(server, "package", "delete", "main", code=2)
    cli(server, "package", "delete", "main", "noarch/beta-2.0-0.conda", "--artifact", "beta", "-y", code=2)


def test_download_refuses_corrupt_bytes(server: Server, tmp_path: Path) -> None:
    """Bytes that do not match the record's sha256 never appear under the file's name."""
    pkg = build_conda_package(tmp_path / "in", "gamma", "1.0")
    cli(server, "channel", "create", "c")
    sha = cli_json(server, "upload", "-c", "c", str(pkg))["files"][0]["sha256"]
    blob = server.platform.blobs.path(sha)
    blob.chmod(0o644)
    blob.write_bytes(bytes(b ^ 0xFF for b in pkg.read_bytes()))  # same size, wrong bytes: a failing disk
    out = tmp_path / "out"
    r = cli(server, "package", "download", "c", "noarch/gamma-1.0-0.conda", "-o", str(out), code=1)
    assert "arrived corrupt" in error_line(r) and "nothing was saved" in r.stderr
    assert list(out.iterdir()) == []
    assert cli_json(server, "package", "download", "c", "noarch/gamma-1.0-0.conda", "-o", str(out),
                    code=1)["error"]["code"] == "download_corrupt"


# -- failures ----------------------------------------------------------------------------------
def test_server_down_usage_errors_and_bad_urls(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    r = cli(None, "channel", "list", url=url, code=1)
    assert error_line(r).startswith(f"error: cannot reach the server at {url}: ")
    r = cli(None, "--json", "channel", "list", url=url, code=1)
    env = json.loads(r.stdout)
    assert env["error"]["code"] == "server_unreachable" and env["error"]["message"].startswith(
        f"cannot reach the server at {url}") and r.stderr == ""
    r = cli(None, "channel", "list", "--url", "ftp://example.com", code=1)
    assert "invalid server URL" in error_line(r)

    assert "required" in cli(None, code=2).stderr
    cli(None, "channel", code=2)
    cli(None, "channel", "create", code=2)
    cli(None, "channel", "list", "--bogus", code=2)
    cli(None, "search", "--per-page", "many", code=2)
    assert cli(None, "--version").stdout.startswith("conda-platform ")
    assert "upload" in cli(None, "--help").stdout


def test_ctrl_c_exits_130_with_one_line() -> None:
    """A server that accepts connections but never answers, then SIGINT while the CLI waits."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        p = subprocess.Popen([str(EXE), "channel", "list"], env=_env(url), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = silent.accept()  # the CLI has connected and sent its request: it now waits for the answer
        try:
            time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            conn.close()
    assert p.returncode == 130, (out, err)
    assert err.strip().splitlines() == ["interrupted"]


def test_upload_progress_bar_on_a_terminal(server: Server, tmp_path: Path) -> None:
    pkg = build_conda_package(tmp_path, "tty", "1.0", files={"share/blob.bin": os.urandom(1 << 20)})
    cli(server, "channel", "create", "tty")
    code, out, shown = run_on_terminal([str(EXE), "upload", "-c", "tty", str(pkg)], _env(server.url, server.admin_token))
    assert code == 0, (out, shown)
    assert b"uploading tty-1.0-0.conda" in shown and b"MB" in shown  # rich's transfer columns
    assert b"tty-1.0-0.conda" in out and b"added" in out


# -- serve -------------------------------------------------------------------------------------
def test_serve_runs_a_real_server(tmp_path: Path) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    p = subprocess.Popen([str(EXE), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
                         env=_env(None), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        first = p.stdout.readline()  # a fresh data dir: the bootstrap admin token, shown once
        assert "admin token (shown once" in first, first
        token = first.rsplit(" ", 1)[1].strip()
        # read here, not from communicate(): that reads the pipe itself and would miss a line
        # already taken into this file object's buffer together with the first one
        second = p.stdout.readline()
        assert f"serving {url}" in second, second
        deadline = time.monotonic() + 30
        while True:
            assert p.poll() is None, p.communicate()
            try:
                with urllib.request.urlopen(url + "/api/channels", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer within 30 s"
                time.sleep(0.1)
        cli(None, "channel", "create", "served", url=url, code=1)  # anonymous: refused
        cli(None, "--token", token, "channel", "create", "served", url=url)
        assert [c["name"] for c in json.loads(cli(None, "channel", "list", "--json", url=url).stdout)["items"]] == [
            "served"]
        assert (data / "platform.db").is_file()
        # a second server on the same port: one error line, exit 1
        r = subprocess.run([str(EXE), "serve", "--port", str(port), "--data-dir", str(tmp_path / "d2")],
                           env=_env(None), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.splitlines()[-1].startswith(f"error: cannot serve on 127.0.0.1:{port}")
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert p.returncode in (0, -signal.SIGTERM), err


@pytest.mark.parametrize("argv", [["channel", "--json", "list"], ["channel", "list", "--json"]])
def test_global_options_anywhere(server: Server, argv: list[str]) -> None:
    cli(server, "channel", "create", "g")
    r = subprocess.run([str(EXE), "--url", "http://127.0.0.1:1", *argv, "--url", server.url], env=_env(None),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"][0]["name"] == "g"
