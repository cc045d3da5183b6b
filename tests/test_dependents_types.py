"""Dependents of python and R packages: the one publish-time reverse index, through the HTTP API.

Real wheels and sdists (hatchling) and R packages (rbuilders) are uploaded; the publish listener
indexes them; the API answers per type, names compared as each type compares them (PEP 503 for
python, case-sensitive for R, R's own packages never indexed), python requirements that only an
extra turns on answered as optional. Also: real CRAN PACKAGES records, the CLI, the web tab, and
the upgrade (migration 0009) that rebuilds an index the conda-only code had written.
"""

from __future__ import annotations

import gzip
import html
import zipfile
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from builders import build_conda_package
from conftest import Api, Server
from packaging.markers import Marker
from pybuilders import build_python_project
from rbuilders import build_r_binary, build_r_source
from test_api import assert_error, create
from test_cli import cli, cli_json
from test_insights import _index_state
from test_web_access import browser_session

from conda_platform_plugin.rformats import parse_dcf
from proxy.mirror.pypi_deps import extras_only
from proxy.repo.cran_index import BASE_PACKAGES, NEEDED, cran_record
from proxy.store.tables import dependents

ART = "/api/channels/mixed/artifacts"
CRAN = Path("/work/shared/data/cran")


def _respell(wheel: Path, old: bytes, new: bytes) -> None:
    """Rewrite a line of the wheel's METADATA in place (older setuptools kept names as the author
    spelled them, e.g. requests' ``Requires-Dist: charset_normalizer<4,>=2``)."""
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".dist-info/METADATA"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)
    tmp.replace(wheel)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("built")
    lib = build_python_project(out / "lib", "Base.Lib", "1.0")
    app = build_python_project(out / "app", "Tiny.App", "2.0", requires=[
        "base-lib>=1.0", "socks-helper>=2; extra == 'socks'", "win-helper; sys_platform == 'win32'", "idna[all]>=3"])
    _respell(app["wheel"], b"Requires-Dist: base-lib>=1.0", b"Requires-Dist: Base_Lib>=1.0")
    old = build_python_project(out / "old", "Tiny.App", "1.0", requires=["base-lib<1"])
    r = out / "r"
    return {
        "lib": lib["wheel"], "app": app["wheel"], "app_sdist": app["sdist"], "old": old["wheel"],
        "old_sdist": old["sdist"],
        "rdep": build_r_source(r, "rdep", "1.0.0"),
        "rapp": build_r_source(r, "rapp", "1.0", Depends="R (>= 3.5)", Imports="rdep (>= 0.5), utils",
                               LinkingTo="Rcpp"),
        "rbin": build_r_binary(r, "rbin", "2.0", kind="windows", Depends="rdep"),
        "tool": build_conda_package(out / "conda", "tool", "1.0", "0", depends=["base-lib >=1", "rdep"]),
    }


def _upload_all(api: Api, built: dict[str, Path]) -> None:
    create(api, "mixed")
    api.upload("mixed", *built.values())


def _specs(api: Api, type_: str, name: str) -> dict[str, list[dict]]:
    out = api.get(f"{ART}/{type_}/{name}/dependents").json()
    assert out["type"] == type_ and all(d["type"] == type_ for d in out["items"])
    return {d["name"]: d["specs"] for d in out["items"]}


def test_extras_only_is_decided_without_the_environment() -> None:
    assert extras_only(Marker('extra == "socks"')) == ["socks"]
    assert extras_only(Marker('(extra == "a" or extra == "Full_All") and python_version < "3.8"')) == ["a", "full-all"]
    assert extras_only(Marker('"y" == extra and sys_platform == "win32"')) == ["y"]
    # some environment needs these with no extra asked for
    assert extras_only(Marker('extra == "x" or python_version < "3"')) is None
    assert extras_only(Marker('sys_platform == "win32"')) is None
    assert extras_only(Marker('extra != "x"')) is None


