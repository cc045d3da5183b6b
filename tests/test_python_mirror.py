"""Python mirrors: a local PEP 503 upstream index served here (wheels and sdists built from tiny
projects), passive and active runs limited to a project list, PEP 592 yanked files, PEP 658
metadata, conditional GETs, policies; real pip and uv install through the mirror, and the second
install does not ask the upstream for the file again."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web
from conftest import Api, Server
from pybuilders import build_python_project
from test_mirror import wait_run

from proxy.mirror.pypi_source import check_projects, parse_project_page

DATA = Path(__file__).parent.parent.parent / "shared" / "data" / "pypi-simple"
DATA = DATA if DATA.is_dir() else Path("/work/shared/data/pypi-simple")


class StaticIndex:
    """A PEP 503 index as plain files (HTML pages only, no sizes: like a directory served by
    nginx), on 127.0.0.1, with ETags (304s) and per-path hit counters."""

    def __init__(self, root: Path):
        self.root = root
        self.hits: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()
        self.url = ""

    def add_project(self, name: str, files: list[Path], yanked: dict[str, str] | None = None) -> None:
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        links = []
        for f in files:
            data = f.read_bytes()
            (self.root / "files" / f.name).write_bytes(data)
            attrs = f'href="../../files/{f.name}#sha256={hashlib.sha256(data).hexdigest()}" ' \
                    f'data-requires-python="{html.escape(">=3.8")}"'
            if f.name.endswith(".whl"):
                with zipfile.ZipFile(f) as zf:
                    meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
                (self.root / "files" / f"{f.name}.metadata").write_bytes(meta)
                attrs += f' data-dist-info-metadata="sha256={hashlib.sha256(meta).hexdigest()}"'
            if yanked and f.name in yanked:
                attrs += f' data-yanked="{html.escape(yanked[f.name])}"'
            links.append(f"<a {attrs}>{f.name}</a><br/>")
        page = self.root / "simple" / name
        page.mkdir(parents=True, exist_ok=True)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>{''.join(links)}</body></html>")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.path.lstrip("/")
        if request.method == "GET":  # HEADs (sizes asked by a mirror run) are not downloads
            self.hits[rel] += 1
        target = (self.root / rel / "index.html") if rel.endswith("/") else self.root / rel
        if self.root.resolve() not in target.resolve().parents or not target.is_file():
            raise web.HTTPNotFound()
        resp = web.FileResponse(target, headers={"Content-Type": "text/html" if rel.endswith("/") else
                                                 "application/octet-stream"})
        if request.headers.get("If-None-Match"):
            self.not_modified[rel] += 1  # asked conditionally (FileResponse answers 304 when it matches)
        return resp

    def start(self) -> StaticIndex:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handle)  # and HEAD
            self.runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
            self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/simple"
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    out = tmp_path_factory.mktemp("built")
    return {
        "dep1": build_python_project(out / "d1", "tiny-dep", "1.0", license="BSD-3-Clause"),
        "dep2": build_python_project(out / "d2", "tiny-dep", "2.0", license="BSD-3-Clause"),
        "app1": build_python_project(out / "a1", "tiny-app", "1.0", requires=["tiny-dep"]),
        "app2": build_python_project(out / "a2", "tiny-app", "2.0", requires=["tiny-dep>=1"], license="MIT",
                                     summary="The app"),
        "gpl": build_python_project(out / "g", "gpl-thing", "1.0", license="GPL-3.0-only"),
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, built: dict) -> Iterator[StaticIndex]:
    up = StaticIndex(tmp_path_factory.mktemp("index"))
    up.add_project("tiny-dep", [built["dep1"]["wheel"], built["dep1"]["sdist"], built["dep2"]["wheel"]],
                   yanked={built["dep2"]["wheel"].name: "broken <build>"})
    up.add_project("tiny-app", [built[k][kind] for k in ("app1", "app2") for kind in ("wheel", "sdist")])
    up.add_project("gpl-thing", [built["gpl"]["wheel"]])
    up.start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("data")).start()
    yield s
    s.stop()


def installed(target: Path) -> dict[str, str]:
    return dict(p.name.removesuffix(".dist-info").split("-", 1) for p in target.glob("*.dist-info"))


def pip_install(index: str, target: Path, *specs: str) -> None:
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--index-url", index,
                        "--target", str(target), *specs], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def uv_install(index: str, target: Path, *specs: str) -> None:
    env = {**os.environ, "UV_NO_CONFIG": "1", "UV_CACHE_DIR": str(target) + "-cache"}
    r = subprocess.run(["uv", "pip", "install", "--index-url", index, "--target", str(target), "--python",
                        sys.executable, *specs], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_project_lists_are_validated() -> None:
    assert check_projects(["Requests >= 2", "idna"]) == ["Requests>=2", "idna"]
    for bad in ([], "requests", ["requests; python_version<'3'"], ["not a req!"], ["a", "A"]):
        with pytest.raises(Exception, match="projects|requirement|appears twice"):
            check_projects(bad)


def test_real_pypi_pages_parse() -> None:
    """Real PyPI captures (../shared/data/pypi-simple): JSON with PEP 700 fields, HTML with hashes."""
    files = parse_project_page((DATA / "argset-700.json").read_bytes(), "application/vnd.pypi.simple.v1+json",
                               "https://pypi.org/simple/argset/")
    assert [f["filename"] for f in files] == ["argset-0.1.0-py3-none-any.whl", "argset-0.1.0.tar.gz"]
    assert files[0]["size"] == 5219 and files[0]["requires-python"] == "~=3.6"
    html_files = parse_project_page((DATA / "qypi.html").read_bytes(), "text/html", "https://pypi.org/simple/qypi/")
    assert len(html_files) == 12 and all(len(f["hashes"]["sha256"]) == 64 for f in html_files)
    assert all(f["url"].startswith("https://files.pythonhosted.org/") for f in html_files)
    assert any(f["requires-python"] for f in html_files)
    yanked = parse_project_page((DATA / "yanked.json").read_bytes(), "application/vnd.pypi.simple.v1+json",
                                "https://pypi.org/simple/yanked/")
    assert any(f["yanked"] for f in yanked)
    devpi = parse_project_page((DATA / "devpi_devpi.html").read_bytes(), "text/html",
                               "https://m.devpi.net/root/pypi/+simple/devpi/")
    assert all(f["url"].startswith("https://m.devpi.net/") for f in devpi)  # relative URLs resolved


def test_mirror_validation(server: Server, upstream: StaticIndex) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "val"})
    base = "/api/channels/val/mirrors"
    body = {"name": "m", "type": "python", "source_url": upstream.url}
    assert "projects" in api.post(base, 400, json=body).json()["error"]["message"]
    assert "subdirs" in api.post(base, 400, json={**body, "projects": ["x"], "subdirs": ["noarch"]}).text
    assert "invalid requirement" in api.post(base, 400, json={**body, "projects": ["x y"]}).text
    conda = {"name": "c", "source_url": upstream.url, "projects": ["x"]}
    assert "python mirrors" in api.post(base, 400, json=conda).text
    assert api.get(base).json()["total"] == 0  # bad input leaves nothing behind
    made = api.post(base, 201, json={**body, "projects": ["tiny-dep"]}).json()
    assert made["type"] == "python" and made["projects"] == ["tiny-dep"] and made["subdirs"] is None
    edited = api.request("PATCH", f"{base}/m", json={"projects": ["tiny-dep>=2", "tiny-app"]}).json()
    assert edited["projects"] == ["tiny-dep>=2", "tiny-app"]
    api.request("PATCH", f"{base}/m", 400, json={"projects": []})


def test_passive_mirror_pip_then_uv(server: Server, upstream: StaticIndex, built: dict, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "pm"})
    base = "/api/channels/pm/mirrors"
    api.post(base, 201, json={"name": "up", "type": "python", "source_url": upstream.url, "run_now": True,
                              "projects": ["tiny-app>=2", "tiny-dep"]})
    run = wait_run(api, "up", base=base)
    assert run["status"] == "completed", run
    fig = run["figures"]
    # tiny-app 1.0 (wheel and sdist) is outside "tiny-app>=2"
    assert fig["records_seen"] == 7 and fig["records_published"] == 5 and fig["filtered_by_rule"] == {"projects": 2}, fig
    index = f"{server.url}/api/repo/pm/pypi/simple/"
    doc = requests.get(index + "tiny-dep/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                       timeout=30).json()
    files = {f["filename"]: f for f in doc["files"]}
    yanked = built["dep2"]["wheel"]
    assert files[yanked.name]["yanked"] == "broken <build>" and files[yanked.name]["size"] == yanked.stat().st_size
    page = requests.get(index + "tiny-dep/", timeout=30).text
    assert 'data-yanked="broken &lt;build&gt;"' in page
    # PEP 658 metadata from the upstream, served verbatim; the record's license comes from it
    wheel = built["app2"]["wheel"]
    app = requests.get(index + "tiny-app/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                       timeout=30).json()
    entry = next(f for f in app["files"] if f["filename"] == wheel.name)
    meta = requests.get(requests.compat.urljoin(index + "tiny-app/", entry["url"]) + ".metadata", timeout=30)
    assert meta.content == (upstream.root / "files" / f"{wheel.name}.metadata").read_bytes()
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(meta.content).hexdigest()}
    art = api.get("/api/channels/pm/artifacts/python/tiny-app").json()
    assert art["license"] == "MIT" and art["summary"] == "The app"
    assert upstream.hits[f"files/{wheel.name}"] == 0  # passive: no bytes fetched yet

    pip_target = tmp_path / "pip"
    pip_install(index, pip_target, "tiny-app")
    assert installed(pip_target) == {"tiny_app": "2.0", "tiny_dep": "1.0"}  # 2.0 is yanked
    assert upstream.hits[f"files/{wheel.name}"] == 1
    uv_target = tmp_path / "uv"
    uv_install(index, uv_target, "tiny-app")
    assert installed(uv_target) == {"tiny_app": "2.0", "tiny_dep": "1.0"}
    assert upstream.hits[f"files/{wheel.name}"] == 1  # served from the server's store now
    assert upstream.hits[f"files/{built['dep1']['wheel'].name}"] == 1

    # a second run: the pages are asked conditionally, nothing changed, nothing written
    asked = sum(upstream.not_modified.values())
    api.post(f"{base}/up/run", 202)
    again = wait_run(api, "up", base=base, until=("completed", "failed"))
    assert again["status"] == "completed" and again["figures"].get("upstream_unchanged") is True
    assert sum(upstream.not_modified.values()) >= asked + 2
    details = api.get(f"{base}/up").json()["packages"]
    assert details["published"] == 5 and details["filtered_by_rule"] == {"projects": 2}
    filtered = api.get(f"{base}/up/packages", params={"state": "filtered"}).json()["items"]
    assert {f["rule"] for f in filtered} == {"projects"} and all("tiny-app>=2" in f["reason"] for f in filtered)


def test_active_mirror_of_our_own_server_with_policy(server: Server, upstream: StaticIndex, built: dict,
                                                     tmp_path: Path) -> None:
    """Upstream: a channel of another server of ours (PEP 691 JSON with sizes and PEP 658);
    active mode downloads every kept file; the mirror's license policy filters GPL."""
    Api(server).post("/api/channels", 201, json={"name": "origin"})
    Api(server).upload("origin", built["gpl"]["wheel"], built["app2"]["wheel"], built["dep1"]["wheel"])
    target = Server(tmp_path / "target").start()  # a store without these blobs
    try:
        _active_mirror_of(target, server, built, tmp_path)
    finally:
        target.stop()


