"""Hosted python files: upload (validated), the PEP 503/691 simple API with PEP 592/658/700/714,
file serving (HEAD, Range), and real pip and uv installing a project with a dependency."""

from __future__ import annotations

import hashlib
import html
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Api, Server
from pybuilders import build_python_project

from proxy.repo.pypi import negotiate

CH = "py"
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    out = tmp_path_factory.mktemp("built")
    return {
        "dep": build_python_project(out / "dep", "tiny-dep", "1.0", summary="The dependency"),
        "dep2": build_python_project(out / "dep2", "tiny-dep", "2.0", requires_python=">=3.8,<4"),
        "app": build_python_project(out / "app", "Tiny.App", "2.0", requires=["tiny-dep>=1"],
                                    license="MIT OR Apache-2.0", summary="The app", readme="# Tiny App\n\nHello.\n"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("data")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def hosted(server: Server, built: dict) -> str:
    """Channel ``py`` with every built wheel and sdist uploaded; returns its simple index URL."""
    api = Api(server)
    api.post("/api/channels", 201, json={"name": CH})
    for kinds in built.values():
        api.upload(CH, kinds["wheel"], kinds["sdist"])
    return f"{server.url}/api/repo/{CH}/pypi/simple/"


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))


def test_negotiation_follows_q_values() -> None:
    assert negotiate(PIP_ACCEPT)[0] == "json" and negotiate(UV_ACCEPT)[0] == "json"
    assert negotiate("text/html")[0] == "html" and negotiate(None)[0] == "html" and negotiate("*/*")[0] == "html"
    assert negotiate(f"text/html, {JSON};q=0.5")[0] == "html"
    assert negotiate(f"text/html;q=0.4, {JSON};q=0.5")[0] == "json"
    assert negotiate("application/vnd.pypi.simple.v1+html")[1] == "application/vnd.pypi.simple.v1+html"
    assert negotiate("application/json") is None and negotiate(f"{JSON};q=0") is None
    assert negotiate("text/html", "application/vnd.pypi.simple.latest+json")[0] == "json"


def test_upload_stores_python_records(server: Server, hosted: str, built: dict) -> None:
    api = Api(server)
    art = api.get(f"/api/channels/{CH}/artifacts/python/tiny-app").json()
    assert art["type"] == "python" and art["name"] == "tiny-app" and art["latest_version"] == "2.0"
    assert art["license"] == "MIT OR Apache-2.0" and art["summary"] == "The app" and art["subdirs"] == ["pypi"]
    files = api.get(f"/api/channels/{CH}/artifacts/python/tiny-app/files").json()["items"]
    assert sorted(f["filename"] for f in files) == sorted(built["app"][k].name for k in ("wheel", "sdist"))
    wheel = built["app"]["wheel"]
    shown = next(f for f in files if f["filename"] == wheel.name)
    assert shown["download_url"] == f"/api/repo/{CH}/pypi/files/{wheel.name}"
    assert api.get(shown["download_url"]).content == wheel.read_bytes()
    readme = api.get(f"/api/channels/{CH}/artifacts/python/tiny-app/readme").json()
    assert "Hello." in readme["content"]
    deps = api.get(f"/api/channels/{CH}/artifacts/python/tiny-app/dependencies").json()
    assert {d["spec"] for f in deps["files"] for d in f["depends"]} == {"tiny-dep>=1"}
    assert {d["name"] for f in deps["files"] for d in f["depends"]} == {"tiny-dep"}
    assert api.get(f"/api/channels/{CH}/artifacts/python/tiny-app/cves").json()["ecosystem"] == "PyPI"


