"""The web pages' access rules over HTTP (no browser): each page declares a permission checked by
the API's own Auth.authorize with the session cookie's identity; a private channel is a 404 to
strangers; forms need the session's form token and our own origin; an ended token ends the
session; the API and Swagger stay where they were; web writes are audited."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import requests
from builders import build_conda_package
from conftest import Api, Server

from proxy.api.routing import AUTH, PERMISSIONS
from proxy.web.pages import pages


@pytest.fixture
def world(server: Server, api: Api, tmp_path: Path) -> dict:
    api.post("/api/channels", json={"name": "open"}, expect=201)
    api.post("/api/channels", json={"name": "team", "private": True}, expect=201)
    api.upload("team", build_conda_package(tmp_path, "secret", "1.0"))
    tokens = {}
    for user, grant in (("rita", "channel.read:team"), ("mia", "channel.manage:team")):
        api.post("/api/users", json={"name": user}, expect=201)
        api.post(f"/api/users/{user}/grants", json={"permission": grant})
        tokens[user] = api.post("/api/tokens", json={"user": user}, expect=201).json()["token"]
    return tokens


def browser_session(server: Server, token: str | None) -> requests.Session:
    s = requests.Session()
    if token:
        r = s.post(server.url + "/signin", data={"token": token}, allow_redirects=False)
        assert r.status_code == 303, r.text
        assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    return s


def form_token(s: requests.Session, server: Server) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', s.get(server.url + "/channels").text).group(1)


def test_every_page_declares_a_known_permission() -> None:
    assert len(pages.pages) > 30
    for p in pages.pages:
        assert p.permission in PERMISSIONS, p
        if "{channel}" in p.path:
            assert p.permission.startswith("channel."), p  # checked against that channel


def test_anonymous_sees_public_channels_read_only(server: Server, world: dict) -> None:
    anon = browser_session(server, None)
    page = anon.get(server.url + "/channels")
    assert page.status_code == 200 and "open" in page.text and "team" not in page.text
    assert "Create channel" not in page.text and "Sign in" in page.text
    assert anon.get(server.url + "/channels/open").status_code == 200
    hidden = anon.get(server.url + "/channels/team")
    assert hidden.status_code == 404 and "text/html" in hidden.headers["Content-Type"]
    assert "secret" not in hidden.text
    assert anon.get(server.url + "/channels/team/packages/conda/secret").status_code == 404
    # a page that needs a token sends to the sign-in page, a form post is refused
    r = anon.get(server.url + "/channels/open/settings", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/signin?next=/channels/open/settings"
    assert anon.post(server.url + "/channels/open/freeze").status_code == 401
    assert Api(server).get("/api/channels/open").json()["frozen"] is False


def test_roles_and_forms(server: Server, world: dict) -> None:
    rita = browser_session(server, world["rita"])
    assert rita.get(server.url + "/channels/team").status_code == 200
    assert rita.get(server.url + "/channels/team/settings").status_code == 403
    token = form_token(rita, server)
    assert rita.post(server.url + "/channels/team/freeze", data={"csrf": token}).status_code == 403
    mia = browser_session(server, world["mia"])
    token = form_token(mia, server)
    # no form token, a wrong one, or another site's origin: refused, nothing changes
    assert mia.post(server.url + "/channels/team/freeze").status_code == 403
    assert mia.post(server.url + "/channels/team/freeze", data={"csrf": "0" * 40}).status_code == 403
    r = mia.post(server.url + "/channels/team/freeze", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = mia.post(server.url + "/channels/team/freeze", data={"csrf": token}, headers={"Origin": "null"})
    assert r.status_code == 403
    assert Api(server).get("/api/channels/team").json()["frozen"] is False
    r = mia.post(server.url + "/channels/team/freeze", data={"csrf": token}, allow_redirects=False)
    assert r.status_code == 303
    assert Api(server).get("/api/channels/team").json()["frozen"] is True
    audit = Api(server).get("/api/audit").json()["items"]
    assert any(a["actor"] == "mia" and a["action"] == "WEB POST /channels/{channel}/freeze" and a["status"] == 303
               for a in audit)
    # the global Mirrors page is for managers: a channel manager has it (and its link), a reader not
    assert mia.get(server.url + "/mirrors").status_code == 200
    assert 'href="/mirrors"' in mia.get(server.url + "/channels").text
    assert rita.get(server.url + "/mirrors").status_code == 403
    assert 'href="/mirrors"' not in rita.get(server.url + "/channels").text
    refused = rita.get(server.url + "/mirrors/status.json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    # a channel manager may not create top-level channels, only subchannels of theirs
    assert mia.post(server.url + "/channels", data={"csrf": token, "name": "mine"}).status_code == 403
    r = mia.post(server.url + "/channels", data={"csrf": token, "name": "team/sub"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/channels/team/subchannels/sub"


def test_sign_in_errors_and_ended_sessions(server: Server, api: Api) -> None:
    s = requests.Session()
    r = s.post(server.url + "/signin", data={"token": "cpt_nope"})
    assert r.status_code == 401 and "invalid token" in r.text and "cp_session" not in s.cookies
    r = s.post(server.url + "/signin", data={"token": server.admin_token, "next": "https://evil.example/"},
               allow_redirects=False)
    assert r.headers["Location"] == "/channels"  # only local targets
    created = api.post("/api/tokens", json={"description": "short"}, expect=201).json()
    ended = browser_session(server, created["token"])
    assert ended.get(server.url + "/policies").status_code == 200
    api.request("DELETE", f"/api/tokens/{created['id']}")
    server.app[AUTH].invalidate()  # (the identity cache would keep it for IDENTITY_TTL seconds)
    r = ended.get(server.url + "/policies", allow_redirects=False)
    assert r.status_code == 303 and "ended=1" in r.headers["Location"]
    assert "cp_session" not in ended.cookies


def test_api_swagger_and_assets_stay(server: Server) -> None:
    assert requests.get(server.url + "/api/channels").headers["Content-Type"].startswith("application/json")
    assert requests.get(server.url + "/swagger/ui").status_code == 200
    css = requests.get(server.url + "/static/style.css")
    assert css.status_code == 200 and "http" not in css.text.replace("http-equiv", "")
    page = requests.get(server.url + "/channels")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert not re.findall(r'(?:src|href)="https?://', page.text)
    missing = requests.get(server.url + "/no/such/page", headers={"Accept": "text/html,*/*;q=0.8"})
    assert missing.status_code == 404 and "text/html" in missing.headers["Content-Type"]
    assert "there is no page at /no/such/page" in missing.text
    missing = requests.get(server.url + "/no/such/page")  # not a browser: the JSON envelope
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for api_path in ("/api/nothing", "/api/repo/nochannel/noarch/repodata.json", "/swagger/nothing"):
        r = requests.get(server.url + api_path)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json"), api_path
    assert requests.get(server.url + "/static/nothing.css").status_code == 404
    assert requests.get(server.url + "/cron.json", params={"expr": "0 3 * * *"}).json() == {
        "valid": True, "text": "every day at 03:00 UTC"}


def test_mirror_form_passes_the_type_and_its_fields_to_the_domain(server: Server, api: Api) -> None:
    api.post("/api/channels", json={"name": "m"}, expect=201)
    admin = browser_session(server, server.admin_token)
    token = form_token(admin, server)
    base = {"csrf": token, "mode": "passive", "cron": "0 0 1 * *", "policy_from": "channel"}
    r = admin.post(server.url + "/channels/m/mirrors/new", allow_redirects=False, data={
        **base, "name": "py", "type": "python", "source_url": "https://pypi.example/simple",
        "projects": "requests>=2\n\nidna\n", "subdirs": "linux-64"})
    assert r.status_code == 303, r.text
    shown = api.get("/api/channels/m/mirrors/py").json()
    assert shown["type"] == "python" and sorted(shown["projects"]) == ["idna", "requests>=2"]
    # the domain's refusal comes back in the form, with the values kept
    r = admin.post(server.url + "/channels/m/mirrors/new", data={
        **base, "name": "py2", "type": "python", "source_url": "https://pypi.example/simple", "projects": ""})
    assert r.status_code == 400 and "'projects' is required for a python mirror" in html.unescape(r.text)
    assert 'value="https://pypi.example/simple"' in r.text
    r = admin.post(server.url + "/channels/m/mirrors/new", data={
        **base, "name": "bad", "type": "conda", "source_url": "https://x.example/c", "cron": "every day"})
    assert r.status_code == 400 and "invalid cron expression" in r.text
    assert api.get("/api/channels/m/mirrors").json()["total"] == 1
    # editing keeps the mode (the field is locked) and reads the projects back
    page = admin.get(server.url + "/channels/m/mirrors/py/edit").text
    assert re.search(r'id="m-mode-passive"[^>]*checked[^>]*disabled', page)
    assert "requests&gt;=2" in page
    # Delete Mirror asks first
    r = admin.post(server.url + "/channels/m/mirrors/py/delete", data={"csrf": token})
    assert r.status_code == 200 and "Delete mirror py?" in r.text
    assert api.get("/api/channels/m/mirrors").json()["total"] == 1
    r = admin.post(server.url + "/channels/m/mirrors/py/delete", data={"csrf": token, "confirm": "yes"},
                   allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/channels/m/mirrors"
    assert api.get("/api/channels/m/mirrors").json()["total"] == 0


def _listed(s: requests.Session, url: str) -> list[str]:
    page = s.get(url)
    assert page.status_code == 200, page.text[:300]
    return re.findall(r'name="file" value="([^"]+)"', page.text)


def test_packages_tab_filters_page_and_search_on_both_databases(database_url: str | None, tmp_path: Path) -> None:
    server = Server(tmp_path / "data", database_url=database_url).start()
    try:
        api = Api(server)
        api.post("/api/channels", json={"name": "c"}, expect=201)
        built = [build_conda_package(tmp_path / "p", "numpy", "1.26.4", summary="Arrays", license="BSD-3-Clause"),
                 build_conda_package(tmp_path / "p", "numpy", "2.0.1", summary="Arrays", license="BSD-3-Clause"),
                 build_conda_package(tmp_path / "p", "numba", "0.60.0", subdir="linux-64", license="BSD-2-Clause"),
                 build_conda_package(tmp_path / "p", "my_pkg", "1.0", summary="100% pure", license="MIT License")]
        api.upload("c", *built)
        s = browser_session(server, server.admin_token)
        base = server.url + "/channels/c"
        every = ["linux-64/numba-0.60.0-0.conda", "noarch/my_pkg-1.0-0.conda", "noarch/numpy-1.26.4-0.conda",
                 "noarch/numpy-2.0.1-0.conda"]
        assert _listed(s, base) == every  # platform, then name, then file
        assert _listed(s, base + "?name=num") == [every[0], *every[2:]]
        assert _listed(s, base + "?name=numpy&version=2") == [every[3]]
        assert _listed(s, base + "?subdir=linux-64&type=conda") == [every[0]]
        assert _listed(s, base + "?type=python") == []
        assert _listed(s, base + "?license=MIT") == [every[1]]  # by meaning: "MIT License" is MIT
        assert _listed(s, base + "?license=BSD-3-Clause") == every[2:]
        assert _listed(s, base + "?search=ARRAYS") == every[2:]  # name or summary, any case
        assert _listed(s, base + "?search=my_") == [every[1]]  # _ and % are literal
        assert _listed(s, base + "?search=100%25") == [every[1]]
        assert _listed(s, base + "?search=y%25") == []
        assert _listed(s, base + "?uploaded=1d") == every
        async def age() -> None:  # the numba upload a year and a day ago
            from proxy.store.tables import files
            async with server.platform.db.write() as conn:
                await conn.execute(files.update().where(files.c.name == "numba")
                                   .values(uploaded_at=files.c.uploaded_at - 366 * 86400))
        server.call(age())
        assert _listed(s, base + "?uploaded=365d") == every[1:]
        for bad in ("?type=rpm", "?uploaded=2d", "?page=0", "?page=x", "?name=" + "x" * 300):
            assert s.get(base + bad).status_code == 400, bad
        assert _listed(s, base + "?page=2") == []
        # pages in the second half are read backwards from the end: every page size tiles the same order
        from proxy.web.listing import Filters, list_files

        async def tiles(per_page: int) -> list[str]:
            ch = await server.platform.channels.get("c")
            out = []
            for page in range(1, 6):
                rows, total = await list_files(server.platform, ch, Filters(), page, per_page)
                assert total == 4
                out += [f"{r.subdir}/{r.filename}" for r in rows]
            return out
        for per_page in (1, 2, 3, 4, 5):
            assert server.call(tiles(per_page)) == every, per_page
    finally:
        server.stop()


def test_upload_form_needs_the_form_token_and_refuses_bad_packages(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", json={"name": "u"}, expect=201)
    admin = browser_session(server, server.admin_token)
    token = form_token(admin, server)
    good = build_conda_package(tmp_path, "good", "1.0")
    files = {"file": (good.name, good.read_bytes(), "application/octet-stream")}
    assert admin.post(server.url + "/channels/u/files", files=files).status_code == 403  # no form token
    r = admin.post(server.url + "/channels/u/files?csrf=" + token,
                   files={"file": ("bad-1.0-0.conda", b"not a package", "application/octet-stream")})
    assert r.status_code == 422 and "text/html" in r.headers["Content-Type"]
    assert api.get("/api/channels/u/files").json()["total"] == 0
    r = admin.post(server.url + "/channels/u/files?csrf=" + token, files=files, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/channels/u?done=uploaded"
    assert [f["filename"] for f in api.get("/api/channels/u/files").json()["items"]] == [good.name]


def test_dependencies_tab_of_python_and_r_packages(server: Server, api: Api, tmp_path: Path) -> None:
    """Each type's dependencies on the page as the API gives them: PEP 508 requirements, R's fields."""
    from pybuilders import build_python_project
    from rbuilders import build_r_source

    api.post("/api/channels", json={"name": "mixed"}, expect=201)
    app = build_python_project(tmp_path / "py", "tiny-app", "1.0", requires=["tiny-dep>=1"], requires_python=">=3.9")
    api.upload("mixed", app["wheel"], build_r_source(tmp_path / "r", "tinyr", "1.0.0", Imports="tinydep (>= 0.1)"))
    s = browser_session(server, server.admin_token)
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/python/tiny-app?tab=dependencies").text)
    assert "tiny-dep>=1" in page and ">=3.9" in page
    assert "No dependencies." not in page
    page = html.unescape(s.get(server.url + "/channels/mixed/packages/cran/tinyr?tab=dependencies").text)
    assert "tinydep (>= 0.1)" in page and "missing" in page and "No dependencies." not in page


def test_channel_tree_is_one_query_per_page(server: Server, api: Api, world: dict) -> None:
    """The navigation, the channel list, the channel header and the move/copy targets share one
    read of the viewer's channels: a page costs the same number of queries with 2 channels or 12."""
    import sqlalchemy as sa

    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        statements.append(statement)

    engine = server.platform.db.engine.sync_engine
    admin, rita = browser_session(server, server.admin_token), browser_session(server, world["rita"])
    pages = ("/channels", "/channels/open", "/channels/team", "/channels/team/settings")

    def costs(s: requests.Session) -> dict[str, int]:
        out = {}
        for page in pages:
            s.get(server.url + page)  # caches warm: the figure is the page's own
            statements.clear()
            r = s.get(server.url + page)
            out[page] = len(statements)
            assert r.status_code == (403 if s is rita and page.endswith("settings") else 200), page
        return out

    api.post("/api/channels/team/subchannels", json={"name": "sub"}, expect=201)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        before = costs(admin), costs(rita)
        for i in range(10):
            api.post("/api/channels", json={"name": f"more{i}", "private": i % 2 == 1}, expect=201)
            api.post(f"/api/channels/more{i}/subchannels", json={"name": "sub"}, expect=201)
        assert all(before[0].values()) and (costs(admin), costs(rita)) == before
        statements.clear()
        admin.get(server.url + "/channels/team")  # the Packages tab: navigation and move/copy targets
        listing = [s for s in statements if "FROM channels" in s and "WHERE channels.name =" not in s
                   and "WHERE channels.id =" not in s]
        assert len(listing) == 1, listing
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    # what the one read shows: every visible channel in the navigation, subchannels under theirs,
    # the writable ones (channels and subchannels) as move/copy targets; rita sees no private more*
    page = admin.get(server.url + "/channels/team").text
    assert all(f'href="/channels/more{i}"' in page for i in range(10))
    targets = re.findall(r"<option>([^<]+)</option>", re.search(r'<select id="target".*?</select>', page, re.S)[0])
    assert targets[:4] == ["more0", "more0/sub", "more1", "more1/sub"] and "team" not in targets
    assert {"open", "team/sub", "more9/sub"} <= set(targets)
    seen = rita.get(server.url + "/channels").text
    assert "more0" in seen and "more1" not in seen and "team" in seen and "more0/sub" in seen
    assert rita.get(server.url + "/channels?page=2").status_code == 200