def _active_mirror_of(server: Server, origin: Server, built: dict, tmp_path: Path) -> None:
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "act"})
    api.post("/api/policies", 201, json={"name": "no-gpl", "rules": [{"kind": "license", "deny_families": ["GPL3"]}]})
    base = "/api/channels/act/mirrors"
    api.post(base, 201, json={"name": "own", "type": "python", "mode": "active", "policy": "no-gpl", "run_now": True,
                              "source_url": f"{origin.url}/api/repo/origin/pypi/simple",
                              "projects": ["gpl-thing", "tiny-app", "tiny-dep"]})
    run = wait_run(api, "own", base=base)
    assert run["status"] == "completed", run
    assert run["figures"]["filtered_by_rule"] == {"license": 1} and run["figures"]["files_done"] == 2
    packages = api.get(f"{base}/own/packages").json()["items"]
    assert {p["filename"]: p["stored"] for p in packages} == {
        built["app2"]["wheel"].name: "active", built["dep1"]["wheel"].name: "active"}
    index = f"{server.url}/api/repo/act/pypi/simple/"
    assert [p["name"] for p in requests.get(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                                            timeout=30).json()["projects"]] == ["tiny-app", "tiny-dep"]
    target = tmp_path / "t"
    uv_install(index, target, "tiny-app")
    assert installed(target) == {"tiny_app": "2.0", "tiny_dep": "1.0"}
    deps = api.get("/api/channels/act/artifacts/python/tiny-app/dependencies").json()
    assert [d["name"] for d in deps["files"][0]["depends"]] == ["tiny-dep"]


