"""Playwright helpers for the web UI tests: Debian's Chromium (never a downloaded browser),
a signed-in page, screenshots kept as test artifacts, and the label check."""

from __future__ import annotations

import os
import re
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def screenshot_dir(default: Path) -> Path:
    """``$CONDA_PLATFORM_SCREENSHOTS`` (kept by .ci/run), else the test's own temporary directory."""
    path = Path(os.environ.get("CONDA_PLATFORM_SCREENSHOTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shoot(page, directory: Path, name: str) -> Path:  # noqa: ANN001 - a Playwright Page
    target = directory / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


def sign_in(page, token: str) -> None:  # noqa: ANN001
    page.goto("/signin")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/channels")


#: every control a user can reach must have a name a screen reader can say
UNLABELLED = """() => {
  const named = (el) => {
    if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.getAttribute('title')) return true;
    if (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) return true;
    if (el.closest('label')) return true;
    if (['BUTTON', 'A', 'SUMMARY'].includes(el.tagName)) return el.textContent.trim().length > 0
        || !!el.querySelector('img[alt]:not([alt=""])');
    if (el.tagName === 'IFRAME') return !!el.getAttribute('title');
    return false;
  };
  const controls = document.querySelectorAll(
    'a[href], button, summary, input:not([type=hidden]), select, textarea, iframe');
  return [...controls].filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 120));
}"""

#: controls made of divs and spans (unreachable by keyboard) are not allowed
DIV_BUTTONS = """() => [...document.querySelectorAll('div[onclick], span[onclick], [role=button]:not(button)')]
  .map((el) => el.outerHTML.slice(0, 120))"""


def check_accessible(page) -> None:  # noqa: ANN001
    assert page.evaluate(UNLABELLED) == [], f"unlabelled controls on {page.url}"
    assert page.evaluate(DIV_BUTTONS) == [], f"div/span buttons on {page.url}"
    # nothing is loaded from another host: the pages work air-gapped
    external = page.evaluate("""() => [...document.querySelectorAll('script[src], link[href], img[src]')]
        .map((el) => el.src || el.href).filter((u) => !u.startsWith(location.origin))""")
    assert external == [], f"external assets on {page.url}: {external}"
