"""SBOMs of a real conda-forge package with its dependencies resolved in the real repodata,
validated against the CycloneDX 1.6 JSON schema and by the SPDX project's own validator."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from test_dependencies import _newest, _records

from conda_platform_plugin.dependencies import DependencyIndex
from conda_platform_plugin.sbom import SbomPackage, cyclonedx, spdx

URL = "https://pkgs.example.com/api/repo/forge"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def subject_and_deps() -> tuple[SbomPackage, list]:
    index = DependencyIndex(_records("linux-64", "noarch"))
    root = _newest(index, "python")
    report = index.report([root])

    def pkg(key: tuple[str, str]) -> SbomPackage:
        rec = index.records[key]
        spdx_id = rec.get("license") if rec.get("license") in ("Python-2.0", "MIT", "Zlib", "GPL-3.0-only") else None
        return SbomPackage("forge", URL, key[0], key[1], rec, {"home": f"https://example.org/{rec['name']}"}, spdx_id)

    deps = [(pkg(d.key), [f"{s}/{f}" for s, f in d.needed_by]) for d in report.dependencies]
    return pkg(root), deps


def test_cyclonedx_validates_and_describes_the_tree(subject_and_deps) -> None:  # noqa: ANN001
    subject, deps = subject_and_deps
    doc = cyclonedx(subject, deps, NOW)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert errors is None, errors
    assert doc["specVersion"] == "1.6"
    meta = doc["metadata"]["component"]
    assert meta["name"] == "python" and meta["purl"].startswith(f"pkg:conda/python@{subject.version}?")
    assert "subdir=linux-64" in meta["purl"] and "channel=https" in meta["purl"]
    assert {h["alg"] for h in meta["hashes"]} >= {"SHA-256"}
    names = {c["name"] for c in doc["components"]}
    assert {"openssl", "libzlib"} <= names
    by_ref = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    openssl = next(c["bom-ref"] for c in doc["components"] if c["name"] == "openssl")
    assert openssl in by_ref[subject.ref]
    refs = {e["type"] for e in meta["externalReferences"]}
    assert {"website", "distribution"} <= refs


def test_spdx_validates_with_the_spdx_tools(subject_and_deps, tmp_path: Path) -> None:  # noqa: ANN001
    subject, deps = subject_and_deps
    doc = spdx(subject, deps, NOW, "https://pkgs.example.com/sbom")
    path = tmp_path / "python.spdx.json"
    path.write_bytes(orjson.dumps(doc))
    parsed = parse_file(str(path))
    problems = validate_full_spdx_document(parsed)
    assert problems == [], problems[:3]
    assert len(parsed.packages) == 1 + len(deps)
    depends_on = [r for r in parsed.relationships if r.relationship_type.name == "DEPENDS_ON"]
    assert len(depends_on) == sum(len(n) for _, n in deps)
    purls = [ref.locator for p in parsed.packages for ref in p.external_references]
    assert all(p.startswith("pkg:conda/") for p in purls)
