"""Pieces every command shares: the global options, the API client, confirmations."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

from ..client import ClientError, PlatformClient

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "CONDA_PLATFORM_URL"
TOKEN_ENV = "CONDA_PLATFORM_TOKEN"
CONFIG_DIR_ENV = "CONDA_PLATFORM_CONFIG_DIR"
LOGIN_FILE = "login.json"


class ConfirmationRequired(ClientError):
    status, code = 0, "confirmation_required"


class Aborted(ClientError):
    status, code = 0, "aborted"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Add --url/--token/--json to one parser.

    They are added to every parser of the tree with SUPPRESS defaults, so they are accepted
    before or after the subcommand and a later occurrence never resets an earlier one.
    """
    group = parser.add_argument_group("global options")
    group.add_argument("--url", default=argparse.SUPPRESS, metavar="URL",
                       help=f"server URL (env {URL_ENV}; default {DEFAULT_URL})")
    group.add_argument("--token", default=argparse.SUPPRESS, metavar="TOKEN",
                       help=f"API token, sent as a Bearer token (env {TOKEN_ENV})")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print machine-readable JSON (errors as the JSON error envelope)")


class LocalConfigError(ClientError):
    status, code = 0, "local_config_error"


def config_dir() -> Path:
    """Where ``login`` keeps its file: $CONDA_PLATFORM_CONFIG_DIR, else the XDG config home."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "conda-platform"


def login_path() -> Path:
    return config_dir() / LOGIN_FILE


def load_login() -> dict[str, str] | None:
    """The stored login, or None; a damaged file is reported once and otherwise ignored."""
    path = login_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        sys.stderr.write(f"warning: ignoring {path}: {getattr(e, 'strerror', None) or e}\n")
        return None
    if not (isinstance(data, dict) and isinstance(data.get("url"), str) and isinstance(data.get("token"), str)):
        sys.stderr.write(f"warning: ignoring {path}: not a login file (run 'conda-platform login' again)\n")
        return None
    return {"url": data["url"], "token": data["token"]}


def save_login(url: str, token: str) -> Path:
    """Write the login atomically, readable by its owner only from the first byte on."""
    path = login_path()
    try:
        if not path.parent.is_dir():
            path.parent.parent.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{LOGIN_FILE}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"url": url, "token": token}, f)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise LocalConfigError(f"cannot save the login to {path}: {e.strerror or e}", detail={"file": str(path)}) from None
    return path


def remove_login() -> Path | None:
    """Delete the stored login; returns its path, or None when there was none."""
    path = login_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LocalConfigError(f"cannot remove {path}: {e.strerror or e}", detail={"file": str(path)}) from None
    return path


def _same_server(a: str, b: str) -> bool:
    return a.strip().rstrip("/") == b.strip().rstrip("/")


def resolve_globals(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the global options from the environment, the stored login and defaults once parsing is over.

    The stored token is sent only to the server it was stored for, so ``--url`` pointing
    elsewhere never leaks it.
    """
    args.given_url = getattr(args, "url", None) or None  # `login` needs to know what was typed
    args.given_token = getattr(args, "token", None) or None
    url = args.given_url or os.environ.get(URL_ENV) or None
    token = args.given_token or os.environ.get(TOKEN_ENV) or None
    stored = None if token and url else load_login()
    if stored is not None:
        url = url or stored["url"]
        if token is None and _same_server(url, stored["url"]):
            token = stored["token"]
    args.url = url or DEFAULT_URL
    args.token = token
    args.json = bool(getattr(args, "json", False))
    return args


def client(args: argparse.Namespace) -> PlatformClient:
    return PlatformClient(args.url, token=args.token)


def confirm(args: argparse.Namespace, question: str, what: str) -> None:
    """Ask before destroying; without a terminal to ask on, refuse unless --yes was given."""
    if getattr(args, "yes", False):
        return
    if args.json or not sys.stdin.isatty() or not sys.stderr.isatty():
        raise ConfirmationRequired(f"refusing to {what} without confirmation: pass --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise Aborted("aborted: nothing was deleted")


def command(subparsers: argparse._SubParsersAction, name: str, func: object, help: str,
            description: str | None = None) -> argparse.ArgumentParser:
    """A leaf command: its parser knows its handler (``args.func``) and itself (for usage errors)."""
    p = subparsers.add_parser(name, help=help, description=description or help)
    p.set_defaults(func=func, parser=p)
    add_global_options(p)
    return p


def group(subparsers: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command group such as ``channel``: it needs one of its subcommands."""
    p = subparsers.add_parser(name, help=help, description=help)
    p.set_defaults(parser=p)
    add_global_options(p)
    return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
