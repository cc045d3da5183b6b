"""The web UI's main journeys, driven in Debian's Chromium (headless) by Playwright: sign in,
create a channel and a subchannel, upload, freeze, a passive mirror with run now against a local
upstream watched to Completed, unfreeze, every tab of package details, a badge snippet copied,
SBOMs downloaded, files moved to a subchannel and deleted after a confirmation, a policy previewed,
and a reader who sees no write actions. Screenshots of each page are kept; every page visited is
checked for unlabelled controls, div-buttons and external assets.

The tests of this module share one server, one upstream and one browser, and run in file order
(each journey starts where the one before left the channel)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import build_conda_package
from conftest import Api, Server
from upstream import UpstreamChannel
from web.browser import CHROMIUM, check_accessible, screenshot_dir, shoot, sign_in

from proxy.store.signing import TrustStore

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

CHANNEL = "web"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("web") / "data").start()
    TrustStore(s.data_dir / "trust").init()  # records are signed: the Files tab shows the "signed" tag
    yield s
    s.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamChannel]:
    up = UpstreamChannel(tmp_path_factory.mktemp("up"))
    up.add("upa", "1.0")
    up.add("upa", "2.0")
    up.add("upb", "1.0", subdir="linux-64", depends=["upa >=2"])
    up.add("upgpl", "1.0", license="GPL-3.0-only")  # filtered by the channel's policy (no-gpl)
    up.index()
    up.start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("pkgs")
    return [build_conda_package(out, "alpha", "1.0", depends=["beta >=1"], summary="Alpha does things",
                                description="# Alpha\n\nAlpha's **readme** text.", license="MIT"),
            build_conda_package(out, "beta", "1.2", license="BSD-3-Clause")]


@pytest.fixture(scope="module")
def browser(upstream: UpstreamChannel) -> Iterator:
    """(The upstream is indexed first: py-rattler's indexer runs its own event loop, which it cannot
    while Playwright's sync API holds one in this thread.)"""
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def admin(browser, server: Server) -> Iterator:  # noqa: ANN001
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.set_default_timeout(15000)
    sign_in(page, server.admin_token)
    yield page
    context.close()


def visit(page, shots: Path, path: str, name: str) -> None:  # noqa: ANN001
    response = page.goto(path)
    assert response is not None and response.ok, f"{path}: {response and response.status}"
    check_accessible(page)
    shoot(page, shots, name)


def test_sign_in_create_channel_and_subchannel_upload(admin, server: Server, shots: Path,  # noqa: ANN001
                                                      packages: list[Path]) -> None:
    page = admin
    assert "Signed in as" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == "cp_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    visit(page, shots, "/channels", "channels")
    page.get_by_label("Name").fill(CHANNEL)
    page.get_by_label("Description").fill("Team packages")
    page.get_by_role("button", name="Create channel").click()
    page.wait_for_url(f"**/channels/{CHANNEL}")
    assert page.get_by_role("heading", level=1).inner_text() == CHANNEL
    # a subchannel from the main form (CHANNEL/SUB)
    page.goto("/channels")
    page.get_by_label("Name").fill(f"{CHANNEL}/sub")
    page.get_by_role("button", name="Create channel").click()
    page.wait_for_url(f"**/channels/{CHANNEL}/subchannels/sub")
    assert Api(server).get(f"/api/channels/{CHANNEL}").json()["subchannels"] == ["sub"]
    # upload both packages through the form
    page.goto(f"/channels/{CHANNEL}")
    page.locator("#upload-panel summary").click()
    page.get_by_label("Package files").set_input_files([str(p) for p in packages])
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**?done=uploaded")
    names = page.locator("table.files tbody td:nth-child(2)").all_inner_texts()
    assert names == ["alpha", "beta"]
    check_accessible(page)
    shoot(page, shots, "packages-tab")
    # the column filters and the search run on the server
    page.get_by_label("Filter by license").fill("BSD-3-Clause")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**license=BSD-3-Clause**")
    assert page.locator("table.files tbody td:nth-child(2)").all_inner_texts() == ["beta"]
    page.goto(f"/channels/{CHANNEL}")
    page.get_by_label("Search packages").fill("does things")
    page.get_by_label("Search packages").press("Enter")
    page.wait_for_url("**search=does+things**")
    assert page.locator("table.files tbody td:nth-child(2)").all_inner_texts() == ["alpha"]


def test_freeze_mirror_run_now_to_completed_and_unfreeze(admin, server: Server, shots: Path,  # noqa: ANN001
                                                         upstream: UpstreamChannel) -> None:
    page = admin
    api = Api(server)
    page.goto(f"/channels/{CHANNEL}")
    published = api.get(f"/api/channels/{CHANNEL}").json()["published_generation"]
    # freeze from the channel's Actions dropdown, by keyboard
    page.locator("#channel-actions summary").focus()
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Freeze").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#frozen-tag")
    assert api.get(f"/api/channels/{CHANNEL}").json()["frozen"] is True
    shoot(page, shots, "channel-frozen")
    # Create Mirror from the same dropdown: the numbered form
    page.locator("#channel-actions summary").click()
    page.get_by_role("link", name="Create Mirror").click()
    page.wait_for_url("**/mirrors/new")
    check_accessible(page)
    assert page.locator("#m-cron").input_value() == "0 0 1 * *"
    assert page.locator("#m-cron-reading").inner_text() == "on the 1st day of every month at 00:00 UTC"
    page.get_by_label("Frequency (cron, UTC)").fill("*/15 * * * *")
    expect(page.locator("#m-cron-reading")).to_have_text("every 15 minutes")  # read by the server as typed
    assert page.get_by_label("Mirror type").locator("option").all_inner_texts() == ["Conda", "Std Python", "Std R"]
    shoot(page, shots, "mirror-form")
    # the policy conflict rule, as a clear message: the channel's own policy cannot be "chosen"
    api.post("/api/policies", json={"name": "no-gpl", "rules": [{"kind": "license", "deny": ["GPL-3.0-only"]}]},
             expect=201)
    api.post("/api/policies/no-gpl/apply", json={"channel": CHANNEL})
    page.reload()
    page.get_by_label("Name", exact=True).fill("up")
    page.get_by_label("External source URL").fill(upstream.url)
    page.get_by_label("Passive: metadata now, each package fetched on its first request").check()
    page.get_by_label("A chosen policy").check()
    page.get_by_label("Chosen policy", exact=True).select_option("no-gpl")
    page.get_by_label("Run now").check()
    page.get_by_role("button", name="Save & Run").click()
    assert "already applied to channel" in page.locator("#form-error").inner_text()
    assert page.get_by_label("External source URL").input_value() == upstream.url  # the form keeps its values
    # follow the channel's policy instead, and run now; the upstream holds its indexes until released,
    # so the page opens on a running run and must follow it live (it polls the JSON status endpoint)
    held = upstream.fault("*repodata*", "hold")
    try:
        page.get_by_label("The channel's policy (no-gpl)").check()
        page.get_by_role("button", name="Save & Run").click()
        page.wait_for_url(f"**/channels/{CHANNEL}/mirrors/up")
        expect(page.locator("#mirror-status")).to_have_text(re.compile("^(queued|running)$"))
        expect(page.locator("table.mirrors")).to_have_attribute("data-polling", "yes")
        shoot(page, shots, "mirror-running")
    finally:
        held.release()
    expect(page.locator("#mirror-status")).to_have_text("completed", timeout=60000)
    upstream.clear_faults()
    assert page.locator("table.mirrors tr[data-key] [data-field=finished_at]").inner_text().endswith("Z")
    page.reload()
    check_accessible(page)
    assert page.locator("#counts").inner_text() == "4 seen upstream · 3 published · 1 filtered"
    assert set(page.locator("#mirror-packages tbody .tag").all_inner_texts()) == {"passive"}
    reasons = page.locator("#filtered-reasons tbody tr").all_inner_texts()
    assert len(reasons) == 1 and reasons[0].startswith("license") and reasons[0].endswith("1")
    shoot(page, shots, "mirror-details")
    page.get_by_role("link", name="Filtered").click()
    filtered = page.locator("#mirror-packages tbody tr").all_inner_texts()
    assert len(filtered) == 1 and "upgpl-1.0-0.conda" in filtered[0] and "GPL-3.0-only" in filtered[0]
    # the frozen channel still publishes what it published before
    assert api.get(f"/api/channels/{CHANNEL}").json()["published_generation"] == published
    # the channel's Mirrors tab and the global Mirrors page with their Actions dropdowns
    visit(page, shots, f"/channels/{CHANNEL}/mirrors", "channel-mirrors-tab")
    row = page.locator("tr[data-key='web/up']")
    assert row.locator("[data-field=status]").inner_text() == "completed"
    row.locator("details.menu summary").click()
    items = row.locator(".menu-items").locator("a, button").all_inner_texts()
    assert items == ["View Details", "Edit Mirror", "Stop Running Mirror", "Restart Mirror", "Delete Mirror",
                     "Download Dependency Report"]
    with page.expect_download() as download:
        row.get_by_role("link", name="Download Dependency Report").click()
    assert download.value.suggested_filename == "web-up-dependencies.csv"
    visit(page, shots, "/mirrors", "global-mirrors")
    status = page.locator("tr[data-key='web/up'] [data-field=status]")
    assert status.inner_text() == "completed"
    # Restart Mirror and Stop Running Mirror from the global page's dropdown, followed live
    held = upstream.fault("*repodata*", "hold")
    try:
        page.locator("tr[data-key='web/up'] details.menu summary").click()
        page.get_by_role("button", name="Restart Mirror").click()
        page.wait_for_url("**/mirrors")
        expect(status).to_have_text(re.compile("^(queued|running)$"))
        page.locator("tr[data-key='web/up'] details.menu summary").click()
        page.get_by_role("button", name="Stop Running Mirror").click()
        page.wait_for_url("**/mirrors")
    finally:
        held.release()
    expect(status).to_have_text("stopped", timeout=30000)
    upstream.clear_faults()
    # Edit Mirror: the mode is locked; the policy the mirror applies is one click away
    page.goto(f"/channels/{CHANNEL}/mirrors/up/edit")
    assert page.get_by_label("Passive: metadata now, each package fetched on its first request").is_disabled()
    assert page.locator("#m-applied-policy").get_attribute("href") == "/policies/no-gpl"
    check_accessible(page)
    shoot(page, shots, "mirror-edit")
    # unfreeze: the newest generation (uploads and the mirror's records) is published
    page.goto(f"/channels/{CHANNEL}")
    page.locator("#channel-actions summary").click()
    page.get_by_role("button", name="Unfreeze").click()
    page.wait_for_selector("#frozen-tag", state="detached")
    shown = api.get(f"/api/channels/{CHANNEL}").json()
    assert shown["frozen"] is False and shown["published_generation"] > published
    assert "upb" in page.locator("table.files").inner_text()


