"""``serve``: run the platform server in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PlatformError
from .common import command
from .output import Output


class ServeFailed(PlatformError):
    status, code = 0, "serve_failed"


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not between 0 and 65535")
    return port


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(subparsers, "serve", serve, "run the platform server (until Ctrl-C)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="where the database, package files and indexes live (env CONDA_PLATFORM_DATA_DIR; "
                        "default ./data)")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="SQLAlchemy URL of a PostgreSQL database, e.g. postgresql+asyncpg://… "
                        "(env CONDA_PLATFORM_DATABASE_URL; default: SQLite in the data dir)")


def serve(args: argparse.Namespace, out: Output) -> int:
    # DESIGN §3: the plugin package imports the server only here, and only when asked to serve.
    from proxy.app import serve as run_server
    from proxy.config import Config

    settings: dict = {"host": args.host, "port": args.port, "database_url": args.database_url}
    if args.data_dir is not None:
        settings["data_dir"] = args.data_dir
    try:
        run_server(Config(**settings))
    except OSError as e:
        raise ServeFailed(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0
