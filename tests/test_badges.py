"""Badges: well-formed SVG whose boxes fit their text, escaped input, embed snippets; and, where
Debian's chromium is installed (.ci/run installs it), the picture a real browser draws."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conda_platform_plugin import badges

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_badge_is_valid_svg_and_its_boxes_fit_the_text() -> None:
    svg = badges.render("version", "2.1.0", "blue")
    root = _parse(svg)
    width = int(root.get("width"))
    rects = root.findall(".//svg:g/svg:rect", NS)
    label_w, message_w = int(rects[0].get("width")), int(rects[1].get("width"))
    assert label_w + message_w == width
    assert label_w >= badges.text_width("version") + 2 * badges.PAD - 1
    assert rects[1].get("fill") == badges.COLORS["blue"]
    texts = [t.text for t in root.findall(".//svg:text", NS)]
    assert texts == ["version", "version", "2.1.0", "2.1.0"]
    assert root.find("svg:title", NS).text == "version: 2.1.0"
    # a longer message makes a wider badge
    assert int(_parse(badges.render("version", "2.1.0.post123")).get("width")) > width


def test_untrusted_text_is_escaped_and_clipped() -> None:
    svg = badges.render("license", '<script>alert("x")</script>&' + "x" * 200)
    root = _parse(svg)  # still well-formed
    assert "<script>" not in svg
    assert all(len(t.text) <= badges.MAX_TEXT for t in root.findall(".//svg:text", NS))


def test_package_badges_colours() -> None:
    assert badges.COLORS["red"] in badges.cves_badge(3, "critical")
    assert "3 critical" in badges.cves_badge(3, "CRITICAL")
    assert badges.COLORS["brightgreen"] in badges.cves_badge(0, None)
    assert "1.2k" in badges.downloads_badge(1234) and "15k" in badges.downloads_badge(15_000)
    assert "linux-64 | noarch" in badges.platforms_badge(["noarch", "linux-64"])
    day = 86400.0
    assert "2024-01-01" in badges.updated_badge(1704067200.0, 1704067200.0 + 3 * day)
    assert badges.COLORS["lightgrey"] in badges.updated_badge(1704067200.0, 1704067200.0 + 400 * day)
    assert "unknown" in badges.license_badge(None)


def test_embed_snippets() -> None:
    s = badges.embed_snippets("https://h/api/badge.svg?token=t", "https://h/pkg", "version")
    assert s["markdown"] == "[![version](https://h/api/badge.svg?token=t)](https://h/pkg)"
    assert s["html"] == '<a href="https://h/pkg"><img src="https://h/api/badge.svg?token=t" alt="version"></a>'
    assert s["rst"].startswith(".. image:: https://h/api/badge.svg?token=t")
    assert s["asciidoc"] == 'image:https://h/api/badge.svg?token=t[version,link="https://h/pkg"]'


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_headless_chromium_draws_the_badge(tmp_path: Path) -> None:
    assert_drawn(badges.render("CVEs", "2 high", "orange"), (0xfe, 0x7d, 0x37), tmp_path)


def assert_drawn(svg: str, message_rgb: tuple[int, int, int], tmp_path: Path) -> None:
    """Headless chromium draws ``svg``: a grey label box, the message box in ``message_rgb``,
    nothing past the badge, and white text inside both boxes."""
    page = tmp_path / "badge.html"
    page.write_text(f'<html><body style="margin:0;background:#fff">{svg}</body></html>')
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=200,40", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = _png_pixels(shot.read_bytes())
    root = _parse(svg)
    width = int(root.get("width"))
    label_w = int(root.findall(".//svg:g/svg:rect", NS)[0].get("width"))
    row = pixels[3]  # above the text: pure box colours
    grey, message = row[label_w // 2], row[label_w + (width - label_w) // 2]
    assert _near(grey, (0x55, 0x55, 0x55)), grey
    assert _near(message, message_rgb), message
    assert _near(row[width + 5], (255, 255, 255)), "nothing drawn past the badge"
    # the white text is drawn inside the boxes: bright pixels on the text line of each box
    text_row = pixels[12]
    assert any(min(p) > 200 for p in text_row[2:label_w - 2])
    assert any(min(p) > 200 for p in text_row[label_w + 2:width - 2])


def _near(p: tuple, q: tuple, tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(p[:3], q))


def _png_pixels(data: bytes) -> list[list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA PNG (what chromium writes) with zlib only."""
    import struct
    import zlib

    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert depth == 8 and color in (2, 6)
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:(x + 1) * bpp]) for x in range(width)])
        prev = line
    return rows