def test_project_list_and_pages(server: Server, hosted: str, built: dict) -> None:
    listing = requests.get(hosted, headers={"Accept": PIP_ACCEPT}, timeout=30)
    assert listing.headers["Content-Type"] == JSON and "Accept" in listing.headers["Vary"]
    doc = listing.json()
    assert doc["meta"]["api-version"] == "1.1"
    assert [p["name"] for p in doc["projects"]] == ["tiny-app", "tiny-dep"]
    page = requests.get(hosted, headers={"Accept": "text/html"}, timeout=30)
    assert page.headers["Content-Type"].startswith("text/html") and 'href="tiny-app/"' in page.text

    r = requests.get(hosted + "tiny-dep/", headers={"Accept": UV_ACCEPT}, timeout=30)
    again = requests.get(hosted + "tiny-dep/", headers={"Accept": UV_ACCEPT, "If-None-Match": r.headers["ETag"]},
                         timeout=30)
    assert again.status_code == 304 and again.headers["ETag"] == r.headers["ETag"]
    html_page = requests.get(hosted + "tiny-dep/", headers={"Accept": "text/html"}, timeout=30)
    assert html_page.headers["ETag"] != r.headers["ETag"]  # each variant its own validator
    doc = r.json()
    assert doc["name"] == "tiny-dep" and doc["versions"] == ["1.0", "2.0"]
    by_name = {f["filename"]: f for f in doc["files"]}
    wheel = built["dep2"]["wheel"]
    entry = by_name[wheel.name]
    assert entry["hashes"] == {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
    assert entry["size"] == wheel.stat().st_size and entry["upload-time"].endswith("Z")
    assert entry["requires-python"] == "<4,>=3.8" and entry["yanked"] is False
    meta_sha = hashlib.sha256(wheel_metadata(wheel)).hexdigest()
    assert entry["core-metadata"] == {"sha256": meta_sha} == entry["dist-info-metadata"]
    # the file URL is relative to the page; its bytes, HEAD and Range
    url = requests.compat.urljoin(r.url, entry["url"])
    assert requests.get(url, timeout=30).content == wheel.read_bytes()
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == wheel.stat().st_size
    part = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=30)
    assert part.status_code == 206 and part.content == wheel.read_bytes()[:10]
    # PEP 658: the core metadata verbatim
    meta = requests.get(url + ".metadata", timeout=30)
    assert meta.content == wheel_metadata(wheel) and hashlib.sha256(meta.content).hexdigest() == meta_sha

    text = requests.get(hosted + "tiny-dep/", headers={"Accept": "text/html"}, timeout=30).text
    assert f'data-requires-python="{html.escape("<4,>=3.8")}"' in text and "&lt;4,&gt;=3.8" in text
    assert f'data-core-metadata="sha256={meta_sha}"' in text and f'data-dist-info-metadata="sha256={meta_sha}"' in text
    assert f"../../files/{wheel.name}#sha256={entry['hashes']['sha256']}" in text
    assert '<meta name="pypi:repository-version" content="1.1">' in text


def test_urls_redirect_to_normalized_names(server: Server, hosted: str) -> None:
    r = requests.get(hosted + "Tiny.App/", allow_redirects=False, timeout=30)
    assert r.status_code == 301 and r.headers["Location"].endswith(f"/api/repo/{CH}/pypi/simple/tiny-app/")
    r = requests.get(hosted + "tiny-app", allow_redirects=False, timeout=30)
    assert r.status_code == 301 and r.headers["Location"].endswith("/pypi/simple/tiny-app/")
    assert requests.get(hosted + "Tiny__App", timeout=30).json  # followed to the page
    assert requests.get(hosted + "nothing-here/", timeout=30).status_code == 404
    assert requests.get(hosted, headers={"Accept": "application/json"}, timeout=30).status_code == 406


