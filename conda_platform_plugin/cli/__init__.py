"""The ``conda-platform`` / ``conda platform`` command tree (argparse)."""

from .main import build_parser, configure_parser, main, run

__all__ = ["build_parser", "configure_parser", "main", "run"]
