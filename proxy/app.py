"""Application factory: config, storage, routes and middlewares."""

from __future__ import annotations

import logging

from aiohttp import web

from .api import artifacts, channels, cves, files, identity, insights, mirrors, openapi, policies, search, trust, yank  # noqa: F401, E501 - modules register routes
from .api.openapi import add_swagger_assets
from .api.routing import AUTH, PLATFORM, routes
from .auth import Auth
from .config import Config
from .middleware import error_middleware
from .platform import Platform
from .repo import conda, cran, pypi  # noqa: F401 - modules register their protocols
from .web import setup_web

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_upload_bytes)
    routes.install(app)
    add_swagger_assets(app)
    setup_web(app)  # the web pages at /, outside the API route table

    async def open_platform(app: web.Application):  # noqa: ANN202 - cleanup context
        platform = app[PLATFORM] = await Platform.open(config)
        app[AUTH] = Auth(platform.identities, platform.serving)
        if platform.bootstrap_token:
            print(f"conda-platform: first start, admin token (shown once, keep it safe): {platform.bootstrap_token}",
                  flush=True)
        await platform.mirrors.engine.start()  # recovers cut-off runs, then heartbeats and schedules
        yield
        await platform.mirrors.engine.shutdown()  # background runs and loops are cancelled first
        await app[PLATFORM].close()

    app.cleanup_ctx.append(open_platform)
    return app


def serve(config: Config) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    message = f"conda-platform serving http://{config.host}:{config.port} (data in {config.data_dir})"
    # run_app prints only once the port is bound, so a taken port never says "serving" first
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None,
                print=lambda _default: print(message, flush=True))
