"""Run a command with its stderr on a pseudo-terminal, as a person at a terminal would see it."""

from __future__ import annotations

import os
import pty
import subprocess


def run_on_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, what the terminal showed): live progress goes to a terminal only."""
    main, child = pty.openpty()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    shown = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(main)
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out, shown
