"""The conda plugin (entry-point group ``conda``): the ONLY module of the project that imports conda.

It adapts conda's objects to the conda-free hook actions in hooks.py and their refusals to
CondaErrors: ``conda platform …`` runs the command tree of ``conda-platform``; settings
``plugins.platform_url``, ``platform_token``, ``platform_policy_mode`` (off | warn | enforce) and
``platform_require_signatures``; the token as Authorization for the platform's host only; ``conda
doctor`` checks; pre-solve and post-solve policy and signature checks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from conda import plugins
from conda.base.context import context
from conda.common.configuration import PrimitiveParameter
from conda.exceptions import CondaError
from conda.plugins.types import (
    CondaHealthCheck,
    CondaPostSolve,
    CondaPreSolve,
    CondaRequestHeader,
    CondaSetting,
    CondaSubcommand,
)

from . import hooks
from .cli.common import TOKEN_ENV, URL_ENV, load_login
from .cli.main import configure_parser, run
from .client import ClientError


class PlatformPolicyError(CondaError):
    """The platform's policy or signature checks refused the transaction (nothing was changed)."""

    def __init__(self, message: str):
        super().__init__(message)


def settings() -> hooks.Settings:
    """The plugin's settings from conda's configuration (then the environment, then the stored
    ``conda platform login`` when it is for the same server)."""
    p = context.plugins
    url = getattr(p, "platform_url", None) or os.environ.get(URL_ENV) or None
    token = getattr(p, "platform_token", None) or os.environ.get(TOKEN_ENV) or None
    if token is None:
        stored = load_login()
        if stored is not None and (url is None or stored["url"].rstrip("/") == url.rstrip("/")):
            url, token = url or stored["url"], stored["token"]
    try:
        return hooks.Settings(url=url, token=token,
                              policy_mode=str(getattr(p, "platform_policy_mode", "off") or "off"),
                              require_signatures=bool(getattr(p, "platform_require_signatures", False)),
                              trust_root=Path(context.av_data_dir) / "1.root.json")
    except ValueError as e:  # e.g. plugins.platform_policy_mode: loud
        raise PlatformPolicyError(str(e)) from None


def _channel_urls() -> list[str]:
    from conda.models.channel import Channel

    urls = []
    for name in context.channels:
        try:
            urls.extend(Channel(name).base_urls)
        except Exception:  # noqa: BLE001 - a channel conda cannot parse is not ours
            continue
    return urls


def _print(line: str) -> None:
    print(line, file=sys.stderr if context.json else sys.stdout)


# -- conda platform …------------------------------------------------------------------------------
def _configure(parser: argparse.ArgumentParser) -> None:
    configure_parser(parser)


def _run(args: argparse.Namespace) -> int:
    if hasattr(args, "prefix") and args.prefix is None and getattr(args, "command", None) == "trust":
        args.prefix = str(context.conda_prefix)  # where this conda reads 1.root.json and its .condarc
    s = settings()  # the server and token of conda's configuration, unless given on the command line
    if not getattr(args, "url", None) and s.url:
        args.url = s.url
        if not getattr(args, "token", None) and s.token:
            args.token = s.token
    return run(args)


@plugins.hookimpl
def conda_subcommands():  # noqa: ANN201
    yield CondaSubcommand(name="platform", summary="Manage and use a conda-platform server (conda-platform's commands)",
                          action=_run, configure_parser=_configure)


@plugins.hookimpl
def conda_settings():  # noqa: ANN201
    yield CondaSetting(name="platform_url", description="URL of the conda-platform server",
                       parameter=PrimitiveParameter("", element_type=str))
    yield CondaSetting(name="platform_token", description="API token sent to the platform server (and only to it)",
                       parameter=PrimitiveParameter("", element_type=str))
    yield CondaSetting(name="platform_policy_mode",
                       description="off | warn | enforce: what a violation of the platform policy does",
                       parameter=PrimitiveParameter("off", element_type=str))
    yield CondaSetting(name="platform_require_signatures",
                       description="abort when a package from a platform channel has no valid signature",
                       parameter=PrimitiveParameter(False, element_type=bool))


@plugins.hookimpl
def conda_request_headers(host: str, path: str):  # noqa: ANN201
    s = settings()
    if s.token and s.url and hooks.is_platform_host(f"{s.url.split('://', 1)[0]}://{host}{path}", s):
        yield CondaRequestHeader(name="Authorization", value=f"Bearer {s.token}")


# -- conda doctor ----------------------------------------------------------------------------------
def _health(prefix: str, verbose: bool) -> None:
    for ok, sentence in hooks.health(settings()):
        print(f"{'✅' if ok else '❌'} {sentence}")


@plugins.hookimpl
def conda_health_checks():  # noqa: ANN201
    yield CondaHealthCheck(name="conda-platform", action=_health,
                           summary="the platform server answers, the token is valid, a trust root is installed")


# -- the solve -------------------------------------------------------------------------------------
def _pre_solve(specs_to_add, specs_to_remove) -> None:  # noqa: ANN001
    s = settings()
    try:
        hooks.pre_solve(list(specs_to_add), _channel_urls(), s)
    except hooks.HookError as e:
        raise PlatformPolicyError(str(e)) from None
    except ClientError as e:
        if s.policy_mode == "enforce":
            raise PlatformPolicyError(f"the platform policy cannot be read: {e.message}") from None
        _print(f"warning: the platform policy cannot be read: {e.message}")


def _post_solve(repodata_fn: str, unlink_precs, link_precs) -> None:  # noqa: ANN001
    s = settings()
    try:
        hooks.post_solve(list(link_precs), _channel_urls(), s, out=_print)
    except hooks.HookError as e:
        raise PlatformPolicyError(str(e)) from None
    except ClientError as e:
        if s.policy_mode == "enforce" or s.require_signatures:
            raise PlatformPolicyError(f"the platform checks cannot run: {e.message}") from None
        _print(f"warning: the platform checks cannot run: {e.message}")


@plugins.hookimpl
def conda_pre_solves():  # noqa: ANN201
    yield CondaPreSolve(name="conda-platform-policy", action=_pre_solve)


@plugins.hookimpl
def conda_post_solves():  # noqa: ANN201
    yield CondaPostSolve(name="conda-platform-policy-and-signatures", action=_post_solve)
