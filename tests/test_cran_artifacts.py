"""R packages behind the same API as conda ones: artifact, readme (the Description), files,
dependencies resolved among the channel's R packages, CVEs through OSV's CRAN ecosystem, search,
copy/move/delete, badges and SBOMs (purl pkg:cran/…)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from conftest import Api, Server
from rbuilders import build_r_source

from conda_platform_plugin.rformats import parse_dcf

ART = "/api/channels/rpk/artifacts/cran"
#: an OSV record as the CRAN ecosystem's advisories (RSEC) are written
ADVISORY = {
    "id": "RSEC-2099-1", "aliases": ["CVE-2099-0001"], "modified": "2099-01-02T00:00:00Z",
    "published": "2099-01-01T00:00:00Z", "summary": "rdepx evaluates untrusted input",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [{"package": {"ecosystem": "CRAN", "name": "rdepx"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.4.0"}]}]}],
}


@pytest.fixture
def rpk(api: Api, tmp_path: Path) -> Api:
    api.post("/api/channels", 201, json={"name": "rpk"})
    api.upload("rpk",
               build_r_source(tmp_path, "rdepx", "0.3.0", License="MIT + file LICENSE"),
               build_r_source(tmp_path, "rdepx", "0.4.1", License="MIT + file LICENSE"),
               build_r_source(tmp_path, "rappx", "2.0", Imports="rdepx (>= 0.3), utils", Suggests="testthat",
                              License="GPL-2 | GPL-3", URL="https://example.org/rappx, https://github.com/x/rappx",
                              BugReports="https://github.com/x/rappx/issues"))
    return api


def test_artifact_readme_files_and_dependencies(rpk: Api) -> None:
    art = rpk.get(f"{ART}/rappx").json()
    assert (art["type"], art["name"], art["latest_version"], art["summary"]) == \
        ("cran", "rappx", "2.0", "The rappx Test Package")
    assert art["license"] == "GPL-2 | GPL-3" and art["subdirs"] == ["cran-src"]
    assert (art["home"], art["dev_url"]) == ("https://example.org/rappx", "https://github.com/x/rappx/issues")
    assert rpk.get(f"{ART}/rdepx").json()["versions"] == ["0.4.1", "0.3.0"]
    readme = rpk.get(f"{ART}/rappx/readme").json()
    assert readme["content"].startswith("A tiny package (rappx)")
    assert "<p>" in rpk.get(f"{ART}/rappx/readme", params={"format": "html"}).json()["content"]
    files = rpk.get(f"{ART}/rdepx/files").json()["items"]
    assert [f["filename"] for f in files] == ["rdepx_0.4.1.tar.gz", "rdepx_0.3.0.tar.gz"]
    deps = rpk.get(f"{ART}/rappx/dependencies").json()
    (item,) = deps["files"]
    assert [d["name"] for d in item["depends"]] == ["rdepx", "utils"]
    imports = {d["name"]: d for d in item["r_dependencies"]["imports"]}
    assert imports["utils"]["base"] and imports["utils"]["satisfied"]
    assert imports["rdepx"]["constraint"] == ">= 0.3" and imports["rdepx"]["satisfied"]
    assert [c["version"] for c in imports["rdepx"]["candidates"]] == ["0.4.1", "0.3.0"]
    (suggests,) = item["r_dependencies"]["suggests"]
    assert (suggests["name"], suggests["satisfied"]) == ("testthat", False)
    rpk.get(f"{ART}/nothere", 404)
    rpk.get(f"{ART}/rappx/dependencies", 404, params={"version": "9.9"})


def test_cves_of_r_packages_come_from_osv_cran_records(rpk: Api) -> None:
    rpk.post("/api/cves", json={"records": [ADVISORY]})
    report = rpk.get(f"{ART}/rdepx/cves").json()
    assert (report["ecosystem"], report["ecosystem_name"], report["affecting"]) == ("CRAN", "rdepx", 1)
    (cve,) = report["cves"]
    assert cve["id"] == "RSEC-2099-1" and cve["affected_versions"] == ["0.3.0"]
    assert [f["cves"] for f in report["files"]] == [[], ["RSEC-2099-1"]]  # 0.4.1 is fixed
    # a CVE rule of the channel's policy leaves the affected version out of PACKAGES (and Archive/)
    rpk.post("/api/policies", 201, json={"name": "no-cves", "rules": [{"kind": "cve"}]})
    rpk.post("/api/policies/no-cves/apply", json={"channel": "rpk"})
    base = f"{rpk.server.url}/api/repo/rpk/cran/src/contrib"
    assert [(s["Package"], s["Version"]) for s in parse_dcf(requests.get(f"{base}/PACKAGES", timeout=30).text)] == \
        [("rappx", "2.0"), ("rdepx", "0.4.1")]
    assert requests.get(f"{base}/Archive/rdepx/rdepx_0.3.0.tar.gz", timeout=30).status_code == 404


def test_search_copy_move_and_delete(server: Server, rpk: Api) -> None:
    found = rpk.get("/api/search", params={"q": "rapp*"}).json()["items"]
    assert [(i["type"], i["name"]) for i in found] == [("cran", "rappx")]
    rpk.post("/api/channels", 201, json={"name": "prod"})
    rpk.post("/api/channels/rpk/files/copy", json={"files": ["cran-src/rdepx_0.4.1.tar.gz"], "target": "prod"})
    rpk.post("/api/channels/rpk/files/move", json={"files": ["cran-src/rappx_2.0.tar.gz"], "target": "prod"})
    prod = f"{server.url}/api/repo/prod/cran/src/contrib"
    assert [s["Package"] for s in parse_dcf(requests.get(f"{prod}/PACKAGES", timeout=30).text)] == ["rappx", "rdepx"]
    rpk.get(f"{ART}/rappx", 404)
    rpk.request("DELETE", f"{ART}/rdepx")
    assert requests.get(f"{server.url}/api/repo/rpk/cran/src/contrib/PACKAGES", timeout=30).text == ""
    assert rpk.get("/api/channels/prod/artifacts/cran/rdepx").json()["latest_version"] == "0.4.1"


def test_badges_and_sboms(server: Server, rpk: Api) -> None:
    svg = rpk.get(f"{ART}/rappx/badges/version.svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml") and "2.0" in svg.text
    assert "GPL" in rpk.get(f"{ART}/rappx/badges/license.svg").text
    cdx = rpk.get("/api/channels/rpk/files/cran-src/rappx_2.0.tar.gz/sbom").json()
    subject = cdx["metadata"]["component"]
    assert subject["purl"] == "pkg:cran/rappx@2.0"
    assert subject["licenses"] == [{"expression": "GPL-2.0-only OR GPL-3.0-only"}]  # R's license syntax, normalised
    (dep,) = cdx["components"]
    assert dep["purl"] == "pkg:cran/rdepx@0.4.1"  # the newest that satisfies rdepx (>= 0.3); utils is R's own
    assert {r["url"] for r in dep["externalReferences"]} == {
        f"{server.url}/api/repo/rpk/cran/src/contrib/rdepx_0.4.1.tar.gz"}
    deps = {d["ref"]: d.get("dependsOn", []) for d in cdx["dependencies"]}
    assert deps["cran-src/rappx_2.0.tar.gz"] == ["cran-src/rdepx_0.4.1.tar.gz"]
    spdx = rpk.get("/api/channels/rpk/files/cran-src/rappx_2.0.tar.gz/sbom", params={"format": "spdx"}).json()
    assert {p["externalRefs"][0]["referenceLocator"] for p in spdx["packages"]} == {
        "pkg:cran/rappx@2.0", "pkg:cran/rdepx@0.4.1"}
    assert any(r["relationshipType"] == "DEPENDS_ON" for r in spdx["relationships"])