def test_bad_uploads_leave_nothing(server: Server, hosted: str, built: dict, tmp_path: Path) -> None:
    api = Api(server)
    blobs = server.data_dir / "blobs"
    before = sorted(p.name for p in blobs.rglob("*") if p.is_file())
    wheel = built["dep"]["wheel"]
    cut = tmp_path / "cut" / wheel.name
    cut.parent.mkdir()
    cut.write_bytes(wheel.read_bytes()[: wheel.stat().st_size // 2])
    r = api.upload(CH, cut, expect=422)
    assert r["error"]["code"] == "invalid_package" and "not a readable" in r["error"]["message"]
    other = tmp_path / "other-1.0-py3-none-any.whl"
    other.write_bytes(wheel.read_bytes())
    assert "names the project" in api.upload(CH, other, expect=422)["error"]["message"]
    bare = tmp_path / "bare" / wheel.name
    bare.parent.mkdir()
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(bare, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("METADATA"):
                zout.writestr(info, zin.read(info))
    assert "METADATA" in api.upload(CH, bare, expect=422)["error"]["message"]
    assert "subdir" in api.upload(CH, wheel, subdir="noarch", expect=422)["error"]["message"]
    assert sorted(p.name for p in blobs.rglob("*") if p.is_file()) == before
    api.get(f"/api/channels/{CH}/artifacts/python/other", expect=404)


def _installed(target: Path) -> set[str]:
    return {p.name.split("-")[0] for p in target.glob("*.dist-info")}


def test_pip_installs_with_dependency(hosted: str, tmp_path: Path) -> None:
    target = tmp_path / "pip"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--index-url", hosted,
                    "--target", str(target), "tiny-app"], check=True, capture_output=True, env=env, timeout=120)
    assert _installed(target) == {"tiny_app", "tiny_dep"}
    assert (target / "tiny_dep" / "__init__.py").read_text() == '__version__ = "2.0"\n'


def test_uv_installs_with_dependency(hosted: str, tmp_path: Path) -> None:
    target = tmp_path / "uv"
    env = {**os.environ, "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    r = subprocess.run(["uv", "pip", "install", "--index-url", hosted, "--target", str(target), "--python",
                        sys.executable, "Tiny.App", "tiny-dep==1.0"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert _installed(target) == {"tiny_app", "tiny_dep"}
    assert (target / "tiny_dep" / "__init__.py").read_text() == '__version__ = "1.0"\n'


def test_cli_uploads_wheels_and_sdists(server: Server, built: dict, tmp_path: Path) -> None:
    from test_cli import cli, error_line

    Api(server).post("/api/channels", 201, json={"name": "clich"})
    app = built["app"]
    out = cli(server, "upload", "--channel", "clich", str(app["wheel"]), str(app["sdist"])).stdout
    assert f"pypi/{app['wheel'].name}" in out and "added" in out
    assert "tiny-app" in cli(server, "package", "show", "clich", "tiny-app", "--type", "python").stdout
    bad = tmp_path / "tiny_app-9.0-py3-none-any.whl"
    bad.write_bytes(app["wheel"].read_bytes())
    line = error_line(cli(server, "upload", "--channel", "clich", str(bad), code=1))
    assert "metadata says version 2.0" in line


def test_renders_reuse_unchanged_projects_subchannels_and_private_tokens(server: Server, built: dict,
                                                                        tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "priv", "private": True})
    api.post("/api/channels/priv/subchannels", 201, json={"name": "sub", "private": True})
    api.upload("priv/sub", built["dep"]["wheel"])
    platform = server.platform
    cid = server.call(platform.channels.get("priv/sub")).id

    def page(gen: int) -> Path:
        return platform.publisher.subdir_dir(cid, "pypi", gen) / "p" / "tiny-dep.json"

    first = server.call(platform.serving.lookup("priv/sub")).subdirs["pypi"]
    api.upload("priv/sub", built["app"]["wheel"])  # another project: tiny-dep's page is linked, not rewritten
    platform.serving.invalidate()
    second = server.call(platform.serving.lookup("priv/sub")).subdirs["pypi"]
    assert second > first and page(second).stat().st_ino == page(first).stat().st_ino

    index = f"{server.url}/api/repo/priv/sub/pypi/simple/"
    assert requests.get(index, timeout=30).status_code == 404  # private: strangers see nothing
    token = api.post("/api/tokens", 201, json={"description": "pip"}).json()["token"]
    with_token = f"{server.url}/t/{token}/api/repo/priv/sub/pypi/simple/"
    target = tmp_path / "t"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--index-url",
                    with_token, "--target", str(target), "tiny-app"], check=True, capture_output=True, env=env,
                   timeout=120)
    assert _installed(target) == {"tiny_app", "tiny_dep"}