def test_channel_settings(admin, server: Server, shots: Path) -> None:  # noqa: ANN001
    page = admin
    page.goto(f"/channels/{CHANNEL}/subchannels/sub")
    page.get_by_role("link", name="Settings").click()
    check_accessible(page)
    page.get_by_label("Description").fill("Staging area")
    page.get_by_label("Private").check()
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url("**/settings?saved=1")
    shown = Api(server).get(f"/api/channels/{CHANNEL}/subchannels/sub").json()
    assert shown["description"] == "Staging area" and shown["private"] is True
    shoot(page, shots, "channel-settings")
    # the applied policy is shown in the header of every tab, and can be changed here
    page.goto(f"/channels/{CHANNEL}/settings")
    assert page.locator("#applied-policy").inner_text() == "no-gpl"
    page.get_by_label("Policy to apply").select_option("")
    page.get_by_role("button", name="Apply policy").click()
    assert page.locator("#applied-policy").inner_text() == "none"
    page.get_by_label("Policy to apply").select_option("no-gpl")
    page.get_by_role("button", name="Apply policy").click()
    assert page.locator("#applied-policy").inner_text() == "no-gpl"


def test_keyboard_reaches_the_controls(admin) -> None:  # noqa: ANN001
    """Tab from the top of the Packages tab: every kind of control comes into focus in turn."""
    page = admin
    page.goto(f"/channels/{CHANNEL}")
    reached = []
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("""() => { const e = document.activeElement;
            return (e.getAttribute('aria-label') || (e.labels && e.labels[0] && e.labels[0].textContent)
                    || e.textContent || '').trim().split('\\n')[0]; }"""))
    for control in ("Skip to content", "Sign out", "Actions", "Mirrors", "Upload packages", "Search packages",
                    "Filter by name (starts with)", "Filter by upload time", "Select all files on this page",
                    "alpha"):
        assert control in reached, (control, reached)