def test_dependency_reports_resolve_requires_dist(server: Server, upstream: StaticIndex, built: dict) -> None:
    api = Api(server)
    for channel, projects in (("full", ["tiny-app>=2", "tiny-dep"]), ("lone", ["tiny-app>=2"])):
        api.post("/api/channels", 201, json={"name": channel})
        api.post(f"/api/channels/{channel}/mirrors", 201, json={
            "name": "up", "type": "python", "source_url": upstream.url, "projects": projects, "run_now": True})
        assert wait_run(api, "up", base=f"/api/channels/{channel}/mirrors")["status"] == "completed"
    full = api.get("/api/channels/full/mirrors/up/report").json()
    assert full["satisfied"] is True and full["roots"] == 5 and full["missing"] == []
    lone = api.get("/api/channels/lone/mirrors/up/report").json()
    assert lone["satisfied"] is False
    assert [(m["spec"], sorted(m["needed_by"])) for m in lone["missing"]] == [
        ("tiny-dep>=1", ["pypi/tiny_app-2.0-py3-none-any.whl", "pypi/tiny_app-2.0.tar.gz"])]
    csv = api.get("/api/channels/lone/mirrors/up/report", params={"format": "csv"}).text
    assert "missing,tiny-dep>=1,pypi" in csv
    # an upload satisfies it: tiny-app 2.0 needs tiny-dep>=1, resolved to the uploaded 1.0
    api.upload("lone", built["dep1"]["wheel"])
    lone = api.get("/api/channels/lone/mirrors/up/report").json()
    assert lone["satisfied"] is True
    assert [(d["name"], d["version"], d["direct"]) for d in lone["dependencies"]] == [("tiny-dep", "1.0", True)]
    # the channel's report of its python files (every file a root); conda's is the default
    whole = api.get("/api/channels/lone/report", params={"type": "python"}).json()
    assert whole["satisfied"] is True and whole["roots"] == 3
    assert api.get("/api/channels/lone/report").json()["roots"] == 0
    from test_cli import cli

    shown = cli(server, "mirror", "report", "lone", "--type", "python", "--format", "json").stdout
    assert json.loads(shown)["roots"] == 3
    assert "unknown artifact type" in api.get("/api/channels/lone/report", params={"type": "npm"},
                                              expect=400).json()["error"]["message"]