def test_yank_and_unyank_uploaded_files(server: Server, built: dict, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "yk"})
    api.upload("yk", built["dep"]["wheel"], built["dep2"]["wheel"])
    wheel = built["dep2"]["wheel"].name
    url = f"/api/channels/yk/files/pypi/{wheel}/yank"
    done = api.post(url, json={"reason": "broken <build>"}).json()
    assert done["yanked"] == "broken <build>" and done["generation"]
    index = f"{server.url}/api/repo/yk/pypi/simple/tiny-dep/"
    files = {f["filename"]: f for f in requests.get(index, headers={"Accept": JSON}, timeout=30).json()["files"]}
    assert files[wheel]["yanked"] == "broken <build>"
    assert 'data-yanked="broken &lt;build&gt;"' in requests.get(index, timeout=30).text
    assert api.post(url, json={"reason": "broken <build>"}).json()["generation"] is None  # no change, no generation
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--index-url",
                    index.removesuffix("tiny-dep/"), "--target", str(tmp_path / "a"), "tiny-dep"], check=True,
                   capture_output=True, env=env, timeout=120)
    assert (tmp_path / "a" / "tiny_dep" / "__init__.py").read_text() == '__version__ = "1.0"\n'  # 2.0 skipped
    assert requests.get(f"{server.url}/api/repo/yk/pypi/files/{wheel}", timeout=30).status_code == 200
    api.request("DELETE", url)
    files = {f["filename"]: f for f in requests.get(index, headers={"Accept": JSON}, timeout=30).json()["files"]}
    assert files[wheel]["yanked"] is False
    api.post(f"/api/channels/yk/files/pypi/{built['dep']['wheel'].name}/yank")  # no body: yanked, no reason
    files = {f["filename"]: f for f in requests.get(index, headers={"Accept": JSON}, timeout=30).json()["files"]}
    assert files[built["dep"]["wheel"].name]["yanked"] is True
    assert 'data-yanked=""' in requests.get(index, timeout=30).text
    api.post("/api/channels/yk/files/pypi/nope-1.0-py3-none-any.whl/yank", 404)
    api.post("/api/channels/yk/files/noarch/x-1-0.conda/yank", 400)


def test_cli_yanks_and_unyanks(server: Server, built: dict, tmp_path: Path) -> None:
    from test_cli import cli, cli_json, error_line

    Api(server).post("/api/channels", 201, json={"name": "ykcli"})
    cli(server, "upload", "-c", "ykcli", str(built["dep"]["wheel"]), str(built["dep2"]["wheel"]))
    ref = f"pypi/{built['dep2']['wheel'].name}"
    r = cli(server, "package", "yank", "ykcli", ref, "--reason", "broken build")
    assert r.stdout.strip().startswith(f"yanked {ref} in ykcli: broken build (generation ")
    index = f"{server.url}/api/repo/ykcli/pypi/simple/tiny-dep/"
    entries = {f["filename"]: f for f in requests.get(index, headers={"Accept": JSON}, timeout=30).json()["files"]}
    assert entries[built["dep2"]["wheel"].name]["yanked"] == "broken build"
    assert "already yanked: nothing changed" in cli(server, "package", "yank", "ykcli", ref, "--reason",
                                                    "broken build").stdout
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--index-url",
                    index.removesuffix("tiny-dep/"), "--target", str(tmp_path / "a"), "tiny-dep"], check=True,
                   capture_output=True, env=env, timeout=120)
    assert (tmp_path / "a" / "tiny_dep" / "__init__.py").read_text() == '__version__ = "1.0"\n'  # 2.0 skipped

    done = cli_json(server, "package", "unyank", "ykcli", ref)
    assert (done["file"], done["yanked"], done["channel"]) == (ref, False, "ykcli") and done["generation"]
    assert cli_json(server, "package", "yank", "ykcli", ref)["yanked"] is True  # no reason: yanked all the same
    # bad input: one line on stderr, exit 1, nothing changed
    assert error_line(cli(server, "package", "yank", "ykcli", "pypi/nope-1.0-py3-none-any.whl", code=1)) == (
        "error: pypi/nope-1.0-py3-none-any.whl not found in channel 'ykcli'")
    assert "SUBDIR/FILENAME" in error_line(cli(server, "package", "yank", "ykcli", "tiny_dep-1.0.whl", code=1))
    assert "only python files" in error_line(cli(server, "package", "unyank", "ykcli", "noarch/x-1-0.conda",
                                                 code=1))
    assert "invalid" in error_line(cli(server, "package", "yank", "ykcli", "pypi/..", code=1))
    assert "at most 500" in error_line(cli(server, "package", "yank", "ykcli", ref, "--reason", "x" * 501, code=1))
    envelope = cli_json(server, "package", "yank", "nochannel", ref, code=1)
    assert envelope["error"]["code"] == "not_found"
    cli(server, "package", "yank", "ykcli", code=2)  # the file is required
    entries = {f["filename"]: f for f in requests.get(index, headers={"Accept": JSON}, timeout=30).json()["files"]}
    assert entries[built["dep2"]["wheel"].name]["yanked"] is True
    assert entries[built["dep"]["wheel"].name]["yanked"] is False