def test_package_details_every_tab(admin, server: Server, shots: Path) -> None:  # noqa: ANN001
    page = admin
    base = f"/channels/{CHANNEL}/packages/conda/alpha"
    visit(page, shots, base, "package-files")
    shown = Api(server).get(f"/api/channels/{CHANNEL}/artifacts/conda/alpha").json()
    facts = dict(zip(page.locator("dl.facts dt").all_inner_texts(), page.locator("dl.facts dd").all_inner_texts()))
    assert facts["License"] == shown["license"] and facts["Platforms"] == ", ".join(shown["subdirs"])
    assert facts["Downloads"] == str(shown["downloads"]) and facts["Last upload"] == shown["last_upload"]
    row = page.locator("table.files tbody tr").first
    assert row.locator(".tag.signed").inner_text() == "signed"
    row.locator("details.record summary").click()
    record = json.loads(row.locator("details.record pre").first.inner_text())
    assert record["name"] == "alpha" and record["depends"] == ["beta >=1"]
    signature = json.loads(row.locator("pre.signature").inner_text())
    (key,) = signature
    assert re.fullmatch(r"[0-9a-f]{64}", key) and len(signature[key]["signature"]) == 128
    for fmt, check in (("CycloneDX", lambda d: d["bomFormat"] == "CycloneDX"),
                       ("SPDX", lambda d: d["spdxVersion"] == "SPDX-2.3")):
        with page.expect_download() as download:
            row.get_by_role("link", name=re.compile(f"^{fmt}")).click()
        doc = json.loads(Path(download.value.path()).read_bytes())
        assert check(doc), doc
    with page.expect_download() as download:
        row.get_by_role("link", name=re.compile("^Download")).click()
    assert download.value.suggested_filename == "alpha-1.0-0.conda"

    visit(page, shots, base + "?tab=dependencies", "package-dependencies")
    assert "beta >=1" in page.locator("section").inner_text()
    assert page.locator("section a", has_text="1.2").count() == 1
    visit(page, shots, f"/channels/{CHANNEL}/packages/conda/beta?tab=dependents", "package-dependents")
    assert page.locator("section tbody a").all_inner_texts() == ["alpha"]
    visit(page, shots, base + "?tab=cves", "package-cves")
    assert "No known advisory concerns this package" in page.locator("section").inner_text()
    visit(page, shots, base + "?tab=badges", "package-badges")
    badge = page.locator("#badge-version")
    badge.locator("summary").click()
    assert page.evaluate("() => document.querySelector('#badge-version img').naturalWidth") > 0  # drawn
    expected = page.locator("#snippet-version-markdown").input_value()
    assert expected.startswith("[![alpha version](http") and "/api/channels/web/artifacts/conda/alpha" in expected
    badge.get_by_role("button", name="Copy markdown snippet of the version badge").click()
    expect(page.locator("[data-copy=snippet-version-markdown]")).to_have_attribute("data-copied", expected)
    assert page.evaluate("() => navigator.clipboard.readText()") == expected
    shoot(page, shots, "package-badges-open")
    visit(page, shots, base + "?tab=readme", "package-readme")
    frame = page.frame_locator("iframe.readme")
    assert "readme text" in frame.locator("body").inner_text()
    assert frame.locator("strong").inner_text() == "readme"


