"""Python artifacts behind the type-generic API: CVEs through the OSV PyPI ecosystem (a real
advisory of idna), channel policies on uploaded python files, search, badges, copy/move/delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Api, Server
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from pybuilders import build_python_project
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from conda_platform_plugin.cves import read_path

OSV = Path("/work/shared/data/osv/pysec")
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    out = tmp_path_factory.mktemp("built")
    built = {v: build_python_project(out / v, "idna", v, license="BSD-3-Clause") for v in ("3.6", "3.7")}
    built["app"] = build_python_project(out / "app", "Tiny.App", "2.0", requires=["idna>=3", "nowhere"],
                                        license="MIT")
    return built


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


def listed(server: Server, channel: str, project: str) -> list[str]:
    r = requests.get(f"{server.url}/api/repo/{channel}/pypi/simple/{project}/", headers=JSON, timeout=30)
    return [f["filename"] for f in r.json()["files"]] if r.status_code == 200 else []


def test_cves_through_pypi_ecosystem_and_channel_policy(server: Server, built: dict) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "team"})
    api.upload("team", *(built[v]["wheel"] for v in ("3.6", "3.7")))
    api.post("/api/cves", json={"records": [d for _, d in read_path(OSV / "idna")]})
    view = api.get("/api/channels/team/artifacts/python/idna/cves").json()
    assert view["ecosystem"] == "PyPI" and view["affecting"] == 1
    assert view["cves"][0]["id"] == "PYSEC-2024-60" and view["cves"][0]["cve"] == "CVE-2024-3651"
    assert {f["version"]: f["cves"] for f in view["files"]} == {"3.6": ["PYSEC-2024-60"], "3.7": []}
    assert len(listed(server, "team", "idna")) == 2
    # a CVE rule on the channel: the uploaded 3.6 leaves the simple index, 3.7 stays
    api.post("/api/policies", 201, json={"name": "no-cves", "rules": [{"kind": "cve", "only_fixed": True}]})
    api.post("/api/policies/no-cves/apply", json={"channel": "team"})
    assert listed(server, "team", "idna") == [built["3.7"]["wheel"].name]
    api.post("/api/policies", 201, json={"name": "mit", "rules": [{"kind": "license", "allow": ["MIT"]}]})
    api.post("/api/policies/mit/apply", json={"channel": "team"})
    assert listed(server, "team", "idna") == []  # BSD-3-Clause is not allowed


def test_search_badges_copy_move_delete(server: Server, built: dict) -> None:
    api = Api(server)
    for name in ("a", "b"):
        api.post("/api/channels", 201, json={"name": name})
    wheel = built["3.7"]["wheel"]
    api.upload("a", wheel, built["3.7"]["sdist"])
    found = api.get("/api/search", params={"q": "idna", "type": "python"}).json()["items"]
    assert {(i["channel"], i["type"], i["name"]) for i in found} == {("a", "python", "idna")}
    svg = api.get("/api/channels/a/artifacts/python/idna/badges/version.svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml") and "3.7" in svg.text
    assert "BSD-3-Clause" in api.get("/api/channels/a/artifacts/python/idna/badges/license.svg").text

    api.post("/api/channels/a/files/copy", json={"files": [f"pypi/{wheel.name}"], "target": "b"})
    assert listed(server, "b", "idna") == [wheel.name]
    assert requests.get(f"{server.url}/api/repo/b/pypi/files/{wheel.name}", timeout=30).content == wheel.read_bytes()
    api.post("/api/channels/a/files/move", json={"files": [f"pypi/{built['3.7']['sdist'].name}"], "target": "b"})
    assert listed(server, "a", "idna") == [wheel.name] and len(listed(server, "b", "idna")) == 2
    api.request("DELETE", "/api/channels/b/artifacts/python/idna")
    assert listed(server, "b", "idna") == []
    assert requests.get(f"{server.url}/api/repo/b/pypi/simple/", headers=JSON, timeout=30).json()["projects"] == []
    api.get("/api/channels/b/artifacts/python/idna", expect=404)


def test_sboms_of_python_files(server: Server, built: dict, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "s"})
    api.upload("s", built["app"]["wheel"], built["3.6"]["wheel"], built["3.7"]["wheel"])
    wheel = built["app"]["wheel"].name
    r = api.get(f"/api/channels/s/files/pypi/{wheel}/sbom")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(r.text) is None
    doc = r.json()
    meta = doc["metadata"]["component"]
    assert meta["purl"] == f"pkg:pypi/tiny-app@2.0?file_name={wheel}"
    assert meta["licenses"] == [{"expression": "MIT"}]
    refs = {e["type"]: e["url"] for e in meta["externalReferences"]}
    assert refs["distribution"] == f"{server.url}/api/repo/s/pypi/files/{wheel}"
    # idna>=3 resolves to the newest idna; "nowhere" is not in the channel and is left out
    assert [(c["name"], c["version"]) for c in doc["components"]] == [("idna", "3.7")]
    assert doc["components"][0]["purl"].startswith("pkg:pypi/idna@3.7")
    r = api.get(f"/api/channels/s/files/pypi/{wheel}/sbom", params={"format": "spdx"},
                headers={"Host": "pkgs.example.com"})
    path = tmp_path / "app.spdx.json"
    path.write_bytes(r.content)
    assert validate_full_spdx_document(parse_file(str(path))) == []


def test_mirror_cve_policy_through_pypi_ecosystem(server: Server, built: dict) -> None:
    """A python mirror's own CVE policy judges the mirrored idna files by the OSV PyPI advisory."""
    from test_mirror import wait_run

    api = Api(server)
    api.post("/api/channels", 201, json={"name": "origin"})
    api.upload("origin", *(built[v]["wheel"] for v in ("3.6", "3.7")))
    api.post("/api/cves", json={"records": [d for _, d in read_path(OSV / "idna")]})
    api.post("/api/policies", 201, json={"name": "no-cves", "rules": [{"kind": "cve"}]})
    api.post("/api/channels", 201, json={"name": "safe"})
    api.post("/api/channels/safe/mirrors", 201, json={
        "name": "up", "type": "python", "policy": "no-cves", "run_now": True, "projects": ["IDNA"],
        "source_url": f"{server.url}/api/repo/origin/pypi/simple"})
    run = wait_run(api, "up", base="/api/channels/safe/mirrors")
    assert run["status"] == "completed" and run["figures"]["filtered_by_rule"] == {"cve": 1}, run
    filtered = api.get("/api/channels/safe/mirrors/up/packages", params={"state": "filtered"}).json()["items"]
    assert [(f["filename"], f["rule"]) for f in filtered] == [(built["3.6"]["wheel"].name, "cve")]
    assert "CVE-2024-3651" in filtered[0]["reason"]
    assert listed(server, "safe", "idna") == [built["3.7"]["wheel"].name]
    assert api.get("/api/channels/safe/artifacts/python/IDNA").json()["name"] == "idna"  # normalized lookup