def test_accepted_coding_follows_what_installers_send() -> None:
    from proxy.repo.pypi import accepted_coding

    assert accepted_coding("gzip, deflate") == "gzip"  # pip 23
    assert accepted_coding("gzip, deflate, zstd") == "zstd"  # uv 0.13
    assert accepted_coding(None) == accepted_coding("") == accepted_coding("br, deflate") == "identity"
    assert accepted_coding("gzip;q=0, zstd;q=0") == "identity" and accepted_coding("*") == "zstd"
    assert accepted_coding("zstd;q=0.5, gzip") == "gzip" and accepted_coding("*;q=0.2, zstd;q=0.1") == "gzip"
    assert accepted_coding("GZIP; Q=0.8") == "gzip" and accepted_coding("gzip;q=nope") == "identity"


def test_pages_compressed_once_per_coding_with_304_head_and_range(server: Server, built: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    import orjson
    import zstandard

    from proxy.repo import pypi as served_pages

    calls: list[str] = []
    for coding, encode in list(served_pages.ENCODERS.items()):
        monkeypatch.setitem(served_pages.ENCODERS, coding,
                            lambda body, c=coding, e=encode: calls.append(c) or e(body))
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "gz"})
    for kinds in built.values():
        api.upload("gz", kinds["wheel"], kinds["sdist"])
    url = f"{server.url}/api/repo/gz/pypi/simple/tiny-dep/"

    def get(coding: str, method: str = "GET", **headers: str) -> requests.Response:
        r = requests.request(method, url, headers={"Accept": PIP_ACCEPT, "Accept-Encoding": coding, **headers},
                             stream=True, timeout=30)
        r.raw_bytes = r.raw.read(decode_content=False)  # type: ignore[attr-defined] - the bytes as sent
        return r

    plain = get("identity")
    assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept, Accept-Encoding"
    body = plain.raw_bytes
    assert orjson.loads(body)["name"] == "tiny-dep"
    gz, zs = get("gzip, deflate"), get("gzip, deflate, zstd")
    assert gz.headers["Content-Encoding"] == "gzip" and gzip.decompress(gz.raw_bytes) == body
    assert zs.headers["Content-Encoding"] == "zstd" and zstandard.decompress(zs.raw_bytes) == body
    assert len(gz.raw_bytes) < len(body) and len(zs.raw_bytes) < len(body)
    etags = {plain.headers["ETag"], gz.headers["ETag"], zs.headers["ETag"]}
    assert len(etags) == 3 and all(e.startswith('"') and e.endswith('"') for e in etags)  # strong, one each
    for _ in range(3):
        assert get("gzip").raw_bytes == gz.raw_bytes and get("zstd").raw_bytes == zs.raw_bytes
    assert sorted(calls) == ["gzip", "zstd"]  # once per coding, not per request

    # 304s per representation: another coding's validator does not match
    again = get("gzip", **{"If-None-Match": gz.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == gz.headers["ETag"] and not again.raw_bytes
    assert get("identity", **{"If-None-Match": gz.headers["ETag"]}).status_code == 200
    assert get("zstd", **{"If-None-Match": f'"x", W/{zs.headers["ETag"]}'}).status_code == 304
    # HEAD: the headers of the GET, no body
    head = get("gzip", "HEAD")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(gz.raw_bytes)
    assert head.headers["ETag"] == gz.headers["ETag"] and head.raw_bytes == b""
    # Range: bytes of the selected (compressed) representation, checked by If-Range against its ETag
    part = get("gzip", Range="bytes=0-9")
    assert part.status_code == 206 and part.raw_bytes == gz.raw_bytes[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(gz.raw_bytes)}"
    tail = get("zstd", Range="bytes=-7", **{"If-Range": zs.headers["ETag"]})
    assert tail.status_code == 206 and tail.raw_bytes == zs.raw_bytes[-7:]
    rest = get("identity", Range=f"bytes=5-{len(body) + 100}")
    assert rest.status_code == 206 and rest.raw_bytes == body[5:]
    assert get("gzip", Range="bytes=0-9", **{"If-Range": plain.headers["ETag"]}).raw_bytes == gz.raw_bytes
    assert get("gzip", Range="bytes=0-1,4-5").status_code == 200  # several ranges: the whole page
    bad = get("gzip", Range=f"bytes={len(gz.raw_bytes)}-")
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(gz.raw_bytes)}"
    assert get("identity", Range="bytes=-0").status_code == 416
    assert get("gzip", "HEAD", Range="bytes=0-9").status_code == 200  # ranges are for GET only


def test_mirror_reader_decodes_gzip_pages(server: Server, hosted: str) -> None:
    """Mirrors read indexes through Upstream.read, which asks for gzip and decodes it (its session
    leaves package files as sent): our compressed pages, a 304, a bomb, a torn stream."""
    import asyncio
    import gzip

    from aiohttp import web

    from conda_platform_plugin.errors import UpstreamError
    from proxy.mirror.http import Upstream

    bomb = gzip.compress(b"\0" * (4 << 20))
    routes = {"/bomb": bomb, "/torn": gzip.compress(b"x" * 5000)[:-20], "/ok": gzip.compress(b"fine")}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=routes[request.path], headers={"Content-Encoding": "gzip"})

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/{name}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        upstream = Upstream()
        try:
            url = hosted + "tiny-dep/"
            status, headers, body = await upstream.read(url, limit=1 << 20, headers={"Accept": JSON})
            headers = {k.lower(): v for k, v in headers.items()}
            assert status == 200 and headers["content-encoding"] == "gzip"
            assert body == requests.get(url, headers={"Accept": JSON, "Accept-Encoding": "identity"},
                                        timeout=30).content
            status, _, body = await upstream.read(url, limit=1 << 20, ok=(200, 304),
                                                  headers={"Accept": JSON, "If-None-Match": headers["etag"]})
            assert (status, body) == (304, b"")
            assert (await upstream.read(base + "/ok", limit=10))[2] == b"fine"
            with pytest.raises(UpstreamError, match="over the limit of 1048576 bytes"):
                await upstream.read(base + "/bomb", limit=1 << 20)  # 4 MB from 4 KB: the limit is on what it decodes to
            with pytest.raises(UpstreamError, match="broken gzip body"):
                await upstream.read(base + "/torn", limit=1 << 20)
        finally:
            await upstream.close()
            await runner.cleanup()

    asyncio.run(go())