def test_python_and_r_dependents_on_both_databases(tmp_path: Path, database_url: str | None,
                                                   built: dict[str, Path]) -> None:
    server = Server(tmp_path / "data", database_url=database_url).start()
    try:
        api = Api(server)
        _upload_all(api, built)
        # the publish listener indexed every type before anyone asked: python 4 (wheel) + 4 (sdist)
        # + 1 + 1 (the old version), R 2 (R and utils are R's own) + 1, conda 2
        published, gen, rows = _index_state(server, "mixed")
        assert gen == published and rows == 15

        # python: names PEP 503-normalized on both sides; wheel and sdist may spell a name apart
        base = _specs(api, "python", "base-lib")
        assert list(base) == ["tiny-app"]
        assert [(s["spec"], s["constraint"], s["subdirs"], s["versions"], s["optional"]) for s in base["tiny-app"]] == [
            ("Base_Lib>=1.0", ">=1.0", ["pypi"], ["2.0"], False),
            ("base-lib<1", "<1", ["pypi"], ["1.0"], False),
            ("base-lib>=1.0", ">=1.0", ["pypi"], ["2.0"], False)]
        for spelled in ("Base.Lib", "BASE_LIB", "base--lib"):
            assert _specs(api, "python", spelled) == base
        item = api.get(f"{ART}/python/base-lib/dependents").json()["items"][0]
        assert item["latest_version"] == "2.0"

        # marker-guarded: counted (it holds on some machine); extras-only: optional, with its extras
        (win,) = _specs(api, "python", "win-helper")["tiny-app"]
        assert (win["optional"], win["marker"]) == (False, 'sys_platform == "win32"')
        (socks,) = _specs(api, "python", "Socks_Helper")["tiny-app"]
        assert socks["optional"] is True and socks["via_extras"] == ["socks"]
        assert (socks["constraint"], socks["marker"]) == (">=2", 'extra == "socks"')
        (idna,) = _specs(api, "python", "idna")["tiny-app"]
        assert idna["extras"] == ["all"] and idna["constraint"] == ">=3" and "via_extras" not in idna

        # R: Depends/Imports/LinkingTo, sources and binaries; R's own packages are never dependents
        rdep = _specs(api, "cran", "rdep")
        assert rdep == {
            "rapp": [{"spec": "rdep (>= 0.5)", "constraint": ">= 0.5", "subdirs": ["cran-src"], "versions": ["1.0"]}],
            "rbin": [{"spec": "rdep", "constraint": "", "subdirs": ["cran-bin-windows-4.2"], "versions": ["2.0"]}]}
        assert list(_specs(api, "cran", "Rcpp")) == ["rapp"]
        assert _specs(api, "cran", "rcpp") == {}  # R's names are case-sensitive
        for own in ("R", "utils"):
            assert _specs(api, "cran", own) == {}

        # one name, three types: each type's dependents are its own
        assert list(_specs(api, "conda", "base-lib")) == ["tool"]
        assert list(_specs(api, "conda", "rdep")) == ["tool"]
        assert _specs(api, "python", "rdep") == {}
        assert _specs(api, "conda", "idna") == {} and _specs(api, "cran", "idna") == {}
        assert_error(api.get(f"{ART}/pypi/base-lib/dependents", expect=400), 400)

        # deletes are publishes: the index follows them incrementally
        api.request("DELETE", f"/api/channels/mixed/files/pypi/{built['old'].name}")
        api.request("DELETE", f"/api/channels/mixed/files/pypi/{built['old_sdist'].name}")
        api.request("DELETE", "/api/channels/mixed/artifacts/cran/rbin")
        published2, gen2, rows2 = _index_state(server, "mixed")
        assert gen2 == published2 > published and rows2 == 12
        assert [s["spec"] for s in _specs(api, "python", "base-lib")["tiny-app"]] == ["Base_Lib>=1.0",
                                                                                      "base-lib>=1.0"]
        assert list(_specs(api, "cran", "rdep")) == ["rapp"]
    finally:
        server.stop()


def test_cli_and_web_show_python_dependents(server: Server, api: Api, built: dict[str, Path]) -> None:
    _upload_all(api, built)
    table = cli(server, "package", "dependents", "mixed", "socks-helper", "--type", "python").stdout
    assert "tiny-app" in table and "extra == \"socks\"" in table
    data = cli_json(server, "package", "dependents", "mixed", "rdep", "--type", "cran")
    assert [d["name"] for d in data["items"]] == ["rapp", "rbin"]

    s = browser_session(server, server.admin_token)
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/python/base-lib?tab=dependents").text)
    assert "1 package(s) of this channel depend on base-lib" in page and "Base_Lib>=1.0" in page
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/python/tiny-app?tab=dependents").text)
    assert "No package of this channel depends on it." in page
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/cran/rdep?tab=dependents").text)
    assert "rdep (>= 0.5)" in page and "rbin" in page