def test_pages_answer_head(server: Server, world: dict) -> None:
    """Every GET page answers HEAD like its GET, without a body, behind the same checks."""
    anon, mia = browser_session(server, None), browser_session(server, world["mia"])
    for s, page in ((anon, "/channels"), (anon, "/channels/open"), (mia, "/channels/team"),
                    (mia, "/channels/team/settings"), (mia, "/mirrors"), (anon, "/static/style.css")):
        got, head = s.get(server.url + page), s.head(server.url + page)
        assert (got.status_code, head.status_code) == (200, 200), page
        assert head.content == b"" and head.headers["Content-Type"] == got.headers["Content-Type"], page
        assert int(head.headers["Content-Length"]) == len(got.content), page
    assert anon.head(server.url + "/channels/team").status_code == 404  # private: nothing to strangers
    r = anon.head(server.url + "/channels/open/settings", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/signin?next=/channels/open/settings"
    assert mia.head(server.url + "/channels/open/settings").status_code == 403
    assert "Content-Security-Policy" in anon.head(server.url + "/channels").headers
    routes = {(r.method, r.resource.canonical) for r in server.app.router.routes() if hasattr(r.handler, "page")}
    assert all(("HEAD", path) in routes for method, path in routes if method == "GET")


def test_mirror_form_concurrency(server: Server, api: Api) -> None:
    """The form's concurrency goes to the domain, which checks it; a refusal comes back in the form."""
    api.post("/api/channels", json={"name": "mc"}, expect=201)
    admin = browser_session(server, server.admin_token)
    token = form_token(admin, server)
    assert re.search(r'id="m-concurrency"[^>]*max="64"[^>]*value="4"', admin.get(
        server.url + "/channels/mc/mirrors/new").text)  # the domain's default and limit
    base = {"csrf": token, "mode": "active", "cron": "0 0 1 * *", "policy_from": "channel", "type": "conda",
            "source_url": "https://conda.example/forge"}
    for bad in ("0", "65", "many", "2.5"):
        r = admin.post(server.url + "/channels/mc/mirrors/new", data={**base, "name": "c", "concurrency": bad})
        assert r.status_code == 400 and "&#39;concurrency&#39; must be a whole number from 1 to 64" in r.text, bad
        assert re.search(rf'id="m-concurrency"[^>]*value="{re.escape(bad)}"', r.text)  # the value kept
        assert 'value="https://conda.example/forge"' in r.text
    assert api.get("/api/channels/mc/mirrors").json()["total"] == 0  # nothing left behind
    r = admin.post(server.url + "/channels/mc/mirrors/new", data={**base, "name": "c", "concurrency": "8"},
                   allow_redirects=False)
    assert r.status_code == 303 and api.get("/api/channels/mc/mirrors/c").json()["concurrency"] == 8
    r = admin.post(server.url + "/channels/mc/mirrors/new", data={**base, "name": "d", "concurrency": " "},
                   allow_redirects=False)
    assert r.status_code == 303 and api.get("/api/channels/mc/mirrors/d").json()["concurrency"] == 4
    edit = server.url + "/channels/mc/mirrors/c/edit"
    assert re.search(r'id="m-concurrency"[^>]*value="8"', admin.get(edit).text)
    r = admin.post(edit, data={**base, "name": "c", "concurrency": "16"}, allow_redirects=False)
    assert r.status_code == 303 and api.get("/api/channels/mc/mirrors/c").json()["concurrency"] == 16
    r = admin.post(edit, data={**base, "name": "c", "concurrency": "-1"})
    assert r.status_code == 400 and "must be a whole number from 1 to 64" in html.unescape(r.text)
    assert re.search(r'id="m-concurrency"[^>]*value="-1"', r.text)
    r = admin.post(edit, data={**base, "name": "c", "concurrency": ""}, allow_redirects=False)
    assert r.status_code == 303 and api.get("/api/channels/mc/mirrors/c").json()["concurrency"] == 16  # kept