def test_move_copy_and_delete_selected_files(admin, server: Server, shots: Path) -> None:  # noqa: ANN001
    page = admin
    page.goto(f"/channels/{CHANNEL}?name=beta")
    page.get_by_label("Select noarch/beta-1.2-0.conda").check()
    page.get_by_label("Target channel").select_option(f"{CHANNEL}/sub")
    page.get_by_role("button", name="Move").click()
    page.wait_for_url("**done=moved**")
    assert "moved 1 to web/sub" in page.locator("#done").inner_text()
    assert "beta" not in page.locator("table.files tbody").inner_text()
    page.goto(f"/channels/{CHANNEL}/subchannels/sub")
    assert page.locator("table.files tbody td:nth-child(2)").all_inner_texts() == ["beta"]
    shoot(page, shots, "subchannel-packages")
    # delete asks first
    page.get_by_label("Select all files on this page").check()
    page.get_by_role("button", name="Delete…").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Delete 1 file(s)?"
    check_accessible(page)
    shoot(page, shots, "confirm-delete")
    assert Api(server).get(f"/api/channels/{CHANNEL}/subchannels/sub/files").json()["total"] == 1  # not yet
    page.get_by_role("button", name="Delete 1 file(s)").click()
    page.wait_for_url("**done=deleted**")
    assert Api(server).get(f"/api/channels/{CHANNEL}/subchannels/sub/files").json()["total"] == 0


