"""SBOMs served per package file (a real zlib package, its dependencies resolved in the channel),
validated like tests/test_sbom.py does; the CLI's package sbom, dependents and badges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import ZLIB_CONDA, build_conda_package
from conftest import Api, Server, channel_api
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from test_api import assert_error, create
from test_cli import cli, cli_json, error_line


def _channel(api: Api, tmp_path: Path, channel: str) -> None:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    api.upload(channel, ZLIB_CONDA,  # real: zlib 1.2.11 linux-64, depends on libgcc-ng >=7.3.0
               build_conda_package(tmp_path, "libgcc-ng", "9.1.0", "hdf63c60_0", subdir="linux-64",
                                   depends=["_libgcc_mutex * main"], license="GPL-3.0-only WITH GCC-exception-3.1"),
               build_conda_package(tmp_path, "libgcc-ng", "5.4.0", "0", subdir="linux-64"),  # too old
               build_conda_package(tmp_path, "_libgcc_mutex", "0.1", "main", subdir="linux-64", license="None"))


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_sboms_of_a_real_package_validate(api: Api, tmp_path: Path, channel: str) -> None:
    _channel(api, tmp_path, channel)
    url = f"{channel_api(channel)}/files/linux-64/{ZLIB_CONDA.name}/sbom"
    r = api.get(url)
    assert r.headers["Content-Type"].startswith("application/vnd.cyclonedx+json")
    assert r.headers["Content-Disposition"] == f'attachment; filename="{ZLIB_CONDA.name}.cdx.json"'
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(r.text) is None
    doc = r.json()
    meta = doc["metadata"]["component"]
    repo = f"{api.server.url}/api/repo/{channel}"
    assert meta["name"] == "zlib" and meta["version"] == "1.2.11"
    assert meta["purl"].startswith("pkg:conda/zlib@1.2.11?") and "subdir=linux-64" in meta["purl"]
    assert meta["licenses"] == [{"expression": "Zlib"}]  # "zlib" in the package, normalized
    assert {h["alg"] for h in meta["hashes"]} == {"SHA-256", "MD5"}
    refs = {e["type"]: e["url"] for e in meta["externalReferences"]}
    assert refs["website"] == "http://zlib.net/" and refs["distribution"] == f"{repo}/linux-64/{ZLIB_CONDA.name}"
    comps = {c["name"]: c for c in doc["components"]}
    assert set(comps) == {"libgcc-ng", "_libgcc_mutex"}
    assert comps["libgcc-ng"]["version"] == "9.1.0"  # the newest that satisfies >=7.3.0
    deps = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    assert deps[meta["bom-ref"]] == {comps["libgcc-ng"]["bom-ref"]}
    assert deps[comps["libgcc-ng"]["bom-ref"]] == {comps["_libgcc_mutex"]["bom-ref"]}

    # SPDX download locations must name a DNS host (not 127.0.0.1): the name clients use, as a
    # reverse proxy passes it on in Host, goes into every URL of the document
    r = api.get(url, params={"format": "spdx"}, headers={"Host": "pkgs.example.com"})
    repo = f"http://pkgs.example.com/api/repo/{channel}"
    assert r.headers["Content-Type"].startswith("application/spdx+json")
    path = tmp_path / "zlib.spdx.json"
    path.write_bytes(r.content)
    parsed = parse_file(str(path))
    assert validate_full_spdx_document(parsed) == []
    assert sorted(p.name for p in parsed.packages) == ["_libgcc_mutex", "libgcc-ng", "zlib"]
    assert len([x for x in parsed.relationships if x.relationship_type.name == "DEPENDS_ON"]) == 2
    zlib = next(p for p in r.json()["packages"] if p["name"] == "zlib")
    assert zlib["licenseDeclared"] == "Zlib" and zlib["downloadLocation"] == f"{repo}/linux-64/{ZLIB_CONDA.name}"

    assert_error(api.get(url, params={"format": "swid"}, expect=400), 400)
    assert_error(api.get(f"{channel_api(channel)}/files/linux-64/nope-1-0.conda/sbom", expect=404), 404)


def test_cli_sbom_dependents_and_badges(server: Server, api: Api, tmp_path: Path) -> None:
    _channel(api, tmp_path, "team")
    out = tmp_path / "zlib.cdx.json"
    r = cli(server, "package", "sbom", "team", f"linux-64/{ZLIB_CONDA.name}", "-o", str(out))
    assert str(out) in r.stdout
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(out.read_text()) is None
    spdx = json.loads(cli(server, "package", "sbom", "team", f"linux-64/{ZLIB_CONDA.name}", "--format", "spdx").stdout)
    assert spdx["spdxVersion"] == "SPDX-2.3" and len(spdx["packages"]) == 3
    assert "not found" in error_line(cli(server, "package", "sbom", "team", "linux-64/nope-1-0.conda", code=1))
    assert not list(tmp_path.glob(".sbom-*"))

    table = cli(server, "package", "dependents", "team", "libgcc-ng").stdout
    assert "zlib" in table and "libgcc-ng >=7.3.0" in table and "linux-64" in table
    data = cli_json(server, "package", "dependents", "team", "_libgcc_mutex")
    assert [d["name"] for d in data["items"]] == ["libgcc-ng"]

    snippets = cli(server, "package", "badges", "team", "zlib").stdout.splitlines()
    assert len(snippets) == 6 and snippets[0].startswith("[![zlib version](")
    rst = cli(server, "package", "badges", "team", "zlib", "--format", "rst").stdout
    assert rst.count(".. image::") == 6


def test_cli_badges_of_a_private_channel_carry_the_token_only_when_asked(server: Server, api: Api,
                                                                        tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "secret", "private": True})
    api.upload("secret", build_conda_package(tmp_path, "tool", "1.0"))
    plain = cli(server, "package", "badges", "secret", "tool", "--format", "html").stdout
    assert server.admin_token not in plain and plain.count("<img") == 6
    with_token = cli_json(server, "package", "badges", "secret", "tool", "--with-token")
    assert with_token["token_included"]
    assert all(b["image_url"].endswith(f"?token={server.admin_token}") for b in with_token["badges"])
