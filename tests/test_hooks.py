"""The conda plugin's hook actions as plain functions (no conda): duck-typed specs and records
against a real server with signed metadata and a channel policy; the policy cache and its fallback
when the server is stopped; enforce against warn; signatures valid, tampered and missing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import zstandard
from builders import build_conda_package
from conftest import Api, Server

from conda_platform_plugin import hooks
from conda_platform_plugin.client import ClientError
from proxy.store.signing import TrustStore


class Spec:
    def __init__(self, text: str):
        self.text = text
        self.name = text.split()[0]

    def __str__(self) -> str:
        return self.text


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _setup(server: Server, tmp_path: Path) -> Api:
    """team (policy: no bad*, no GPL3): liba; other (no policy): gpllib (GPL-3.0), badpkg."""
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "team"})
    api.post("/api/channels", 201, json={"name": "other"})
    pk = tmp_path / "pk"
    api.upload("team", build_conda_package(pk, "liba", "1.0"))
    api.upload("other", build_conda_package(pk, "gpllib", "1.0", license="GPL-3.0-only"),
               build_conda_package(pk, "badpkg", "1.0"))
    api.post("/api/policies", 201, json={"name": "org", "rules": [
        {"kind": "name", "exclude": ["bad*"]}, {"kind": "license", "deny_families": ["GPL3"]}]})
    api.post("/api/policies/org/apply", json={"channel": "team"})
    return api


@pytest.fixture
def signed(tmp_path: Path):  # noqa: ANN201
    TrustStore(tmp_path / "data" / "trust").init()
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


def _settings(server: Server, tmp_path: Path, mode: str = "enforce", **kw) -> hooks.Settings:  # noqa: ANN003
    return hooks.Settings(url=server.url, token=server.admin_token, policy_mode=mode,
                          cache_dir=tmp_path / "cache", **kw)


def _records(server: Server, channel: str, *names: str) -> list[SimpleNamespace]:
    """Records as a solver hands them over (attributes, not dicts), from the served repodata."""
    base = f"{server.url}/api/repo/{channel}"
    doc = requests.get(f"{base}/noarch/repodata.json", timeout=10).json()
    out = []
    for fn, rec in doc["packages.conda"].items():
        if rec["name"] in names:
            out.append(SimpleNamespace(**{**rec, "depends": tuple(rec.get("depends", ()))}, fn=fn,
                                       url=f"{base}/noarch/{fn}", channel=SimpleNamespace(base_url=base)))
    assert len(out) == len(names)
    return out


def test_pre_solve_blocks_names_from_the_server_policy(signed: Server, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    _setup(signed, tmp_path)
    channels = [f"{signed.url}/api/repo/team", "https://conda.anaconda.org/conda-forge"]
    with pytest.raises(hooks.PolicyBlocked) as e:
        hooks.pre_solve([Spec("liba"), Spec("badpkg >=1")], channels, _settings(signed, tmp_path))
    assert [(s, v.rule) for s, v in e.value.blocked] == [("badpkg >=1", "name")]
    assert "'badpkg >=1' is blocked by the platform policy: rule name: name matches the excluded pattern 'bad*'" \
        in str(e.value)
    hooks.pre_solve([Spec("badpkg")], channels, _settings(signed, tmp_path, "warn"))
    assert "would be blocked" in capsys.readouterr().out
    hooks.pre_solve([Spec("badpkg")], channels, _settings(signed, tmp_path, "off"))
    # a subchannel's own policy
    api = Api(signed)
    api.post("/api/channels/other/subchannels", 201, json={"name": "sub"})
    api.post("/api/policies/org/apply", json={"channel": "other/sub"})
    with pytest.raises(hooks.PolicyBlocked):
        hooks.pre_solve([Spec("badpkg")], [f"{signed.url}/api/repo/other/sub"], _settings(signed, tmp_path))
    hooks.pre_solve([Spec("badpkg")], [f"{signed.url}/api/repo/other"], _settings(signed, tmp_path))
    # channels that are not the platform's have no policy here
    hooks.pre_solve([Spec("badpkg")], ["https://conda.anaconda.org/conda-forge"], _settings(signed, tmp_path))


def test_policy_cache_ttl_and_fallback_when_the_server_is_stopped(signed: Server, tmp_path: Path) -> None:
    api = _setup(signed, tmp_path)
    clock = Clock()
    settings = _settings(signed, tmp_path, clock=clock, ttl=60)
    channels = [f"{signed.url}/api/repo/team"]
    with pytest.raises(hooks.PolicyBlocked):
        hooks.pre_solve([Spec("badpkg")], channels, settings)
    api.request("PATCH", "/api/policies/org", json={"rules": [{"kind": "name", "exclude": ["worse*"]}]})
    with pytest.raises(hooks.PolicyBlocked):  # within the TTL: the cached policy
        hooks.pre_solve([Spec("badpkg")], channels, settings)
    clock.now += 61  # past it: the edited policy from the server
    hooks.pre_solve([Spec("badpkg")], channels, settings)
    with pytest.raises(hooks.PolicyBlocked):
        hooks.pre_solve([Spec("worse")], channels, settings)
    signed.stop()
    clock.now += 3600  # stale, and the server is away: the cached policy still holds
    with pytest.raises(hooks.PolicyBlocked):
        hooks.pre_solve([Spec("worse")], channels, settings)
    with pytest.raises(ClientError):  # nothing cached for this server: the failure is said
        hooks.pre_solve([Spec("worse")], channels, _settings(signed, tmp_path / "elsewhere"))


def test_post_solve_enforce_and_warn_with_trusted_signatures(signed: Server, tmp_path: Path) -> None:
    _setup(signed, tmp_path)
    channels = [f"{signed.url}/api/repo/team", f"{signed.url}/api/repo/other"]
    records = _records(signed, "team", "liba") + _records(signed, "other", "gpllib")
    printed: list[str] = []
    with pytest.raises(hooks.PolicyViolations) as e:
        hooks.post_solve(records, channels, _settings(signed, tmp_path), out=printed.append)
    assert e.value.violations == ["gpllib-1.0-0: rule license: license GPL-3.0-only is denied by the policy "
                                  "(GPL-3.0-only; family GPL3) (policy of team)"]
    assert "gpllib-1.0-0: rule license" in str(e.value) and "nothing was changed" in str(e.value)
    key = TrustStore(signed.data_dir / "trust").key_mgr()["signed"]["delegations"]["pkg_mgr"]["pubkeys"][0]
    assert f"  team::liba-1.0-0 (INFO: package metadata is signed by {key} and trusted)" in printed
    printed.clear()
    report = hooks.post_solve(records, channels, _settings(signed, tmp_path, "warn"), out=printed.append)
    assert len(report.violations) == 1 and any(p.startswith("warning: platform policy: gpllib") for p in printed)
    assert sum("and trusted)" in p for p in printed) == 2
    # the installed root (trust enable) is what the chain starts from; a foreign root fails verification
    other = TrustStore(tmp_path / "foreign")
    other.init()
    printed.clear()
    settings = _settings(signed, tmp_path, "off", trust_root=other.dir / "1.root.json", require_signatures=True)
    with pytest.raises(hooks.PolicyViolations, match="signature"):
        hooks.post_solve(records, channels, settings, out=printed.append)
    assert all(hooks.FAILED in p for p in printed)


def test_tampered_and_missing_signatures(signed: Server, tmp_path: Path) -> None:
    _setup(signed, tmp_path)
    channels = [f"{signed.url}/api/repo/team"]
    records = _records(signed, "team", "liba")
    served = requests.get(f"{channels[0]}/noarch/repodata.json", timeout=10).json()
    good = next(iter(served["signatures"]["liba-1.0-0.conda"].values()))["signature"]
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    tampered = 0
    for path in (signed.data_dir / "indexes").rglob("repodata.json"):
        data = path.read_bytes()
        if good.encode() in data:
            path.write_bytes(data.replace(good.encode(), bad.encode()))
            (path.parent / (path.name + ".zst")).write_bytes(zstandard.compress(path.read_bytes()))
            tampered += 1
    assert tampered
    printed: list[str] = []
    hooks.post_solve(records, channels, _settings(signed, tmp_path, "off"), out=printed.append)
    assert printed == [f"  team::liba-1.0-0 {hooks.FAILED}"]
    with pytest.raises(hooks.PolicyViolations, match="liba-1.0-0: signature: expected good signatures from 1"):
        hooks.post_solve(records, channels, _settings(signed, tmp_path, "off", require_signatures=True),
                         out=printed.append)


def test_unsigned_server_records(server: Server, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "team"})
    api.upload("team", build_conda_package(tmp_path / "pk", "liba", "1.0"))
    records = _records(server, "team", "liba")
    printed: list[str] = []
    hooks.post_solve(records, [], _settings(server, tmp_path, "warn"), out=printed.append)
    assert printed == [f"  team::liba-1.0-0 {hooks.FAILED}"]
    with pytest.raises(hooks.PolicyViolations):
        hooks.post_solve(records, [], _settings(server, tmp_path, "warn", require_signatures=True), out=printed.append)


def test_platform_channel_and_host() -> None:
    s = hooks.Settings(url="http://h:8000/prefix")
    assert hooks.platform_channel("http://h:8000/prefix/api/repo/team", s) == "team"
    assert hooks.platform_channel("http://h:8000/prefix/t/tok/api/repo/team/sub", s) == "team/sub"
    assert hooks.platform_channel("http://h:8000/prefix/api/repo/team/noarch/a-1-0.conda", s) == "team"
    assert hooks.platform_channel("http://other:8000/prefix/api/repo/team", s) is None
    assert hooks.is_platform_host("http://h:8000/x", s) and not hooks.is_platform_host("http://h:8001/x", s)
    with pytest.raises(ValueError):
        hooks.Settings(policy_mode="loud")


def test_health_checks(signed: Server, tmp_path: Path) -> None:
    root = tmp_path / "etc" / "conda" / "1.root.json"
    checks = hooks.health(_settings(signed, tmp_path, trust_root=root))
    assert [ok for ok, _ in checks] == [True, True, False]
    assert "user admin" in checks[1][1] and "no trust root" in checks[2][1]
    root.parent.mkdir(parents=True)
    root.write_bytes(requests.get(f"{signed.url}/api/trust/1.root.json", timeout=10).content)
    bad_token = hooks.Settings(url=signed.url, token="cpt_not-a-token", trust_root=root)
    checks = hooks.health(bad_token)
    assert [ok for ok, _ in checks] == [True, False, True] and "not accepted" in checks[1][1]
    signed.stop()
    checks = hooks.health(bad_token)
    assert not checks[0][0] and "does not answer" in checks[0][1]
    assert hooks.health(hooks.Settings()) == [(False, "platform_url is not set (conda config --set "
                                                      "plugins.platform_url URL)")]


def test_post_solve_judges_records_of_other_channels_too(signed: Server, tmp_path: Path) -> None:
    """A record from a channel that is not the platform's: no signature marker, the policy still applies."""
    _setup(signed, tmp_path)
    foreign = SimpleNamespace(name="gpltool", version="2.0", build="h1_0", build_number=0, subdir="noarch",
                              fn="gpltool-2.0-h1_0.conda", license="GPL-3.0-or-later", depends=(),
                              url="https://conda.example.org/forge/noarch/gpltool-2.0-h1_0.conda")
    printed: list[str] = []
    with pytest.raises(hooks.PolicyViolations) as e:
        hooks.post_solve([foreign], [f"{signed.url}/api/repo/team"], _settings(signed, tmp_path), out=printed.append)
    assert e.value.violations[0].startswith("gpltool-2.0-h1_0: rule license:")
    assert printed == []


