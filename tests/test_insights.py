"""Package insights: dependencies resolved in the channel, dependents from the publish-time index."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from builders import build_conda_package
from conftest import Api, Server, channel_api
from test_api import assert_error, create

from proxy.store.dependents import spec_constraint, spec_name
from proxy.store.tables import channels, dependents, dependents_state


def test_spec_name_and_constraint() -> None:
    assert spec_name("python >=3.9") == "python"
    assert spec_name("libgcc-ng>=7") == "libgcc-ng"
    assert spec_name("conda-forge::NumPy 1.2.*") == "numpy"
    assert spec_name("conda-forge/linux-64::zlib") == "zlib"
    assert spec_name("foo[version='>=1']") == "foo"
    assert spec_name("__glibc >=2.17") is None
    assert spec_name("") is None
    assert spec_constraint("python >=3.9,<4 *_cpython") == ">=3.9,<4 *_cpython"
    assert spec_constraint("numpy") == ""


def _setup(api: Api, tmp_path: Path, channel: str) -> dict[str, Path]:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    pkgs = {
        "py39": build_conda_package(tmp_path, "python", "3.9.1", "0", subdir="linux-64"),
        "py312": build_conda_package(tmp_path, "python", "3.12.0", "0", subdir="linux-64"),
        "numpy": build_conda_package(tmp_path, "numpy", "2.0.0", "py_0", depends=["python >=3.9"]),
        "scipy": build_conda_package(tmp_path, "scipy", "1.5.0", "0", subdir="linux-64"),
        "tool": build_conda_package(tmp_path, "tool", "1.0", "0", subdir="linux-64",
                                    depends=["python >=3.10", "numpy 2.*", "__glibc >=2.17", "nowhere"],
                                    constrains=["scipy <2"]),
        "tool_old": build_conda_package(tmp_path, "tool", "0.9", "0", subdir="linux-64",
                                        depends=["python 3.9.*"]),
    }
    api.upload(channel, *pkgs.values())
    return pkgs


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_dependencies_resolved_in_the_channel(api: Api, tmp_path: Path, channel: str) -> None:
    pkgs = _setup(api, tmp_path, channel)
    other = tmp_path / "other"
    other.mkdir()
    create(api, "elsewhere")  # a python in another channel satisfies nothing here
    api.upload("elsewhere", build_conda_package(other, "python", "3.13.0", "0", subdir="linux-64"))
    base = channel_api(channel)
    deps = api.get(f"{base}/artifacts/conda/tool/dependencies").json()
    assert deps["version"] == "1.0"
    (item,) = deps["files"]
    assert item["subdir"] == "linux-64"
    assert [d["spec"] for d in item["depends"]] == ["python >=3.10", "numpy 2.*", "__glibc >=2.17", "nowhere"]
    matches = {m["spec"]: m for m in item["matches"]["depends"]}
    py = matches["python >=3.10"]
    assert (py["name"], py["version"], py["virtual"], py["satisfied"]) == ("python", ">=3.10", False, True)
    assert [c["filename"] for c in py["candidates"]] == [pkgs["py312"].name]  # not 3.9, not elsewhere's 3.13
    np_ = matches["numpy 2.*"]  # a linux-64 package is satisfied from noarch too
    assert [(c["subdir"], c["filename"]) for c in np_["candidates"]] == [("noarch", pkgs["numpy"].name)]
    assert matches["__glibc >=2.17"]["virtual"] and matches["__glibc >=2.17"]["satisfied"]
    assert matches["__glibc >=2.17"]["candidates"] == []
    assert not matches["nowhere"]["satisfied"] and matches["nowhere"]["candidates"] == []
    (con,) = item["matches"]["constrains"]
    assert con["spec"] == "scipy <2" and con["version"] == "<2"
    assert [c["filename"] for c in con["candidates"]] == [pkgs["scipy"].name]

    old = api.get(f"{base}/artifacts/conda/tool/dependencies", params={"version": "0.9"}).json()
    (m,) = old["files"][0]["matches"]["depends"]
    assert [c["version"] for c in m["candidates"]] == ["3.9.1"]

    # the same for one file
    one = api.get(f"{base}/files/linux-64/{pkgs['tool'].name}/dependencies").json()
    assert (one["name"], one["version"], one["subdir"], one["filename"]) == ("tool", "1.0", "linux-64",
                                                                            pkgs["tool"].name)
    assert one["matches"] == item["matches"] and one["constrains"] == item["constrains"]
    assert_error(api.get(f"{base}/files/linux-64/nope-1-0.conda/dependencies", expect=404), 404)

    # a noarch package is satisfied from any subdir
    np_deps = api.get(f"{base}/artifacts/conda/numpy/dependencies").json()
    (m,) = np_deps["files"][0]["matches"]["depends"]
    assert [c["version"] for c in m["candidates"]] == ["3.12.0", "3.9.1"]


def _index_state(server: Server, channel: str) -> tuple[int, int, int]:
    """(published generation, the dependents index's generation, its rows) read from the database."""
    async def read() -> tuple[int, int, int]:
        async with server.platform.db.read() as conn:
            cid, published = (await conn.execute(sa.select(channels.c.id, channels.c.published_gen)
                                                  .where(channels.c.name == channel))).one()
            gen = (await conn.execute(sa.select(dependents_state.c.gen)
                                      .where(dependents_state.c.channel_id == cid))).scalar() or 0
            rows = (await conn.execute(sa.select(sa.func.count()).select_from(dependents)
                                       .where(dependents.c.channel_id == cid))).scalar_one()
        return published, gen, rows

    server.call(server.platform.dependents.drain())
    return server.call(read())


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_dependents_from_the_publish_time_index(server: Server, api: Api, tmp_path: Path, channel: str) -> None:
    _setup(api, tmp_path, channel)
    base = channel_api(channel)
    # the publish listener brought the index to the published generation before anyone asked
    published, gen, rows = _index_state(server, channel)
    assert gen == published and rows == 5  # numpy 1 + tool 4 (the virtual __glibc is no dependent) + tool_old 1
    out = api.get(f"{base}/artifacts/conda/python/dependents").json()
    assert out["total"] == 2 and [d["name"] for d in out["items"]] == ["numpy", "tool"]
    numpy, tool = out["items"]
    assert numpy["specs"] == [{"spec": "python >=3.9", "constraint": ">=3.9", "subdirs": ["noarch"],
                               "versions": ["2.0.0"]}]
    assert tool["latest_version"] == "1.0"
    assert [(s["spec"], s["versions"]) for s in tool["specs"]] == [("python 3.9.*", ["0.9"]),
                                                                   ("python >=3.10", ["1.0"])]
    assert [d["name"] for d in api.get(f"{base}/artifacts/conda/numpy/dependents").json()["items"]] == ["tool"]
    assert api.get(f"{base}/artifacts/conda/tool/dependents").json()["total"] == 0

    # a delete is a publish: the index follows it incrementally
    tool_old = api.get(f"{base}/artifacts/conda/tool/files").json()["items"]
    old = next(f for f in tool_old if f["version"] == "0.9")
    api.request("DELETE", f"{base}/files/{old['subdir']}/{old['filename']}")
    published2, gen2, rows2 = _index_state(server, channel)
    assert gen2 == published2 > published and rows2 == 4
    tool = api.get(f"{base}/artifacts/conda/python/dependents").json()["items"][1]
    assert [s["spec"] for s in tool["specs"]] == ["python >=3.10"]
    api.request("DELETE", f"{base}/artifacts/conda/tool")
    assert [d["name"] for d in api.get(f"{base}/artifacts/conda/python/dependents").json()["items"]] == ["numpy"]
    page = api.get(f"{base}/artifacts/conda/python/dependents", params={"per_page": 1, "page": 2}).json()
    assert page["total"] == 1 and page["items"] == []
    assert_error(api.get(f"{base}/artifacts/pypi/python/dependents", expect=400), 400)


def test_dependents_survive_a_restart_and_catch_up(server: Server, api: Api, tmp_path: Path) -> None:
    _setup(api, tmp_path, "team")
    server.restart()
    api = Api(server)
    extra = build_conda_package(tmp_path, "late", "1.0", "0", depends=["python"])
    api.upload("team", extra)
    names = [d["name"] for d in api.get("/api/channels/team/artifacts/conda/python/dependents").json()["items"]]
    assert names == ["late", "numpy", "tool"]
    published, gen, rows = _index_state(server, "team")
    assert gen == published and rows == 6


def test_dependents_on_both_databases(tmp_path: Path, database_url: str | None) -> None:
    server = Server(tmp_path / "data", database_url=database_url).start()
    try:
        api = Api(server)
        _setup(api, tmp_path, "team")
        published, gen, rows = _index_state(server, "team")
        assert gen == published and rows == 5
        api.request("DELETE", "/api/channels/team/artifacts/conda/numpy")
        items = api.get("/api/channels/team/artifacts/conda/python/dependents").json()["items"]
        assert [(d["name"], len(d["specs"])) for d in items] == [("tool", 2)]
        assert _index_state(server, "team")[2] == 4
    finally:
        server.stop()


# -- readme ------------------------------------------------------------------------------------------
EVIL = ("# Tool\n\nSee **docs** | [home](https://example.com/tool).\n\n<script>alert('x')</script>\n\n"
        "<img src=x onerror=alert(1)> [click](javascript:alert(1))\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_readme_as_markdown_and_safe_html(api: Api, tmp_path: Path, channel: str) -> None:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    api.upload(channel, build_conda_package(tmp_path, "tool", "1.0", description=EVIL, summary="A tool"))
    url = f"{channel_api(channel)}/artifacts/conda/tool/readme"
    md = api.get(url).json()
    assert md["format"] == "markdown" and md["content"] == EVIL
    html = api.get(url, params={"format": "html"}).json()
    assert html["format"] == "html" and html["version"] == "1.0"
    content = html["content"]
    assert "<h1>Tool</h1>" in content and "<strong>docs</strong>" in content
    assert '<a href="https://example.com/tool">home</a>' in content and "<td>1</td>" in content
    # nothing from the package becomes markup that runs
    assert "<script" not in content and "&lt;script&gt;" in content
    assert "<img" not in content and "&lt;img src=x" in content
    assert 'href="javascript' not in content  # the link is refused: it stays text
    page = api.get(url, headers={"Accept": "text/html"})
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.text == content
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'none' covers scripts
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert api.get(url, headers={"Accept": "application/json"}).json()["format"] == "markdown"
    assert_error(api.get(url, params={"format": "pdf"}, expect=400), 400)


def test_dependents_of_real_conda_forge_records(server: Server, api: Api) -> None:
    """2,914 real conda-forge records (linux-64 + noarch of the subchannel snapshot) as a passive
    mirror leaves them: the index agrees with the records themselves."""
    from test_dependencies import _records

    from proxy.store.files import NewFile

    records = _records("linux-64", "noarch")
    create(api, "forge")

    async def load() -> None:
        platform = server.platform
        ch = await platform.channels.get("forge")
        rows = [NewFile(type="conda", subdir=s, filename=fn, name=r["name"], version=r["version"],
                        build=r.get("build", ""), sha256=r.get("sha256") or "0" * 64, md5=r.get("md5") or "",
                        size=int(r.get("size") or 0), record=orjson.dumps(r, option=orjson.OPT_SORT_KEYS),
                        license=str(r.get("license") or ""), source_url=f"https://example.invalid/{s}/{fn}")
                for s, fn, r in records]
        await platform.files.add(ch, rows, "passive mirror")
        await platform.publisher.publish(ch.id)

    server.call(load())
    published, gen, rows = _index_state(server, "forge")
    expected_rows = sum(1 for _, _, r in records for d in r.get("depends") or () if not d.startswith("__"))
    assert gen == published and rows == expected_rows
    want: dict[str, set[str]] = {}
    for _, _, r in records:
        for d in r.get("depends") or ():
            if d.split()[0] == "openssl":
                want.setdefault(r["name"], set()).add(d)
    got = api.get("/api/channels/forge/artifacts/conda/openssl/dependents", params={"per_page": 1000}).json()
    assert {d["name"]: {s["spec"] for s in d["specs"]} for d in got["items"]} == want
    assert {"python", "libssh2"} <= set(want)
