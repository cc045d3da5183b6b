"""Server signing: the trust store's keys and metadata (init, rotations, root chaining), signed
repodata from a real server (uploads and mirrored records, repodata.json and current_repodata.json),
verified with trust.py against the served key_mgr.json and root, and a real client still installing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import rattler
import requests
import yaml
import zstandard
from builders import build_conda_package
from conftest import Api, Server
from rattler import Gateway, SourceConfig
from test_mirror import create, wait_run
from upstream import UpstreamChannel

from conda_platform_plugin import trust
from conda_platform_plugin.errors import BadRequest, Conflict
from proxy.store.render import Previous, SubdirRenderer
from proxy.store.signing import Signer, TrustStore


def _verified_chain(base: str) -> dict:
    """Walk the served roots 1 → N, check key_mgr against the newest; returns key_mgr."""
    root = requests.get(f"{base}/trust/1.root.json", timeout=10).json()
    trust.verify_signable(root, root["signed"]["delegations"]["root"]["pubkeys"], 1)
    n = 2
    while (r := requests.get(f"{base}/trust/{n}.root.json", timeout=10)).status_code == 200:
        root = trust.update_root(root, [r.json()])
        n += 1
    key_mgr = requests.get(f"{base}/trust/key_mgr.json", timeout=10).json()
    trust.verify_delegation("key_mgr", key_mgr, root)
    return key_mgr


def _check_signed(doc: dict, key_mgr: dict) -> set[str]:
    """Every record of a repodata document verifies; returns the signing keys seen."""
    records = {**doc.get("packages", {}), **doc.get("packages.conda", {})}
    assert records and set(doc["signatures"]) == set(records)
    return {trust.verify_record(rec, doc["signatures"][fn], key_mgr) for fn, rec in records.items()}


def test_trust_store_init_and_rotations_chain(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    status = store.init(export_root_key=tmp_path / "root.key", keep_root_key=False)
    assert status["root_version"] == 1 and not status["root_key_on_server"]
    assert (tmp_path / "root.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict):
        store.init()
    root1 = store.root(1)
    trust.verify_signable(root1, root1["signed"]["delegations"]["root"]["pubkeys"], 1)
    assert all("other_headers" in s for s in root1["signatures"].values())  # OpenPGP-style root signatures
    trust.verify_delegation("key_mgr", store.key_mgr(), root1)
    # pkg_mgr: a new key_mgr.json version, the same root
    old_pkg = store.private("pkg_mgr")
    store.rotate("pkg_mgr")
    assert store.private("pkg_mgr") != old_pkg and store.key_mgr()["signed"]["version"] == 2
    assert store.root_versions() == [1]
    # key_mgr: needs the root key, which is offline now
    with pytest.raises(BadRequest, match="root key"):
        store.rotate("key_mgr")
    store.rotate("key_mgr", root_key_file=tmp_path / "root.key")
    assert not (store.dir / "root.key").exists()
    # root: N+1 signed by the old and the new root key
    store.rotate("root", root_key_file=tmp_path / "root.key", export_root_key=tmp_path / "root2.key",
                 keep_root_key=False)
    newest = trust.update_root(root1, [store.root(2), store.root(3)])
    assert newest["signed"]["version"] == 3
    trust.verify_delegation("key_mgr", store.key_mgr(), newest)
    record = {"name": "a", "version": "1"}
    signer = Signer(store.private("pkg_mgr"), tmp_path / "cache")
    value = orjson.loads(signer.signatures([(orjson.dumps(record), record)])[0])
    assert trust.verify_record(record, value, store.key_mgr()) == signer.public
    with pytest.raises(trust.TrustError):
        trust.verify_record({**record, "version": "2"}, value, store.key_mgr())
    with pytest.raises(BadRequest, match="not the current root key"):  # the old root key is retired
        store.rotate("root", root_key_file=tmp_path / "root.key")


def test_signed_incremental_renders_equal_full_renders(tmp_path: Path) -> None:
    """Signature sections are spliced like the record sections: every incremental render has the
    bytes of a full one."""
    signer = Signer(trust.new_private_key(), tmp_path / "cache")
    rng = random.Random(6)
    files: dict[str, dict[str, tuple[bytes, str]]] = {}

    def render(gen: int, changed: set[str] | None) -> bytes:
        out = tmp_path / "r" / str(gen)
        prev = Previous.load(tmp_path / "r" / str(gen - 1)) if changed is not None else None
        r = SubdirRenderer(out, gen, "noarch", prev, full=changed is None, sign=signer.signatures)
        names = sorted(files) if changed is None else sorted(changed)
        r.skip(names)
        for name in names:
            r.feed_name(name, [(name, fn, rec, v, None, 0.0, 0) for fn, (rec, v) in sorted(files.get(name, {}).items())])
        r.finish()
        return (out / "repodata.json").read_bytes() + (out / "current_repodata.json").read_bytes()

    def add(name: str, n: int) -> None:
        rec = orjson.dumps({"name": name, "version": f"{n}.0", "build": "0", "build_number": 0, "depends": [],
                            "sha256": f"{n:064x}", "size": n}, option=orjson.OPT_SORT_KEYS)
        files.setdefault(name, {})[f"{name}-{n}.0-0.{'conda' if n % 2 else 'tar.bz2'}"] = (rec, f"{n}.0")

    for i in range(40):
        add(f"p{i:02d}", i)
    render(1, None)
    for gen in range(2, 8):
        changed = set()
        for _ in range(3):
            name = f"p{rng.randrange(50):02d}"
            changed.add(name)
            if name in files and rng.random() < 0.3:
                files.pop(name)
            else:
                add(name, rng.randrange(1000, 2000))
        incremental = render(gen, changed)
        assert incremental == render(gen + 100, None), f"generation {gen}"
        doc = orjson.loads((tmp_path / "r" / str(gen) / "repodata.json").read_bytes())
        assert set(doc["signatures"]) == set(doc["packages"]) | set(doc["packages.conda"])


@pytest.fixture
def signed_server(tmp_path: Path, database_url: str | None) -> Server:
    """On SQLite and on PostgreSQL (the full renders read rows through different paths)."""
    data = tmp_path / "data"
    TrustStore(data / "trust").init()
    s = Server(data, database_url).start()
    yield s
    s.stop()


def test_published_records_are_signed_and_verify(signed_server: Server, tmp_path: Path) -> None:
    api = Api(signed_server)
    api.post("/api/channels", 201, json={"name": "team"})
    api.post("/api/channels/team/subchannels", 201, json={"name": "extra"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "liba", "1.0"), build_conda_package(pk, "liba", "2.0"),
               build_conda_package(pk, "appb", "1.0", subdir="linux-64", depends=["liba >=2"], fmt=".tar.bz2"))
    api.upload("team/extra", build_conda_package(pk, "libc", "1.0"))
    base = f"{signed_server.url}/api/repo/team"
    key_mgr = _verified_chain(base)
    assert _verified_chain(f"{base}/extra") == key_mgr  # the same metadata under every channel
    first_key = key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"][0]
    for path in ("noarch/repodata.json", "noarch/current_repodata.json", "linux-64/repodata.json"):
        assert _check_signed(requests.get(f"{base}/{path}", timeout=10).json(), key_mgr) == {first_key}
    current = requests.get(f"{base}/noarch/current_repodata.json", timeout=10).json()
    assert set(current["signatures"]) == {"liba-2.0-0.conda"}
    extra = requests.get(f"{base}/extra/noarch/repodata.json", timeout=10).json()
    assert _check_signed(extra, key_mgr) == {first_key}
    # a record changed by a byte no longer verifies
    doc = requests.get(f"{base}/noarch/repodata.json", timeout=10).json()
    rec = dict(doc["packages.conda"]["liba-2.0-0.conda"], depends=["evil"])
    with pytest.raises(trust.TrustError):
        trust.verify_record(rec, doc["signatures"]["liba-2.0-0.conda"], key_mgr)
    # rotating pkg_mgr: the new key_mgr still delegates to the old key, so what is served verifies
    # until the next publish, which re-signs everything with the new key
    subprocess.run([sys.executable, "-m", "conda_platform_plugin.cli.main", "trust", "rotate", "pkg_mgr",
                    "--data-dir", str(signed_server.data_dir)], check=True, capture_output=True)
    rotated = _verified_chain(base)
    assert rotated["signed"]["delegations"]["pkg_mgr"]["pubkeys"][1] == first_key
    assert _check_signed(requests.get(f"{base}/noarch/repodata.json", timeout=10).json(), rotated) == {first_key}
    api.upload("team", build_conda_package(pk, "libd", "1.0"))
    key_mgr = _verified_chain(base)
    second_key = key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"][0]
    assert second_key != first_key
    assert _check_signed(requests.get(f"{base}/noarch/repodata.json", timeout=10).json(), key_mgr) == {second_key}
    assert requests.get(f"{base}/trust/2.root.json", timeout=10).status_code == 404
    # no subchannel can be named "trust": <ch>/trust/… is never ambiguous
    api.post("/api/channels/team/subchannels", 400, json={"name": "trust"})
    assert requests.get(f"{base}/trust/root.key", timeout=10).status_code == 404
    # a real client still solves and installs from the signed indexes
    records = asyncio.run(rattler.solve([base, f"{base}/extra"], ["appb", "libc"], platforms=["linux-64", "noarch"],
                                        gateway=Gateway(cache_dir=tmp_path / "c", default_config=SourceConfig(
                                            sharded_enabled=False))))
    assert {r.name.normalized for r in records} == {"appb", "liba", "libc"}


def test_mirrored_records_are_signed_beside_the_upstream_signatures(signed_server: Server, tmp_path: Path) -> None:
    up = UpstreamChannel(tmp_path / "up")
    up.add("liba", "1.0")
    up.add("liba", "2.0")
    up.add("appb", "1.0", subdir="linux-64", depends=["liba"])
    up.index()
    # the upstream signs liba 2.0 with its own pkg_mgr key (delegated by its own key_mgr)
    their_key_mgr_key, their_pkg = trust.new_private_key(), trust.new_private_key()
    their_key_mgr = trust.sign_signable(trust.delegating_metadata(
        "key_mgr", {"pkg_mgr": ([trust.public_key(their_pkg)], 1)}, version=1, now=datetime.now(timezone.utc),
        lifetime=timedelta(days=30)), their_key_mgr_key)
    path = up.root / "noarch" / "repodata.json"
    doc = json.loads(path.read_text())
    doc["signatures"] = {"liba-2.0-0.conda": trust.sign_record(doc["packages.conda"]["liba-2.0-0.conda"], their_pkg)}
    path.write_text(json.dumps(doc))
    (up.root / "noarch" / "repodata.json.zst").write_bytes(zstandard.compress(path.read_bytes()))
    up.start()
    try:
        api = Api(signed_server)
        api.post("/api/channels", 201, json={"name": "team"})
        create(api, up.url, run_now=True)
        assert wait_run(api, "up")["status"] == "completed"
        base = f"{signed_server.url}/api/repo/team"
        key_mgr = _verified_chain(base)
        ours = key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"]
        for subdir in ("noarch", "linux-64"):
            served = requests.get(f"{base}/{subdir}/repodata.json", timeout=10).json()
            assert _check_signed(served, key_mgr) == set(ours)
        served = requests.get(f"{base}/noarch/repodata.json", timeout=10).json()
        sigs = served["signatures"]
        assert set(sigs["liba-2.0-0.conda"]) == {ours[0], trust.public_key(their_pkg)}
        assert set(sigs["liba-1.0-0.conda"]) == {ours[0]}
        # the upstream's signature still verifies against the upstream's key_mgr
        rec = served["packages.conda"]["liba-2.0-0.conda"]
        theirs = {trust.public_key(their_pkg): sigs["liba-2.0-0.conda"][trust.public_key(their_pkg)]}
        assert trust.verify_record(rec, theirs, their_key_mgr) == trust.public_key(their_pkg)
    finally:
        up.stop()


def test_cli_trust_init_and_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["conda-platform", "trust", *args, "--data-dir", str(data)], capture_output=True,
                              text=True)

    assert "no trust metadata" in cli("keys").stdout
    bad = cli("init", "--remove-root-key")
    assert bad.returncode == 1 and "lose the root key" in bad.stderr + bad.stdout
    assert not (data / "trust").exists()
    ok = cli("init", "--export-root-key", str(tmp_path / "offline.key"), "--remove-root-key", "--json")
    assert ok.returncode == 0, ok.stderr
    status = orjson.loads(ok.stdout)
    assert status["root_version"] == 1 and not status["root_key_on_server"]
    assert trust.public_key((tmp_path / "offline.key").read_text()) in status["root_keys"]
    again = cli("init")
    assert again.returncode == 1 and "already exists" in again.stderr + again.stdout
    rotated = cli("rotate", "root", "--root-key", str(tmp_path / "offline.key"), "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert orjson.loads(rotated.stdout)["root_version"] == 2


def test_cli_trust_enable_status_disable(signed_server: Server, tmp_path: Path) -> None:
    """Client side, without conda: the root lands in <prefix>/etc/conda, .condarc keeps its other keys."""
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / ".condarc").write_text("channels:\n  - conda-forge\nplugins:\n  platform_policy_mode: warn\n")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["conda-platform", "trust", *args, "--url", signed_server.url, "--prefix", str(prefix)],
                              capture_output=True, text=True, env={**os.environ, "CONDA_PLATFORM_CONFIG_DIR": str(tmp_path)})

    off = orjson.loads(cli("status", "--json").stdout)
    assert off["enabled"] is False and off["root"] is None
    ok = cli("enable")
    assert ok.returncode == 0, ok.stderr
    installed = prefix / "etc" / "conda" / "1.root.json"
    assert orjson.loads(installed.read_bytes()) == requests.get(f"{signed_server.url}/api/trust/1.root.json",
                                                               timeout=10).json()
    rc = yaml.safe_load((prefix / ".condarc").read_text())
    assert rc == {"channels": ["conda-forge"], "extra_safety_checks": True,
                  "signing_metadata_url_base": f"{signed_server.url}/api/trust",
                  "plugins": {"platform_policy_mode": "warn", "platform_url": signed_server.url}}
    on = orjson.loads(cli("status", "--json").stdout)
    assert on["enabled"] is True and on["root"]["version"] == 1
    assert [line.split() for line in cli("status").stdout.splitlines()][1] == ["verification", "on"]
    assert cli("disable").returncode == 0
    assert yaml.safe_load((prefix / ".condarc").read_text())["extra_safety_checks"] is False
    assert orjson.loads(cli("status", "--json").stdout)["enabled"] is False
    assert requests.get(f"{signed_server.url}/api/trust/key_mgr.json", timeout=10).json()["signed"]["type"] == "key_mgr"
    assert requests.get(f"{signed_server.url}/api/trust/pkg_mgr.key", timeout=10).status_code == 404


def test_cli_trust_enable_without_trust_metadata(server: Server, tmp_path: Path) -> None:
    r = subprocess.run(["conda-platform", "trust", "enable", "--url", server.url, "--prefix", str(tmp_path / "env")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "trust init" in r.stderr + r.stdout
    assert not (tmp_path / "env").exists()


def test_channels_published_before_trust_init_are_re_signed_at_start(server: Server, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "team"})
    api.post("/api/channels", 201, json={"name": "frozen"})
    api.upload("team", build_conda_package(tmp_path / "pk", "liba", "1.0"))
    api.upload("frozen", build_conda_package(tmp_path / "pk", "libf", "1.0"))
    api.post("/api/channels/frozen/freeze")
    base = f"{server.url}/api/repo/team"
    assert "signatures" not in requests.get(f"{base}/noarch/repodata.json", timeout=10).json()
    server.stop()
    TrustStore(server.data_dir / "trust").init()
    server.start()

    async def started() -> list[int]:
        return await server.platform.resigning

    assert len(server.call(started())) == 1  # team; a frozen channel keeps its published generation
    key_mgr = _verified_chain(f"{server.url}/api/repo/team")
    assert _check_signed(requests.get(f"{server.url}/api/repo/team/noarch/repodata.json", timeout=10).json(), key_mgr)
    assert "signatures" not in requests.get(f"{server.url}/api/repo/frozen/noarch/repodata.json", timeout=10).json()
    assert server.call(server.platform.resign()) == []  # nothing left to re-sign
