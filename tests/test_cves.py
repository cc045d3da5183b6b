"""OSV advisories: reading (YAML, JSON, zip), CVSS scores, ecosystems of conda names, and the
matching of the real PYSEC records against real conda records of requests, urllib3, numpy and pip."""

from __future__ import annotations

import zipfile

import orjson
import pytest
import yaml
import zstandard
from builders import SHARED_DATA

from conda_platform_plugin.cves import (
    CveIndex,
    artifact_report,
    cvss_score,
    ecosystem_of,
    parse_advisory,
    parse_documents,
    read_path,
    severity_of,
)
from conda_platform_plugin.errors import BadRequest

OSV = SHARED_DATA / "osv"
#: conda-forge's pip (subchannel snapshot), numpy 1.26.4 (mamba's conda-forge slice), and the
#: requests/urllib3/numpy/pip records of conda's solver fixtures (free/main/conda-forge, 2017-2018)
SOURCES = ["repodata/conda-forge-subchannel-py39/noarch/repodata.json.zst",
           "repodata/conda-forge-subchannel-py39/linux-64/repodata.json.zst",
           "repodata/mamba/conda-forge-numpy-linux-64.json",
           "repodata/conda-tests/index4.json.zst", "repodata/conda-tests/index5.json.zst"]
NAMES = ("requests", "urllib3", "numpy", "pip")


def _records(rel: str) -> dict[str, dict]:
    path = SHARED_DATA / rel
    raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read() if rel.endswith(".zst") else \
        path.read_bytes()
    doc = orjson.loads(raw)
    if "packages" in doc or "packages.conda" in doc:
        return {**doc.get("packages", {}), **doc.get("packages.conda", {})}
    return doc


@pytest.fixture(scope="module")
def index() -> CveIndex:
    return CveIndex(parse_advisory(d) for _, d in read_path(OSV / "pysec"))


@pytest.fixture(scope="module")
def real_records() -> list[tuple[str, str, dict]]:
    out = [(rel, fn, r) for rel in SOURCES for fn, r in _records(rel).items() if r["name"] in NAMES]
    assert {r["name"] for _, _, r in out} == set(NAMES)
    return out


def test_yaml_directory_json_array_and_zip_give_the_same_advisories(tmp_path) -> None:
    from_yaml = {d["id"]: d for _, d in read_path(OSV / "pysec")}
    from_json = {d["id"]: d for _, d in read_path(OSV / "pysec_selected.osv.json")}
    assert len(from_yaml) == 133 and from_yaml.keys() == from_json.keys()
    assert {k: parse_advisory(v) for k, v in from_yaml.items()} == {k: parse_advisory(v) for k, v in from_json.items()}
    archive = tmp_path / "osv.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((OSV / "pysec" / "requests").glob("*.yaml")):
            z.write(p, f"requests/{p.name}")
    assert sorted(d["id"] for _, d in read_path(archive)) == sorted(
        k for k, v in from_yaml.items() if v["affected"][0]["package"]["name"] == "requests")


def test_bad_documents_are_refused() -> None:
    with pytest.raises(BadRequest):
        parse_documents(b"{not json: [", "x.json")
    with pytest.raises(BadRequest):
        parse_documents(b"- 1\n- 2\n", "x.yaml")
    with pytest.raises(BadRequest, match="needs a string 'id'"):
        parse_advisory({"affected": []})
    with pytest.raises(BadRequest, match="names no affected package"):
        parse_advisory({"id": "X-1", "affected": []})


