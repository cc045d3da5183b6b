"""A package's readme (Markdown from its metadata) rendered to HTML that is safe to show.

Package metadata is written by whoever built the package: raw HTML in it is escaped, never passed
through (markdown-it's ``html`` option off), and links and images with script-capable schemes
(``javascript:``, ``vbscript:``, ``file:``, non-image ``data:``) are refused by markdown-it's link
validation. The server adds a Content-Security-Policy that forbids scripts as a second line.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(["table", "strikethrough"])


def render_html(markdown: str) -> str:
    """CommonMark (with tables and strikethrough) as an HTML fragment; raw HTML comes out escaped."""
    return _MD.render(markdown)