def test_policy_create_and_preview(admin, server: Server, shots: Path) -> None:  # noqa: ANN001
    page = admin
    visit(page, shots, "/policies", "policies")
    page.get_by_role("link", name="New policy").click()
    page.get_by_label("Name").fill("no-mit")
    page.get_by_label("Rules (JSON list)").fill('[{"kind": "license", "deny": ["MIT"]}]')
    page.get_by_label("Channel to preview on").select_option(CHANNEL)
    page.get_by_role("button", name="Preview").click()
    # every record is MIT but beta (moved away): alpha and the mirror's three would be filtered
    assert page.locator("#preview-excluded").inner_text() == "4"
    assert "alpha-1.0-0.conda" in page.locator("#preview").inner_text()
    check_accessible(page)
    shoot(page, shots, "policy-preview")
    page.get_by_role("button", name="Create policy").click()
    page.wait_for_url("**/policies/no-mit")
    assert [p["name"] for p in Api(server).get("/api/policies").json()["items"]] == ["no-gpl", "no-mit"]
    page.get_by_label("Rules (JSON list)").fill("not json")
    page.get_by_role("button", name="Save (new version)").click()
    assert "not valid JSON" in page.locator("#form-error").inner_text()


def test_reader_sees_no_write_actions(browser, server: Server, shots: Path) -> None:  # noqa: ANN001
    api = Api(server)
    api.post("/api/users", json={"name": "rita"}, expect=201)
    api.post("/api/users/rita/grants", json={"permission": f"channel.read:{CHANNEL}"})
    token = api.post("/api/tokens", json={"user": "rita"}, expect=201).json()["token"]
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    try:
        sign_in(page, token)
        nav = page.locator("nav.side").inner_text()
        assert "Policies" in nav and "Mirrors" not in nav
        visit(page, shots, f"/channels/{CHANNEL}", "reader-packages")
        body = page.locator("main").inner_text()
        for write in ("Actions", "Upload packages", "Settings", "Move", "Delete", "Create Mirror"):
            assert write not in body, write
        assert page.locator("#upload-panel, #channel-actions, fieldset.actions, input[type=checkbox]").count() == 0
        visit(page, shots, f"/channels/{CHANNEL}/mirrors", "reader-mirrors")
        page.locator("tr[data-key='web/up'] details.menu summary").click()
        items = page.locator("tr[data-key='web/up'] .menu-items").locator("a, button").all_inner_texts()
        assert items == ["View Details", "Download Dependency Report"]
        assert page.locator("text=Create Mirror").count() == 0
        visit(page, shots, f"/channels/{CHANNEL}/mirrors/up", "reader-mirror-details")
        assert page.get_by_role("button", name="Run now").count() == 0
        page.goto("/policies/no-mit")
        assert page.get_by_label("Rules (JSON list)").get_attribute("readonly") is not None
        assert page.get_by_role("button", name=re.compile("Save")).count() == 0
        response = page.goto(f"/channels/{CHANNEL}/settings")
        assert response.status == 403
        assert "manage permission" in page.locator(".error").inner_text()
        response = page.goto("/mirrors")
        assert response.status == 403
        # signing out ends the session
        page.goto("/channels")
        page.get_by_role("button", name="Sign out").click()
        assert "Sign in" in page.locator("header").inner_text()
        assert not [c for c in context.cookies() if c["name"] == "cp_session"]
    finally:
        context.close()