def test_cvss_base_scores_are_computed_from_the_vectors(index: CveIndex) -> None:
    scored = [a for a in index.advisories.values() if a.cvss]
    assert len(scored) == 16
    for a in scored:
        for c in a.cvss:
            assert c["score"] is not None and 0 <= c["score"] <= 10
        assert a.score == max(c["score"] for c in a.cvss) or len(a.cvss) == 1
        assert a.severity == severity_of(a.score)
    # a few vectors whose base scores are published by NVD
    assert cvss_score("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert cvss_score("CVSS_V3", "CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H") == 5.5
    assert cvss_score("CVSS_V4", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N") == 9.3
    assert cvss_score("CVSS_V3", "nonsense") is None
    aiohttp = index.advisories["PYSEC-2022-43059"]
    assert (aiohttp.score, aiohttp.severity) == (5.5, "medium")


def test_conda_names_map_to_osv_ecosystems() -> None:
    python_pkg = {"depends": ["python >=3.8"]}
    assert ecosystem_of("requests", {"noarch": "python"}) == ("PyPI", "requests")
    assert ecosystem_of("Jupyter_Server", python_pkg) == ("PyPI", "jupyter-server")
    assert ecosystem_of("pytorch", python_pkg) == ("PyPI", "torch")
    assert ecosystem_of("r-dplyr", {"depends": ["r-base >=4"]}) == ("CRAN", "dplyr")
    assert ecosystem_of("openssl", {"depends": ["ca-certificates"]}) is None  # not a Python package
    assert ecosystem_of("numpy") == ("PyPI", "numpy")  # no record: by name


def test_range_matching_agrees_with_the_advisories_own_version_lists(index: CveIndex, real_records) -> None:
    """Each PYSEC record lists every affected PyPI release: the range evaluation must agree with it
    for every real conda record of these packages."""
    from packaging.version import Version

    pairs = affected = 0
    for _, _, r in real_records:
        for f in index.findings(r["name"], r["version"], r):
            listed = any(str(Version(r["version"])) in a.versions or r["version"] in a.versions
                         for a in f.advisory.affected)
            assert f.affected == listed, (r["name"], r["version"], f.advisory.id, f.range)
            pairs += 1
            affected += f.affected
    print(f"\n{pairs} (record, advisory) pairs over {len(real_records)} real records, {affected} affected")
    assert pairs > 2000 and affected > 1000


def test_known_facts_about_real_records(index: CveIndex, real_records) -> None:
    by = {(r["name"], r["version"]): r for _, _, r in real_records}
    requests = by[("requests", "2.18.4")]
    ids = {f.advisory.id: f for f in index.affecting("requests", "2.18.4", requests)}
    assert ids["PYSEC-2018-28"].fixed == "2.20.0"  # CVE-2018-18074
    assert "CVE-2018-18074" in ids["PYSEC-2018-28"].advisory.aliases
    assert ids["PYSEC-2023-74"].fixed == "2.31.0"  # CVE-2023-32681
    numpy = by[("numpy", "1.26.4")]
    assert index.affecting("numpy", "1.26.4", numpy) == []  # every numpy advisory here is older
    assert any(index.affecting(r["name"], r["version"], r) for _, _, r in real_records if r["name"] == "numpy")
    pip24 = by[("pip", "24.0")]
    assert index.affecting("pip", "24.0", pip24) == []
    assert [f.advisory.id for f in index.affecting("pip", "23.2.1", by[("pip", "23.2.1")])] == ["PYSEC-2023-228"]
    urllib3 = [r for _, _, r in real_records if r["name"] == "urllib3"]
    assert urllib3 and all(index.affecting("urllib3", r["version"], r) for r in urllib3)


def test_artifact_report_per_file(index: CveIndex, real_records) -> None:
    pips = [(rel.split("/")[-2], fn, r["version"], r) for rel, fn, r in real_records
            if r["name"] == "pip" and "subchannel" in rel and rel.split("/")[-2] == "noarch"]
    report = artifact_report(index, "pip", pips)
    assert report["ecosystem"] == "PyPI" and report["total"] == len(index.by_package[("PyPI", "pip")])
    c = {x["id"]: x for x in report["cves"]}["PYSEC-2023-228"]
    assert c["cve"] == "CVE-2023-5752" and c["score"] == 3.3 and c["severity"] == "low"
    assert c["fixed_versions"] == ["23.3"] and c["affected_range"] == "<23.3" and c["summary"]
    from conda_platform_plugin.versions import version_key

    assert {f["version"] for f in c["affected_files"]} == {v for _, _, v, _ in pips
                                                           if version_key(v) < version_key("23.3")}
    assert all(f["fixed_version"] == "23.3" for f in c["affected_files"])
    files = {f["filename"]: f for f in report["files"]}
    assert files["pip-24.0-pyhd8ed1ab_0.conda"]["cves"] == []
    assert files["pip-23.2.1-pyhd8ed1ab_0.conda"]["cves"] == ["PYSEC-2023-228"]
    # each file: every advisory naming the package, with this file's verdict
    findings = {f["id"]: f for f in files["pip-21.0-pyhd8ed1ab_0.tar.bz2"]["findings"]}
    assert len(findings) == report["total"]
    assert findings["PYSEC-2021-437"] == {"id": "PYSEC-2021-437", "affected": True, "fixed_version": "21.1"}
    assert findings["PYSEC-2023-228"]["fixed_version"] == "23.3"
    assert not any(f["affected"] for f in files["pip-24.0-pyhd8ed1ab_0.conda"]["findings"])


def test_a_yaml_record_reads_like_its_json_twin() -> None:
    path = OSV / "pysec" / "requests" / "PYSEC-2023-74.yaml"
    as_yaml = parse_documents(path.read_bytes(), path.name)[0]
    as_json = parse_documents(orjson.dumps(yaml.safe_load(path.read_bytes()), default=str), "x.json")[0]
    assert parse_advisory(as_yaml).affected == parse_advisory(as_json).affected
