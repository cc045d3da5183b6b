"""Pieces every command shares: the global options, the API client, confirmations."""

from __future__ import annotations

import argparse
import os
import sys

from ..client import ClientError, PlatformClient

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "CONDA_PLATFORM_URL"
TOKEN_ENV = "CONDA_PLATFORM_TOKEN"


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


def resolve_globals(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the global options from the environment and defaults once parsing is over."""
    args.url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    args.token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
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