def test_cli_creates_and_shows_python_mirrors(server: Server, upstream: StaticIndex) -> None:
    from test_cli import cli, error_line

    Api(server).post("/api/channels", 201, json={"name": "clim"})
    out = cli(server, "mirror", "create", "clim", "py", "--type", "python", "--source", upstream.url,
              "--project", "tiny-app>=2", "--project", "tiny-dep", "--run-now").stdout
    assert "created passive mirror clim/py" in out
    wait_run(Api(server), "py", base="/api/channels/clim/mirrors")
    shown = cli(server, "mirror", "show", "clim", "py").stdout
    assert "tiny-app>=2, tiny-dep" in shown and "python" in shown and "5 published" in shown
    cli(server, "mirror", "edit", "clim", "py", "--project", "tiny-dep")
    assert "projects" in cli(server, "mirror", "show", "clim", "py").stdout
    line = error_line(cli(server, "mirror", "create", "clim", "bad", "--type", "python", "--source", upstream.url,
                          code=1))
    assert "'projects' is required" in line


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory, built: dict) -> Iterator[tuple[str, Path]]:
    """(its URL, its request log)"""
    """A plain directory of wheels and sdists served by Python's own http.server (a listing, no hashes)."""
    import socket
    import time

    root = tmp_path_factory.mktemp("dir")
    for key in ("dep1", "app2"):
        for kind in ("wheel", "sdist"):
            (root / built[key][kind].name).write_bytes(built[key][kind].read_bytes())
    (root / "notes.txt").write_text("not a package\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = root.parent / "http.log"
    with log.open("wb") as sink:  # http.server logs each request on stderr
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                 "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
    yield url, log
    proc.terminate()
    proc.wait(10)


def test_mirror_of_a_directory_listing(directory: tuple[str, Path], built: dict, tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()  # a store without these blobs
    try:
        _directory_mirror(server, directory, built, tmp_path)
    finally:
        server.stop()


def _directory_mirror(server: Server, directory: tuple[str, Path], built: dict, tmp_path: Path) -> None:
    url, log = directory

    def gets(name: str) -> int:
        return log.read_text().count(f'"GET /{name} ')
    api = Api(server)
    api.post("/api/channels", 201, json={"name": "flat"})
    api.post("/api/channels/flat/mirrors", 201, json={"name": "dir", "type": "python", "source_url": url,
                                                      "projects": ["tiny-app", "tiny-dep"], "run_now": True})
    run = wait_run(api, "dir", base="/api/channels/flat/mirrors")
    assert run["status"] == "completed" and run["figures"]["records_published"] == 4, run
    index = f"{server.url}/api/repo/flat/pypi/simple/"
    doc = requests.get(index + "tiny-app/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                       timeout=30).json()
    wheel = built["app2"]["wheel"]
    entry = next(f for f in doc["files"] if f["filename"] == wheel.name)
    assert entry["hashes"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert entry["size"] == wheel.stat().st_size and entry["core-metadata"]  # learned by reading the file
    assert api.get("/api/channels/flat/artifacts/python/tiny-app").json()["license"] == "MIT"
    assert gets(wheel.name) == 1  # read once by the run to learn its sha256
    target = tmp_path / "t"
    pip_install(index, target, "tiny-app")
    assert installed(target) == {"tiny_app": "2.0", "tiny_dep": "1.0"}
    assert gets(wheel.name) == 2  # passive: fetched on pip's request
    # a second run reads no file again (sha256 known by URL, size and Last-Modified) and writes nothing
    api.post("/api/channels/flat/mirrors/dir/run", 202)
    again = wait_run(api, "dir", base="/api/channels/flat/mirrors", until=("completed", "failed"))
    assert again["status"] == "completed" and again["figures"].get("upstream_unchanged") is True, again
    assert gets(wheel.name) == 2
