"""Access control: every route declares a permission, and every route answers each kind of caller
as it should (a table over the whole route table, not a sample)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import requests
from builders import build_conda_package
from conftest import Api, Server

from proxy.api.routing import AUTH, PERMISSIONS, routes

ROLES = ["anonymous", "reader", "writer", "manager", "admin", "expired", "revoked", "other"]

# What each kind of caller meets for each permission, on the private channel "team".
# ok: passed the check (whatever the handler then says); hidden: the channel does not exist for them.
EXPECT = {
    "channel.read": dict(anonymous="hidden", reader="ok", writer="ok", manager="ok", admin="ok", other="hidden"),
    "channel.write": dict(anonymous="hidden", reader="forbidden", writer="ok", manager="ok", admin="ok",
                          other="hidden"),
    "channel.manage": dict(anonymous="hidden", reader="forbidden", writer="forbidden", manager="ok", admin="ok",
                           other="hidden"),
    "public": dict(anonymous="ok", reader="ok", writer="ok", manager="ok", admin="ok", other="ok"),
    "authenticated": dict(anonymous="unauthorized", reader="ok", writer="ok", manager="ok", admin="ok", other="ok"),
}
for _attr in ("channels.create", "users.manage", "policies.manage", "admin"):
    EXPECT[_attr] = dict(anonymous="unauthorized", reader="forbidden", writer="forbidden", manager="forbidden",
                         admin="ok", other="forbidden")
for _perm in EXPECT.values():
    _perm.update(expired="unauthorized", revoked="unauthorized")

PARAMS = {"channel": "team", "subchannel": "sub", "type": "conda", "name": "pkg", "subdir": "linux-64",
          "filename": "missing-1.0-0.conda", "token_id": "999999", "user": "nobody",
          "tail": "team/noarch/repodata.json",
          "mirror": "nomirror", "run": "1", "policy": "nopolicy", "id": "CVE-0000-0", "file": "1.root.json",
          "badge": "version.svg"}
#: bodies that every handler refuses after the check (400), so the table changes nothing
BODY = {"bogus": True}


#: The access rule of every route, written down independently of the route table: a route missing
#: here, or declaring something else, fails the tests. Subchannel variants follow their channel route.
SPEC = {
    ("GET", "/api/channels"): "public",
    ("POST", "/api/channels"): "channels.create",
    ("GET", "/api/channels/{channel}"): "channel.read",
    ("PATCH", "/api/channels/{channel}"): "channel.manage",
    ("DELETE", "/api/channels/{channel}"): "channel.manage",
    ("POST", "/api/channels/{channel}/freeze"): "channel.manage",
    ("POST", "/api/channels/{channel}/unfreeze"): "channel.manage",
    ("GET", "/api/channels/{channel}/subchannels"): "channel.read",
    ("POST", "/api/channels/{channel}/subchannels"): "channel.manage",
    ("POST", "/api/channels/{channel}/files"): "channel.write",
    ("GET", "/api/channels/{channel}/files"): "channel.read",
    ("GET", "/api/channels/{channel}/files/{subdir}/{filename}"): "channel.read",
    ("GET", "/api/channels/{channel}/files/{subdir}/{filename}/download"): "channel.read",
    ("DELETE", "/api/channels/{channel}/files/{subdir}/{filename}"): "channel.write",
    ("POST", "/api/channels/{channel}/files/{subdir}/{filename}/yank"): "channel.write",
    ("DELETE", "/api/channels/{channel}/files/{subdir}/{filename}/yank"): "channel.write",
    ("POST", "/api/channels/{channel}/files/delete"): "channel.write",
    ("POST", "/api/channels/{channel}/files/copy"): "channel.read",  # + write on the target, checked in the handler
    ("POST", "/api/channels/{channel}/files/move"): "channel.write",  # + write on the target
    ("GET", "/api/channels/{channel}/artifacts"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/readme"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/cves"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/files"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/dependencies"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/dependents"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/badges"): "channel.read",
    ("GET", "/api/channels/{channel}/artifacts/{type}/{name}/badges/{badge}"): "channel.read",
    ("GET", "/api/channels/{channel}/files/{subdir}/{filename}/sbom"): "channel.read",
    ("GET", "/api/channels/{channel}/files/{subdir}/{filename}/dependencies"): "channel.read",
    ("DELETE", "/api/channels/{channel}/artifacts/{type}/{name}"): "channel.write",
    ("GET", "/api/search"): "public",
    ("GET", "/api/whoami"): "public",
    ("GET", "/api/tokens"): "authenticated",
    ("POST", "/api/tokens"): "authenticated",
    ("DELETE", "/api/tokens/{token_id}"): "authenticated",
    ("GET", "/api/users"): "users.manage",
    ("POST", "/api/users"): "users.manage",
    ("GET", "/api/users/{user}"): "users.manage",
    ("POST", "/api/users/{user}/grants"): "users.manage",
    ("POST", "/api/users/{user}/grants/revoke"): "users.manage",
    ("GET", "/api/audit"): "admin",
    ("GET", "/api/policies"): "authenticated",
    ("POST", "/api/policies"): "policies.manage",
    ("GET", "/api/policies/{policy}"): "authenticated",
    ("PATCH", "/api/policies/{policy}"): "policies.manage",
    ("DELETE", "/api/policies/{policy}"): "policies.manage",
    ("POST", "/api/policies/{policy}/apply"): "policies.manage",  # + manage on the target channel
    ("POST", "/api/policies/{policy}/detach"): "policies.manage",  # + manage on the target channel
    ("POST", "/api/policies/{policy}/preview"): "authenticated",  # + read on the channel, policies.manage for URLs
    ("GET", "/api/channels/{channel}/policy"): "channel.read",
    ("POST", "/api/cves"): "policies.manage",
    ("GET", "/api/cves"): "public",
    ("GET", "/api/cves/{id}"): "public",
    ("GET", "/api/openapi.json"): "public",
    ("GET", "/swagger/ui"): "public",
    ("GET", "/api/channels/{channel}/mirrors"): "channel.read",
    ("POST", "/api/channels/{channel}/mirrors"): "channel.manage",
    ("GET", "/api/mirrors"): "authenticated",
    ("GET", "/api/channels/{channel}/mirrors/{mirror}"): "channel.read",
    ("PATCH", "/api/channels/{channel}/mirrors/{mirror}"): "channel.manage",
    ("DELETE", "/api/channels/{channel}/mirrors/{mirror}"): "channel.manage",
    ("GET", "/api/channels/{channel}/mirrors/{mirror}/packages"): "channel.read",
    ("GET", "/api/channels/{channel}/mirrors/{mirror}/runs"): "channel.read",
    ("GET", "/api/channels/{channel}/mirrors/{mirror}/runs/{run}"): "channel.read",
    ("POST", "/api/channels/{channel}/mirrors/{mirror}/run"): "channel.manage",
    ("POST", "/api/channels/{channel}/mirrors/{mirror}/stop"): "channel.manage",
    ("POST", "/api/channels/{channel}/mirrors/{mirror}/restart"): "channel.manage",
    ("GET", "/api/channels/{channel}/mirrors/{mirror}/report"): "channel.read",
    ("GET", "/api/channels/{channel}/report"): "channel.read",
    ("GET", "/api/repo/{tail:.+}"): "channel.read",
    ("GET", "/t/{token}/api/repo/{tail:.+}"): "channel.read",
    ("GET", "/api/trust/{file}"): "public",
}


def spec_of(route) -> str:  # noqa: ANN001 - a Route
    base = route.path.replace("/subchannels/{subchannel}", "", 1) if "{subchannel}" in route.path else route.path
    return SPEC[(route.method, base)]


class World:
    """A private channel with a private subchannel, one user per role, and their tokens."""

    def __init__(self, server: Server, tmp_path: Path):
        self.server = server
        self.admin = Api(server)
        self.pkg = build_conda_package(tmp_path / "pk", "pkg", "1.0", subdir="linux-64")
        self.tokens: dict[str, str | None] = {"anonymous": None, "admin": server.admin_token}
        grants = {"reader": "channel.read:team", "writer": "channel.write:team", "manager": "channel.manage:team",
                  "other": "channel.manage:other", "expired": "channel.manage:team", "revoked": "channel.manage:team"}
        self.ensure_channels()
        self.admin.post("/api/channels", 201, json={"name": "other", "private": True})
        for role, perm in grants.items():
            self.admin.post("/api/users", 201, json={"name": role})
            self.admin.post(f"/api/users/{role}/grants", json={"permission": perm})
            body = {"user": role, "expires_in_days": 1e-9} if role == "expired" else {"user": role}
            created = self.admin.post("/api/tokens", 201, json=body).json()
            self.tokens[role] = created["token"]
            if role == "revoked":
                self.admin.request("DELETE", f"/api/tokens/{created['id']}")

    def ensure_channels(self) -> None:
        """(Re)create team and team/sub with a package; grants on a deleted channel go with it."""
        if self.admin.get("/api/channels/team", expect=(200, 404)).status_code == 404:
            self.admin.post("/api/channels", 201, json={"name": "team", "private": True})
            self.admin.upload("team", self.pkg)
            for role in ("reader", "writer", "manager", "expired", "revoked"):
                level = {"reader": "read", "writer": "write"}.get(role, "manage")
                if role in self.tokens:
                    self.admin.post(f"/api/users/{role}/grants", json={"permission": f"channel.{level}:team"})
        if self.admin.get("/api/channels/team/subchannels/sub", expect=(200, 404)).status_code == 404:
            self.admin.post("/api/channels/team/subchannels", 201, json={"name": "sub", "private": True})

    def call(self, role: str, method: str, path: str) -> requests.Response:
        headers = {}
        token = self.tokens[role]
        if "{token}" in path:
            path = path.replace("{token}", token or "none")
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs = {"json": BODY} if method in ("POST", "PATCH", "PUT") else {}
        return requests.request(method, self.server.url + path, headers=headers, timeout=60, **kwargs)


def outcome(r: requests.Response, channel: str | None) -> str:
    if r.status_code == 401:
        return "unauthorized"
    if r.status_code == 403:
        return "forbidden"
    if r.status_code == 404 and channel and r.json()["error"]["message"] == f"channel {channel!r} not found":
        return "hidden"
    assert r.status_code != 429
    return "ok"


def _fill(path: str) -> str:
    return re.sub(r"{(\w+)(:[^}]*)?}", lambda m: PARAMS.get(m.group(1), "{" + m.group(1) + "}"), path)


def test_every_route_declares_the_permission_of_the_spec(server: Server) -> None:
    assert routes.routes
    for r in routes.routes:
        assert r.permission in PERMISSIONS, r
        assert (r.method, r.path.replace("/subchannels/{subchannel}", "", 1)) in SPEC, f"no access rule for {r}"
        assert r.permission == spec_of(r), f"{r.method} {r.path} declares {r.permission}, the spec says {spec_of(r)}"
    declared = {(r.method, r.path) for r in routes.routes}
    assert not [k for k in SPEC if k not in declared], "the spec names routes that no longer exist"
    guarded = 0
    for resource_route in server.app.router.routes():
        info = resource_route.resource.get_info() if resource_route.resource else {}
        if info.get("prefix", "").startswith(("/swagger/ui/assets", "/static")):
            continue  # static files (Swagger UI, the web pages' assets), public by nature
        handler = resource_route.handler
        if hasattr(handler, "page"):
            continue  # a web page: behind the same Auth.authorize (proxy/web/pages.py), see test_web_access.py
        assert hasattr(handler, "route"), f"{resource_route.method} {info} is not behind the permission check"
        guarded += 1
    assert guarded >= len(routes.routes)


def test_every_route_against_every_kind_of_caller(server: Server, tmp_path: Path) -> None:
    server.app[AUTH].limiter.limit = 10**6  # expired and revoked tokens fail on purpose here, many times
    world = World(server, tmp_path)
    table = sorted(routes.routes, key=lambda r: (r.method == "DELETE" and "{channel}" in r.path
                                                 and r.path.endswith(("{channel}", "{subchannel}")), r.path))
    checked = 0
    failures = []
    for route in table:
        path = _fill(route.path)
        channel = None
        permission = spec_of(route)
        if permission.startswith("channel."):
            channel = "team/sub" if "{subchannel}" in route.path else "team"
        for role in ROLES:
            if role == "anonymous" and "{token}" in route.path:
                continue  # the token is the path itself
            world.ensure_channels()
            got = outcome(world.call(role, route.method, path), channel)
            want = EXPECT[permission][role]
            if got != want:
                failures.append(f"{route.method} {route.path} as {role}: {got}, expected {want}")
            checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 8 * 40


def _api(server: Server, token: str | None) -> Api:
    return Api(server, token=token)


def test_private_channels_are_invisible_to_strangers(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "secret", "private": True})
    api.post("/api/channels", 201, json={"name": "open"})
    pkg = build_conda_package(tmp_path, "hidden-tool", "1.0")
    api.upload("secret", pkg)
    api.upload("open", build_conda_package(tmp_path, "open-tool", "1.0"))
    anon = _api(server, None)
    assert [c["name"] for c in anon.get("/api/channels").json()["items"]] == ["open"]
    assert [i["name"] for i in anon.get("/api/search?q=tool").json()["items"]] == ["open-tool"]
    anon.get("/api/search?q=tool&channel=secret", expect=404)
    for path in ("/api/channels/secret", "/api/repo/secret/noarch/repodata.json",
                 f"/api/repo/secret/noarch/{pkg.name}", "/api/channels/secret/artifacts/conda/hidden-tool"):
        r = anon.get(path, expect=404)
        assert r.json()["error"]["message"] == "channel 'secret' not found"
    # the admin sees both
    assert {c["name"] for c in api.get("/api/channels").json()["items"]} == {"open", "secret"}


def test_token_presentations(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "team", "private": True})
    pkg = build_conda_package(tmp_path, "tool", "1.0")
    api.upload("team", pkg)
    api.post("/api/users", 201, json={"name": "ci", "kind": "service"})
    api.post("/api/users/ci/grants", json={"permission": "channel.read:team"})
    token = api.post("/api/tokens", 201, json={"user": "ci", "description": "pip"}).json()["token"]
    url = server.url
    # Bearer; /t/<token>/ in front of and inside the repository path; Basic with the token as password
    assert requests.get(f"{url}/api/repo/team/noarch/repodata.json",
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert requests.get(f"{url}/t/{token}/api/repo/team/noarch/{pkg.name}").content == pkg.read_bytes()
    assert requests.get(f"{url}/api/repo/t/{token}/team/noarch/repodata.json").status_code == 200
    assert requests.get(f"{url}/api/repo/team/noarch/repodata.json", auth=("anyone", token)).status_code == 200
    basic_user_only = base64.b64encode(f"{token}:".encode()).decode()
    assert requests.get(f"{url}/api/repo/team/noarch/repodata.json",
                        headers={"Authorization": f"Basic {basic_user_only}"}).status_code == 200
    # a token in the query is only for badge URLs
    assert requests.get(f"{url}/api/repo/team/noarch/repodata.json?token={token}").status_code == 404
    # listing shows no secrets; the database holds only hashes
    listed = api.get("/api/tokens?user=ci").json()["items"]
    assert listed[0]["description"] == "pip" and "token" not in listed[0] and "hash" not in listed[0]
    assert token.encode() not in (server.data_dir / "platform.db").read_bytes()
    assert listed[0]["state"] == "active"
    me = requests.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["name"] == "ci" and me["kind"] == "service"
    assert api.get("/api/tokens?user=ci").json()["items"][0]["last_used_at"] is not None


@pytest.mark.parametrize(("header", "fragment"), [
    ("Bearer", "must be"),
    ("Token abc", "must be"),
    ("Basic !!!notbase64", "not valid base64"),
    ("Bearer " + "x" * 5000, "too large"),
    ("Bearer two words", "malformed"),
])
def test_malformed_authorization_headers(server: Server, header: str, fragment: str) -> None:
    r = requests.get(f"{server.url}/api/channels", headers={"Authorization": header})
    assert r.status_code == 400 and fragment in r.json()["error"]["message"]


def test_bad_identity_input(api: Api) -> None:
    api.post("/api/users/nobody/grants", 404, json={"permission": "channels.create"})
    api.post("/api/users", 201, json={"name": "bob"})
    for perm in ("channel.fly:team", "root", "channel.read:", "channel.read:Bad/Name"):
        api.post("/api/users/bob/grants", 400, json={"permission": perm})
    api.post("/api/users/bob/grants", 404, json={"permission": "channel.read:nochannel"})
    api.post("/api/tokens", 400, json={"scopes": ["everything"]})
    api.post("/api/tokens", 400, json={"expires_in_days": -1})
    api.post("/api/users", 400, json={"name": "Bad Name"})
    api.post("/api/users", 409, json={"name": "bob"})


def test_scoped_token_is_limited_to_its_scopes(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    scoped = Api(server, token=api.post("/api/tokens", 201, json={"scopes": ["channel.read:team"]}).json()["token"])
    scoped.get("/api/channels/team")
    r = scoped.upload("team", build_conda_package(tmp_path, "x", "1.0"), expect=403)
    assert "write permission" in r["error"]["message"]
    scoped.post("/api/channels", 403, json={"name": "new"})


def test_failed_authentication_is_slowed_down(server: Server, api: Api) -> None:
    for _ in range(10):
        assert requests.get(f"{server.url}/api/channels", headers={"Authorization": "Bearer cpt_wrong"}).status_code == 401
    r = requests.get(f"{server.url}/api/channels", headers={"Authorization": "Bearer cpt_wrong"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # even a good token from that address waits; anonymous reading goes on
    assert requests.get(f"{server.url}/api/channels", headers={"Authorization": f"Bearer {server.admin_token}"}
                        ).status_code == 429
    assert requests.get(f"{server.url}/api/channels").status_code == 200
    # once the window has passed (the limiter's clock, advanced instead of slept), it is allowed again
    limiter = server.app[AUTH].limiter
    base = limiter.clock
    limiter.clock = lambda: base() + limiter.window + 1
    try:
        api.get("/api/channels")
    finally:
        limiter.clock = base


def test_audit_log_records_every_write(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    api.upload("team", build_conda_package(tmp_path, "x", "1.0"))
    api.post("/api/channels", 409, json={"name": "team"})
    anon = _api(server, None)
    anon.post("/api/channels", 401, json={"name": "intruder"})
    log = api.get("/api/audit").json()["items"]
    rows = [(e["actor"], e["action"], e["status"], e["outcome"]) for e in log]
    assert ("admin", "POST /api/channels", 201, "ok") in rows
    assert ("admin", "POST /api/channels/{channel}/files", 201, "ok") in rows
    assert ("admin", "POST /api/channels", 409, "failed") in rows
    assert ("anonymous", "POST /api/channels", 401, "failed") in rows
    assert all(e["at"].endswith("Z") for e in log)
    # reads are not audited, and only admins read the log
    assert not [e for e in log if e["action"].startswith("GET")]
    anon.get("/api/audit", 401)


def test_copy_and_move_need_write_on_the_target(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "src"})
    api.post("/api/channels", 201, json={"name": "dst"})
    api.post("/api/channels", 201, json={"name": "vault", "private": True})
    pkg = build_conda_package(tmp_path, "tool", "1.0")
    api.upload("src", pkg)
    api.post("/api/users", 201, json={"name": "dev"})
    api.post("/api/users/dev/grants", json={"permission": "channel.write:src"})
    dev = Api(server, token=api.post("/api/tokens", 201, json={"user": "dev"}).json()["token"])
    body = {"files": [f"noarch/{pkg.name}"], "target": "dst"}
    assert "write permission on channel 'dst'" in dev.post("/api/channels/src/files/copy", 403, json=body).text
    dev.post("/api/channels/src/files/move", 403, json=body)
    dev.post("/api/channels/src/files/copy", 404, json={**body, "target": "vault"})  # private: does not exist
    api.post("/api/users/dev/grants", json={"permission": "channel.write:dst"})
    dev.post("/api/channels/src/files/move", json=body)
    assert api.get("/api/channels/dst/files").json()["total"] == 1