def test_post_solve_cve_rules_use_the_servers_advisories(server: Server, tmp_path: Path) -> None:
    """A CVE rule in the channel policy is judged on the client with the server's own OSV records
    (the real PYSEC advisories of requests), cached like the policy for when the server is away."""
    import yaml
    from builders import SHARED_DATA

    api = Api(server)
    api.post("/api/channels", 201, json={"name": "py"})
    pk = tmp_path / "pk"
    api.upload("py", build_conda_package(pk, "requests", "2.2.0", "py_0", noarch="python", depends=["python"]),
               build_conda_package(pk, "requests", "2.31.0", "py_0", noarch="python", depends=["python"]))
    osv = [yaml.safe_load(p.read_text()) for p in sorted((SHARED_DATA / "osv" / "pysec" / "requests").glob("*.yaml"))]
    api.post("/api/cves", json={"records": osv})
    api.post("/api/policies", 201, json={"name": "nocve", "rules": [{"kind": "cve", "ignore": ["PYSEC-2023-74"]}]})
    api.post("/api/policies/nocve/apply", json={"channel": "py"})
    base = f"{server.url}/api/repo/py"
    # the channel's own indexes are filtered already: judge the solver's records (e.g. from a cache)
    old, new = (SimpleNamespace(name="requests", version=v, build="py_0", build_number=0, subdir="noarch",
                                noarch="python", depends=("python",), license="MIT", timestamp=0,
                                fn=f"requests-{v}-py_0.conda", url=f"{base}/noarch/requests-{v}-py_0.conda",
                                channel=SimpleNamespace(base_url=base)) for v in ("2.2.0", "2.31.0"))
    settings = _settings(server, tmp_path)
    with pytest.raises(hooks.PolicyViolations) as e:
        hooks.post_solve([old, new], [base], settings, out=lambda _line: None)
    assert len(e.value.violations) == 1
    assert e.value.violations[0].startswith("requests-2.2.0-py_0: rule cve: affected by CVE-2014-1829")
    assert hooks.post_solve([new], [base], settings, out=lambda _line: None).violations == []
    # the advisories are cached: with the server stopped the same verdict comes from the cache
    server.stop()
    with pytest.raises(hooks.PolicyViolations, match="rule cve"):
        hooks.post_solve([old], [base], _settings(server, tmp_path, ttl=0.0), out=lambda _line: None)