def test_web_marks_requirements_only_an_extra_turns_on(server: Server, api: Api, built: dict[str, Path],
                                                       tmp_path: Path) -> None:
    create(api, "mixed")
    helper = build_python_project(tmp_path / "helper", "socks-helper", "2.0")
    api.upload("mixed", built["app"], helper["wheel"])
    s = browser_session(server, server.admin_token)
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/python/socks-helper?tab=dependents").text)
    assert "only with extra socks" in page


def test_dependents_of_real_cran_records(server: Server, api: Api) -> None:
    """The real PACKAGES of shared/data (sources and Windows binaries) as a passive cran mirror
    leaves them: the index agrees with the records' own Depends/Imports/LinkingTo."""
    from proxy.store.files import NewFile

    stanzas = {"cran-src": parse_dcf(gzip.decompress((CRAN / "PACKAGES-src.gz").read_bytes()).decode()),
               "cran-bin-windows-4.4": parse_dcf(gzip.decompress((CRAN / "PACKAGES-win.gz").read_bytes()).decode())}
    create(api, "rforge")

    async def load() -> None:
        platform = server.platform
        ch = await platform.channels.get("rforge")
        rows = []
        for subdir, found in stanzas.items():
            for f in found:
                rec = cran_record(f, md5=f.get("MD5sum", ""), size=0, sha256=None, timestamp=0)
                fn = f"{f['Package']}_{f['Version']}.{'zip' if 'windows' in subdir else 'tar.gz'}"
                rows.append(NewFile(type="cran", subdir=subdir, filename=fn, name=f["Package"], version=f["Version"],
                                    build="", sha256="0" * 32 + (f.get("MD5sum") or "0" * 32), md5=f.get("MD5sum", ""),
                                    size=0, record=orjson.dumps(rec), license=rec["license"],
                                    source_url=f"https://example.invalid/{fn}"))
        await platform.files.add(ch, rows, "passive mirror")
        await platform.publisher.publish(ch.id)

    server.call(load())
    want: dict[str, dict[str, set[str]]] = {}
    total = 0
    for found in stanzas.values():
        for f in found:
            for kind in NEEDED:
                for entry in (f.get(kind) or "").split(","):
                    name = entry.strip().split("(")[0].strip()
                    if name and name not in BASE_PACKAGES:
                        want.setdefault(name, {}).setdefault(f["Package"], set()).add(f["Version"])
                        total += 1
    published, gen, rows = _index_state(server, "rforge")
    assert gen == published and rows == total
    busiest = sorted(want, key=lambda n: (-len(want[n]), n))[:5]
    assert "Rcpp" in busiest
    for name in busiest:
        got = api.get(f"/api/channels/rforge/artifacts/cran/{name}/dependents", params={"per_page": 1000}).json()
        assert {d["name"]: {v for s in d["specs"] for v in s["versions"]} for d in got["items"]} == want[name]


def test_upgrade_rebuilds_an_index_of_conda_files_only(server: Server, api: Api, built: dict[str, Path]) -> None:
    """A database the conda-only code indexed: migration 0009 drops the index, and the next
    question rebuilds it with python and R files."""
    _upload_all(api, built)
    assert _index_state(server, "mixed")[2] == 15

    async def as_before() -> None:
        async with server.platform.db.write() as conn:
            await conn.execute(dependents.delete().where(
                (dependents.c.subdir == "pypi") | dependents.c.subdir.like("cran-%")))
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0008'"))

    server.call(as_before())
    assert _specs(api, "python", "base-lib") == {}  # what the old index answers
    server.restart()
    api = Api(server)
    assert list(_specs(api, "python", "base-lib")) == ["tiny-app"]
    assert list(_specs(api, "cran", "rdep")) == ["rapp", "rbin"]
    assert _index_state(server, "mixed")[2] == 15


