"""The web UI: server-rendered pages at ``/`` over the platform's domain, with local assets only."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import channels, mirrors, packages, policies, signin  # noqa: F401 - modules register pages
from .pages import channel_url, pages

HERE = Path(__file__).parent


def setup_web(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.globals["channel_url"] = channel_url
    app.router.add_static("/static/", HERE / "static", name="web-static")
    pages.install(app)  # after the API's routes: the catch-all page only sees what nothing else matched
