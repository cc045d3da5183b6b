"""Shields-style SVG badges (label | message) and the snippets that embed them.

Pure: the caller passes the facts (version, license, subdirs, dates, counts, CVE severity) and
gets SVG text. Text widths come from DejaVu Sans metrics at 11 px (the font browsers fall back to
on Linux; Verdana is close), and each text carries ``textLength`` so it never overflows its box
whatever font the viewer has.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

#: DejaVu Sans advance widths at 11 px for printable ASCII (measured from the font)
_WIDTHS = {
    32: 3.5, 33: 4.4, 34: 5.1, 35: 9.2, 36: 7.0, 37: 10.5, 38: 8.6, 39: 3.0, 40: 4.3, 41: 4.3, 42: 5.5,
    43: 9.2, 44: 3.5, 45: 4.0, 46: 3.5, 47: 3.7, 48: 7.0, 49: 7.0, 50: 7.0, 51: 7.0, 52: 7.0, 53: 7.0,
    54: 7.0, 55: 7.0, 56: 7.0, 57: 7.0, 58: 3.7, 59: 3.7, 60: 9.2, 61: 9.2, 62: 9.2, 63: 5.8, 64: 11.0,
    65: 7.5, 66: 7.5, 67: 7.7, 68: 8.5, 69: 7.0, 70: 6.3, 71: 8.5, 72: 8.3, 73: 3.2, 74: 3.2, 75: 7.2,
    76: 6.1, 77: 9.5, 78: 8.2, 79: 8.7, 80: 6.6, 81: 8.7, 82: 7.6, 83: 7.0, 84: 6.7, 85: 8.1, 86: 7.5,
    87: 10.9, 88: 7.5, 89: 6.7, 90: 7.5, 91: 4.3, 92: 3.7, 93: 4.3, 94: 9.2, 95: 5.5, 96: 5.5, 97: 6.7,
    98: 7.0, 99: 6.0, 100: 7.0, 101: 6.8, 102: 3.9, 103: 7.0, 104: 7.0, 105: 3.1, 106: 3.1, 107: 6.4,
    108: 3.1, 109: 10.7, 110: 7.0, 111: 6.7, 112: 7.0, 113: 7.0, 114: 4.5, 115: 5.7, 116: 4.3, 117: 7.0,
    118: 6.5, 119: 9.0, 120: 6.5, 121: 6.5, 122: 5.8, 123: 7.0, 124: 3.7, 125: 7.0, 126: 9.2,
}
_WIDE = 9.0  # anything outside ASCII: a generous estimate
PAD = 6
HEIGHT = 20
COLORS = {
    "brightgreen": "#4c1", "green": "#97ca00", "yellowgreen": "#a4a61d", "yellow": "#dfb317",
    "orange": "#fe7d37", "red": "#e05d44", "blue": "#007ec6", "lightgrey": "#9f9f9f", "grey": "#555",
}
MAX_TEXT = 60


def text_width(text: str) -> float:
    return sum(_WIDTHS.get(ord(c), _WIDE) for c in text)


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def render(label: str, message: str, color: str = "blue") -> str:
    """A flat badge; ``color`` is a name of COLORS or a #hex colour."""
    label, message = _clip(label), _clip(message)
    fill = COLORS.get(color, color if color.startswith("#") else COLORS["lightgrey"])
    lw = math.ceil(text_width(label)) + 2 * PAD
    mw = math.ceil(text_width(message)) + 2 * PAD
    width = lw + mw
    title = escape(f"{label}: {message}")
    lt, mt = escape(label), escape(message)

    def text(x: float, value: str, length: float) -> str:
        # a shadow one pixel down, then the text: the shields look, crisp at any zoom
        return (f'<text x="{x:g}" y="15" fill="#010101" fill-opacity=".3" textLength="{length:g}">{value}</text>'
                f'<text x="{x:g}" y="14" textLength="{length:g}">{value}</text>')

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="{HEIGHT}" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="{HEIGHT}" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="{HEIGHT}" fill="{fill}"/>'
        f'<rect width="{width}" height="{HEIGHT}" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,Geneva,sans-serif" '
        'text-rendering="geometricPrecision" font-size="11">'
        f"{text(lw / 2, lt, lw - 2 * PAD)}{text(lw + mw / 2, mt, mw - 2 * PAD)}</g></svg>"
    )


# -- the badges a package has ----------------------------------------------------------------------
def version_badge(version: str | None) -> str:
    return render("version", version or "none", "blue" if version else "lightgrey")


def license_badge(license: str | None) -> str:
    return render("license", license or "unknown", "green" if license else "lightgrey")


def platforms_badge(subdirs: list[str]) -> str:
    return render("platforms", " | ".join(sorted(subdirs)) or "none", "blue" if subdirs else "lightgrey")


def updated_badge(uploaded_at: float | None, now: float) -> str:
    """Last upload: the date, coloured by age (fresh green to stale grey)."""
    if uploaded_at is None:
        return render("updated", "never", "lightgrey")
    days = (now - uploaded_at) / 86400
    color = "brightgreen" if days < 30 else "green" if days < 180 else "yellow" if days < 365 else "lightgrey"
    return render("updated", datetime.fromtimestamp(uploaded_at, timezone.utc).strftime("%Y-%m-%d"), color)


def humanize_count(n: int) -> str:
    for limit, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= limit:
            value = n / limit
            return f"{value:.1f}{suffix}".replace(".0", "") if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def downloads_badge(count: int) -> str:
    return render("downloads", humanize_count(count), "brightgreen" if count else "lightgrey")


SEVERITY_COLORS = {"critical": "red", "high": "orange", "medium": "yellow", "moderate": "yellow", "low": "yellowgreen"}


def cves_badge(count: int, worst: str | None) -> str:
    """CVE count and the worst severity among them; green when there are none."""
    if not count:
        return render("CVEs", "none", "brightgreen")
    worst = (worst or "unknown").lower()
    return render("CVEs", f"{count} {worst}", SEVERITY_COLORS.get(worst, "lightgrey"))


def embed_snippets(image_url: str, link_url: str, alt: str) -> dict[str, str]:
    """Copy-ready snippets for the places a badge goes."""
    return {
        "markdown": f"[![{alt}]({image_url})]({link_url})",
        "html": f'<a href="{escape(link_url)}"><img src="{escape(image_url)}" alt="{escape(alt)}"></a>',
        "rst": f".. image:: {image_url}\n   :alt: {alt}\n   :target: {link_url}",
        "asciidoc": f"image:{image_url}[{alt},link=\"{link_url}\"]",
    }