def test_sbom_closures_resolve_the_newest_satisfying_transitively(api: Api, tmp_path: Path) -> None:
    """The R and python dependency walks (one reader, each type's index resolving): each dependency
    to the newest version that satisfies it, followed transitively; R's own packages, Suggests and
    extras-only requirements are not followed."""
    create(api, "walk")
    r = tmp_path / "r"
    api.upload("walk",
               build_r_source(r, "rtop", "1.0", Imports="rmid (< 2.0), rleaf, methods", Suggests="rsugg"),
               *(build_r_source(r, "rmid", v, Imports="rleaf (>= 1.0)") for v in ("1.0", "1.5", "2.0")),
               build_r_source(r, "rleaf", "1.2"), build_r_source(r, "rsugg", "1.0"))
    cdx = api.get("/api/channels/walk/files/cran-src/rtop_1.0.tar.gz/sbom").json()
    assert sorted((c["name"], c["version"]) for c in cdx["components"]) == [("rleaf", "1.2"), ("rmid", "1.5")]
    deps = {d["ref"]: sorted(d.get("dependsOn", [])) for d in cdx["dependencies"]}
    assert deps["cran-src/rtop_1.0.tar.gz"] == ["cran-src/rleaf_1.2.tar.gz", "cran-src/rmid_1.5.tar.gz"]
    assert deps["cran-src/rmid_1.5.tar.gz"] == ["cran-src/rleaf_1.2.tar.gz"]

    py = tmp_path / "py"
    top = build_python_project(py / "top", "top", "1.0", requires=["mid<2", "leaf", "opt; extra == 'x'"])
    mids = [build_python_project(py / v, "mid", v, requires=["leaf>=1"])["wheel"] for v in ("1.0", "1.5", "2.0")]
    api.upload("walk", top["wheel"], *mids, build_python_project(py / "leaf", "leaf", "1.2")["wheel"],
               build_python_project(py / "opt", "opt", "1.0")["wheel"])
    cdx = api.get(f"/api/channels/walk/files/pypi/{top['wheel'].name}/sbom").json()
    assert sorted((c["name"], c["version"]) for c in cdx["components"]) == [("leaf", "1.2"), ("mid", "1.5")]
    deps = {d["ref"]: d.get("dependsOn", []) for d in cdx["dependencies"]}
    (mid_ref,) = [ref for ref in deps if "mid-1.5" in ref]
    assert deps[mid_ref] == [ref for ref in deps if "leaf-1.2" in ref]


def test_walks_read_many_names_in_chunks(server: Server, api: Api) -> None:
    """A package asking for 1,201 names: the walk reads them 500 to a query (store/chunks.py): the
    statements the SBOM sends name them in IN lists of 500, 500 and 201 (counted as sent), and
    every one is found (the SBOM lists them all)."""
    import re

    from proxy.store.files import NewFile

    create(api, "wide")
    names = [f"dep{i:04d}" for i in range(1201)]

    def conda(name: str, depends: list[str]) -> NewFile:
        rec = {"name": name, "version": "1.0", "build": "0", "build_number": 0, "subdir": "noarch",
               "depends": depends}
        return NewFile(type="conda", subdir="noarch", filename=f"{name}-1.0-0.conda", name=name, version="1.0",
                       build="0", sha256="0" * 64, md5="", size=0, record=orjson.dumps(rec),
                       source_url=f"https://example.invalid/{name}")

    async def load() -> None:
        ch = await server.platform.channels.get("wide")
        await server.platform.files.add(ch, [conda("top", names), *(conda(n, []) for n in names)], "passive mirror")
        await server.platform.publisher.publish(ch.id)

    server.call(load())
    lists: list[int] = []  # the size of each IN list of names the statements send

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        lists.extend(m.group(1).count(",") + 1 for m in re.finditer(r"files\.name IN \(([^)]*)\)", statement))

    engine = server.platform.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        cdx = api.get("/api/channels/wide/files/noarch/top-1.0-0.conda/sbom").json()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert sorted(lists) == [202, 500, 500], lists  # its own name and the 1,201 it asks for, 500 a query
    assert sorted(c["name"] for c in cdx["components"]) == names
    assert {d["name"] for d in api.get("/api/channels/wide/artifacts/conda/dep0600/dependents").json()["items"]} == {
        "top"}
