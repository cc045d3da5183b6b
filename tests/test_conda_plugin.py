"""The real ``conda`` command with our plugin, end to end against a real server: an environment
created from a private platform channel (the token goes only to the platform's host) with every
package marked trusted; a blocked package aborts in enforce mode before anything is fetched; a
tampered signature warns, and aborts with platform_require_signatures.

conda is not installable from the package index, so this module runs only where conda is: when
conda is importable by the test interpreter, or when $CONDA_PLATFORM_TEST_CONDA names a Python that
has conda and this project installed. Otherwise it is skipped with the reason printed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import zstandard
from builders import build_conda_package
from conftest import Api, Server
from upstream import UpstreamChannel

from proxy.store.signing import TrustStore

pytestmark = pytest.mark.conda


def _conda_python() -> tuple[str | None, str]:
    given = os.environ.get("CONDA_PLATFORM_TEST_CONDA")
    if given:
        python = given
    elif importlib.util.find_spec("conda") is not None:
        python = sys.executable
    else:
        return None, "conda is not importable here and CONDA_PLATFORM_TEST_CONDA names no Python with conda"
    probe = subprocess.run([python, "-m", "conda", "platform", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{python} -m conda platform --help failed (is this project installed there?): {probe.stderr[-300:]}"
    return python, ""


PYTHON, WHY = _conda_python()
if PYTHON is None:
    print(f"\ntests/test_conda_plugin.py skipped: {WHY}")
    pytest.skip(WHY, allow_module_level=True)


class Conda:
    def __init__(self, tmp_path: Path, server: Server, **plugin: object):
        self.tmp = tmp_path
        self.server = server
        self.rc = tmp_path / "condarc"
        lines = ["solver: classic", "notify_outdated_conda: false", "plugins:", f"  platform_url: {server.url}",
                 f"  platform_token: {server.admin_token}"]
        lines += [f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in plugin.items()]
        self.rc.write_text("\n".join(lines) + "\n")
        self.env = {**os.environ, "CONDARC": str(self.rc), "CONDA_PKGS_DIRS": str(tmp_path / "pkgs"),
                    "CONDA_PLATFORM_CONFIG_DIR": str(tmp_path / "config"), "CONDA_NUMBER_CHANNEL_NOTICES": "0"}
        for key in ("CONDA_PLATFORM_URL", "CONDA_PLATFORM_TOKEN", "CONDA_PREFIX"):
            self.env.pop(key, None)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "conda", *args], env=self.env, capture_output=True, text=True,
                              timeout=240)

    def create(self, name: str, *specs: str, channel: str = "team") -> subprocess.CompletedProcess:
        return self("create", "-p", str(self.tmp / name), "--override-channels", "-c",
                    f"{self.server.url}/api/repo/{channel}", *specs, "-y")


@pytest.fixture
def world(tmp_path: Path):  # noqa: ANN201
    """A signed server; team (private, policy: no bad*): liba, appb -> liba; open: badpkg."""
    TrustStore(tmp_path / "data" / "trust").init()
    server = Server(tmp_path / "data").start()
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "team", "private": True})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "liba", "1.0", files={"share/liba/a.txt": b"one"}),
               build_conda_package(pk, "appb", "1.0", depends=["liba"], files={"share/appb/b.txt": b"b"}))
    api.post("/api/policies", 201, json={"name": "org", "rules": [{"kind": "name", "exclude": ["bad*"]}]})
    api.post("/api/policies/org/apply", json={"channel": "team"})
    yield server, api
    server.stop()


def test_create_an_environment_from_the_platform(world, tmp_path: Path) -> None:  # noqa: ANN001
    server, _ = world
    conda = Conda(tmp_path, server, platform_policy_mode="enforce", platform_require_signatures=True)
    r = conda.create("env", "appb")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "env/share/liba/a.txt").read_bytes() == b"one"
    trusted = [line for line in r.stdout.splitlines() if "package metadata is signed by" in line]
    assert len(trusted) == 2 and all(line.rstrip().endswith("and trusted)") for line in trusted)
    # the token went to the platform's host: without it the private channel is a 404
    assert requests.get(f"{server.url}/api/repo/team/noarch/repodata.json", timeout=10).status_code == 404
    help_ = conda("platform", "--help")
    assert help_.returncode == 0 and "trust" in help_.stdout
    # `conda platform` talks to plugins.platform_url with plugins.platform_token (team is private)
    listed = conda("platform", "channel", "list", "--json")
    assert listed.returncode == 0 and "team" in listed.stdout, listed.stdout + listed.stderr
    enabled = conda("platform", "trust", "enable", "--prefix", str(tmp_path / "pfx"))
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert (tmp_path / "pfx/etc/conda/1.root.json").is_file()
    assert "signing_metadata_url_base" in (tmp_path / "pfx/.condarc").read_text()


class RecordingChannel(UpstreamChannel):
    """A plain conda channel on another port that remembers the Authorization headers it got."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.authorizations: list[str | None] = []

    async def _handle(self, request):  # noqa: ANN001, ANN202
        self.authorizations.append(request.headers.get("Authorization"))
        return await super()._handle(request)


def test_the_token_goes_to_the_platform_host_only(world, tmp_path: Path) -> None:  # noqa: ANN001
    server, _ = world
    other = RecordingChannel(tmp_path / "other")
    other.add("libz", "1.0")
    other.index()
    other.start()
    try:
        conda = Conda(tmp_path, server)
        r = conda("create", "-p", str(tmp_path / "env"), "--override-channels", "-c",
                  f"{server.url}/api/repo/team", "-c", other.url, "liba", "libz", "-y")
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "env/share/liba/a.txt").exists()  # the private channel was read: token sent
        assert any(p.name.startswith("libz-1.0") for p in (tmp_path / "env/conda-meta").iterdir())
        assert other.authorizations and not any(other.authorizations)
    finally:
        other.stop()


def test_a_blocked_package_aborts_in_enforce_mode(world, tmp_path: Path) -> None:  # noqa: ANN001
    server, _ = world
    r = Conda(tmp_path, server, platform_policy_mode="enforce").create("env", "liba", "badpkg")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "'badpkg' is blocked by the platform policy: rule name" in out and "'bad*'" in out, out
    assert not (tmp_path / "env" / "conda-meta").exists()


def test_a_tampered_signature_warns_and_aborts_with_require_signatures(world, tmp_path: Path) -> None:  # noqa: ANN001
    server, api = world
    doc = api.get("/api/repo/team/noarch/repodata.json").json()
    good = next(iter(doc["signatures"]["liba-1.0-0.conda"].values()))["signature"]
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    for path in (server.data_dir / "indexes").rglob("*repodata.json"):
        data = path.read_bytes()
        if good.encode() in data:
            path.write_bytes(data.replace(good.encode(), bad.encode()))
            (path.parent / (path.name + ".zst")).write_bytes(zstandard.compress(path.read_bytes()))
    (tmp_path / "warn").mkdir()
    warned = Conda(tmp_path / "warn", server).create("env", "liba")
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "liba-1.0-0 (WARNING: metadata signature verification failed)" in warned.stdout
    assert (tmp_path / "warn/env/share/liba/a.txt").exists()
    (tmp_path / "strict").mkdir()
    strict = Conda(tmp_path / "strict", server, platform_require_signatures=True).create("env", "liba")
    assert strict.returncode != 0
    assert "liba-1.0-0: signature: expected good signatures" in strict.stdout + strict.stderr
    assert not (tmp_path / "strict/env/share/liba").exists()