def test_pip_installs_through_gzip_pages_and_uv_through_zstd(server: Server, built: dict, tmp_path: Path) -> None:
    """Each installer installs from pages in the coding it asked for (pip: gzip, uv: zstd): each
    channel's cached pages hold exactly those representations afterwards."""
    from proxy.repo.pypi import PAGES

    api = Api(server)
    codings = {}
    for ch, cmd in (("encpip", [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]),
                    ("encuv", ["uv", "pip", "install", "--python", sys.executable])):
        api.post("/api/channels", 201, json={"name": ch})
        for kinds in built.values():
            api.upload(ch, kinds["wheel"], kinds["sdist"])
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1", "UV_NO_CONFIG": "1",
               "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
        r = subprocess.run([*cmd, "--index-url", f"{server.url}/api/repo/{ch}/pypi/simple/", "--target",
                            str(tmp_path / ch), "tiny-app"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _installed(tmp_path / ch) == {"tiny_app", "tiny_dep"}
        root = server.platform.publisher.root / str(server.call(server.platform.channels.get(ch)).id)
        codings[ch] = {(key[0].name, coding) for key, entry in list(PAGES.pages.items())
                       if root in key[0].parents for coding, rep in entry.items() if rep[2]}
    assert codings["encpip"] == {("tiny-app.json", "gzip"), ("tiny-dep.json", "gzip")}
    assert codings["encuv"] == {("tiny-app.json", "zstd"), ("tiny-dep.json", "zstd")}
