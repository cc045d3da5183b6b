"""Badges served: SVG per kind, caching (ETag/304), private channels by ?token=, embed snippets,
and a served badge drawn by headless Chromium."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from builders import SHARED_DATA, build_conda_package
from conftest import Api, Server, channel_api
from test_api import create
from test_badges import CHROMIUM, assert_drawn

from conda_platform_plugin.cves import read_path


def _label(svg: bytes) -> str:
    return ET.fromstring(svg).get("aria-label")


@pytest.mark.parametrize("channel", ["team", "team/sub"])
def test_badges_of_an_artifact(api: Api, tmp_path: Path, channel: str) -> None:
    create(api, "team")
    if "/" in channel:
        create(api, channel)
    api.upload(channel, build_conda_package(tmp_path, "tool", "1.10", "0", subdir="linux-64", license="MIT"),
               build_conda_package(tmp_path, "tool", "1.9", "0", license="MIT"))
    base = f"{api.server.url}{channel_api(channel)}/artifacts/conda/tool/badges"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    want = {"version": "version: 1.10", "license": "license: MIT", "platforms": "platforms: linux-64 | noarch",
            "updated": f"updated: {today}", "downloads": "downloads: 0", "cves": "CVEs: none"}
    for kind, label in want.items():
        r = requests.get(f"{base}/{kind}.svg", timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("image/svg+xml")
        assert r.headers["Cache-Control"] == "public, max-age=300"
        etag = r.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        assert _label(r.content) == label
        again = requests.get(f"{base}/{kind}.svg", headers={"If-None-Match": etag}, timeout=30)
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert requests.get(f"{base}/nope.svg", timeout=30).status_code == 404
    assert requests.get(f"{base}/version.png", timeout=30).status_code == 404
    # a new upload changes the badge and its ETag
    old = requests.get(f"{base}/version.svg", timeout=30).headers["ETag"]
    api.upload(channel, build_conda_package(tmp_path, "tool", "2.0", "0"))
    r = requests.get(f"{base}/version.svg", headers={"If-None-Match": old}, timeout=30)
    assert r.status_code == 200 and _label(r.content) == "version: 2.0" and r.headers["ETag"] != old
    assert requests.get(f"{api.server.url}{channel_api(channel)}/artifacts/conda/nope/badges/version.svg",
                        timeout=30).status_code == 404


def test_cve_badge_counts_the_newest_versions_advisories(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    api.post("/api/cves", json={"records": [d for _, d in read_path(SHARED_DATA / "osv" / "pysec" / "pip")]})
    api.upload("team", build_conda_package(tmp_path, "pip", "23.2.1", "pyhd8ed1ab_0", noarch="python",
                                                     depends=["python >=3.7"]))
    url = "/api/channels/team/artifacts/conda/pip/badges/cves.svg"
    r = api.get(url)
    assert _label(r.content) == "CVEs: 1 low"  # PYSEC-2023-228, CVSS 3.3, fixed in 23.3
    assert 'fill="#a4a61d"' in r.text  # yellowgreen: low
    api.upload("team", build_conda_package(tmp_path, "pip", "24.0", "pyhd8ed1ab_0", noarch="python",
                                                     depends=["python >=3.7"]))
    assert _label(api.get(url).content) == "CVEs: none"


def test_private_channel_badges_need_a_token_that_never_leaks(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "secret", "private": True})
    api.post("/api/channels", 201, json={"name": "open"})
    for ch in ("secret", "open"):
        api.upload(ch, build_conda_package(tmp_path / ch, "tool", "1.0"))
    api.post("/api/users", 201, json={"name": "dev"})
    api.post("/api/users/dev/grants", json={"permission": "channel.read:secret"})
    token = api.post("/api/tokens", 201, json={"user": "dev", "description": "badges"}).json()["token"]
    secret = f"{server.url}/api/channels/secret/artifacts/conda/tool/badges"

    assert requests.get(f"{secret}/version.svg", timeout=30).status_code == 404  # a stranger sees nothing
    r = requests.get(f"{secret}/version.svg", params={"token": token}, timeout=30)
    assert r.status_code == 200 and _label(r.content) == "version: 1.0"
    assert r.headers["Cache-Control"] == "private, max-age=300"  # no shared cache keeps it
    assert token not in r.text
    assert requests.get(f"{secret}/version.svg", params={"token": token + "x"}, timeout=30).status_code == 401

    # the caller's own token, presented in the query, goes into the snippets; nothing else does
    own = requests.get(secret, params={"token": token}, timeout=30)
    assert own.status_code == 200 and own.headers["Cache-Control"] == "private, no-store"
    body = own.json()
    assert body["private"] and body["token_included"]
    assert [b["kind"] for b in body["badges"]] == ["version", "license", "platforms", "updated", "downloads", "cves"]
    version = body["badges"][0]
    assert version["image_url"] == f"{secret}/version.svg?token={token}"
    assert version["link_url"] == secret.removesuffix("/badges") and token not in version["link_url"]
    assert version["snippets"]["markdown"] == f"[![tool version]({secret}/version.svg?token={token})]({version['link_url']})"
    assert requests.get(version["image_url"], timeout=30).status_code == 200  # the snippet's URL works
    by_header = Api(server, token=token).get("/api/channels/secret/artifacts/conda/tool/badges").json()
    assert not by_header["token_included"] and token not in str(by_header)
    # a public channel's snippets never carry a token, even when one is offered
    public = requests.get(f"{server.url}/api/channels/open/artifacts/conda/tool/badges",
                          params={"token": token}, timeout=30).json()
    assert not public["token_included"] and token not in str(public)
    assert set(public["badges"][0]["snippets"]) == {"markdown", "html", "rst", "asciidoc"}
    assert public["badges"][0]["image_url"] == f"{server.url}/api/channels/open/artifacts/conda/tool/badges/version.svg"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_headless_chromium_draws_a_served_badge(api: Api, tmp_path: Path) -> None:
    create(api, "team")
    api.upload("team", build_conda_package(tmp_path, "tool", "3.1.4", "0"))
    svg = api.get("/api/channels/team/artifacts/conda/tool/badges/version.svg").text
    assert_drawn(svg, (0x00, 0x7e, 0xc6), tmp_path)  # blue: a version


def test_badges_are_reused_within_a_generation_for_a_while(server: Server, api: Api, tmp_path: Path) -> None:
    from proxy.api.insights import BADGE_TTL, badge_cache

    create(api, "team")
    pkg = build_conda_package(tmp_path, "tool", "1.0")
    api.upload("team", pkg)
    now = [1000.0]
    badge_cache(server.platform).clock = lambda: now[0]
    url = "/api/channels/team/artifacts/conda/tool/badges/downloads.svg"
    assert _label(api.get(url).content) == "downloads: 0"
    assert requests.get(f"{server.url}/api/repo/team/noarch/{pkg.name}", timeout=30).status_code == 200
    assert _label(api.get(url).content) == "downloads: 0"  # the rendered badge, reused
    now[0] += BADGE_TTL + 1
    assert _label(api.get(url).content) == "downloads: 1"
    api.upload("team", build_conda_package(tmp_path, "tool", "2.0"))  # a publish: a new generation
    assert _label(api.get(url.replace("downloads", "version")).content) == "version: 2.0"
