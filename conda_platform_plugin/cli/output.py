"""What commands print: rich tables for people, JSON for programs, one line per error.

Every command goes through ``Output`` so that ``--json`` switches all of it at once and an
error is always exactly one ``error: …`` line on stderr (or the envelope on stdout).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import PlatformError

if TYPE_CHECKING:  # rich is imported when a table is printed, not when the CLI starts
    from rich.console import Console

#: tables printed to a pipe are not wrapped at 80 columns, so `grep` and friends see whole lines
PIPE_WIDTH = 1000


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


class Output:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            tty = sys.stdout.isatty()
            self._console = Console(width=None if tty else PIPE_WIDTH, highlight=False, soft_wrap=not tty)
        return self._console

    # -- results -------------------------------------------------------------------------------
    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def result(self, data: Any, human: str | None = None) -> None:
        """A command's result: the data with --json, else a message (or nothing)."""
        if self.json_mode:
            self.json(data)
        elif human:
            self.console.print(human, markup=False)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "nothing found",
              footer: str | None = None) -> None:
        from rich import box
        from rich.table import Table

        if not rows:
            self.console.print(empty, markup=False)
            return
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for c in columns:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        self.console.print(table)
        if footer:
            self.console.print(footer, markup=False)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """A record as aligned ``key  value`` lines."""
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        for key, value in pairs:
            if isinstance(value, bool):
                value = "yes" if value else "no"
            elif isinstance(value, list | tuple):
                value = ", ".join(map(str, value)) or "-"
            grid.add_row(key, "-" if value in (None, "") else str(value))
        self.console.print(grid)

    # -- failures ------------------------------------------------------------------------------
    def error(self, err: PlatformError) -> None:
        if self.json_mode:
            self.json(err.envelope())
        else:
            sys.stdout.flush()
            sys.stderr.write(f"error: {one_line(err.message)}\n")
            sys.stderr.flush()

    def interrupted(self) -> None:
        sys.stderr.write("\ninterrupted\n" if sys.stderr.isatty() else "interrupted\n")
        sys.stderr.flush()

    # -- progress ------------------------------------------------------------------------------
    @contextmanager
    def progress(self, description: str) -> Iterator[Any]:
        """A transfer progress bar on stderr; a no-op callback with --json or when stderr is not a terminal."""
        if self.json_mode or not sys.stderr.isatty():
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with bar:
            yield update
