"""The command tree, shared by the ``conda-platform`` script and (later) ``conda platform``.

``configure_parser`` fills any parser (conda hands the plugin one), ``build_parser`` makes a
standalone one, ``run`` executes parsed arguments and turns every failure into an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import PlatformError
from . import access, channels, cves, mirrors, packages, policies, serve, trust
from .common import add_global_options, resolve_globals
from .output import Output

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(parser=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(sub)
    channels.register(sub)
    packages.register(sub)
    mirrors.register(sub)
    access.register(sub)
    policies.register(sub)
    cves.register(sub)
    trust.register(sub)
    return parser


def build_parser(prog: str = "conda-platform") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Manage a conda-platform server: channels, package uploads, search, downloads, users and tokens.",
        epilog="Run '%(prog)s COMMAND --help' for the options of one command.",
    )
    return configure_parser(parser)


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments; every failure becomes one line (or the JSON envelope) and an exit code."""
    resolve_globals(args)
    out = Output(json_mode=args.json)
    try:
        return args.func(args, out) or 0
    except PlatformError as e:
        if e.status == 401 and not args.token and not out.json_mode:  # say how to present one
            e.message += " (no token was given: use --token, CONDA_PLATFORM_TOKEN or 'conda-platform login')"
        out.error(e)
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.interrupted()
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `conda-platform search x | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure when Python flushes
        return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser("conda-platform").parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        Output().interrupted()
        return EXIT_INTERRUPTED
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
