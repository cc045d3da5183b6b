"""Shared tooling for the benchmarks in ``bench/``.

Every benchmark prints its figures next to a baseline measured in the same run on the same
machine (DESIGN.md §9): nginx serving the same files is the baseline for static serving, so
this module can start one, generate HTTP load against any loopback URL, measure peak memory,
and print aligned tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

#: 1 MB = 10**6 bytes in every MB/s figure printed here
MB = 1_000_000


class Unavailable(RuntimeError):
    """A baseline tool (e.g. nginx) is not installed: the bench skips that baseline, with this reason."""


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (callers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, *, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Block until something accepts TCP connections on host:port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


# --------------------------------------------------------------------------- nginx baseline


def nginx_binary() -> str | None:
    """Path of the nginx executable (also found in /usr/sbin, which is not on every PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_unavailable_reason() -> str | None:
    """Why the nginx baseline cannot run here (``None`` when it can)."""
    return None if nginx_binary() else "nginx is not installed (apt-get install nginx-light)"


def _nginx_temp_directives(nginx: str, prefix: Path) -> list[str]:
    """``*_temp_path`` lines for the modules compiled in: an unknown directive is a fatal error."""
    info = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    lines = [f"client_body_temp_path {prefix / 'client_body'};"]
    for module in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in info:
            lines.append(f"{module}_temp_path {prefix / module};")
    return lines


def _nginx_conf(nginx: str, root: Path, port: int, prefix: Path) -> str:
    mime = Path("/etc/nginx/mime.types")
    types = f"include {mime};" if mime.exists() else "types { application/json json; }"
    temp = "\n    ".join(_nginx_temp_directives(nginx, prefix))
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""\
{user}daemon off;
master_process on;
worker_processes 2;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    {types}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    access_log off;
    etag on;
    {temp}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            autoindex off;
        }}
    }}
}}
"""


@contextlib.contextmanager
def start_nginx(root: Path, port: int | None = None) -> Iterator[str]:
    """Serve ``root`` with nginx on 127.0.0.1:``port``; yield the base URL (no trailing slash).

    Tuned like a production static server (sendfile, tcp_nopush, no access log, 2 workers for
    this 2-core machine) so that it is a fair baseline. Raises :class:`Unavailable` when nginx
    is not installed. Everything nginx writes stays in a temp dir, removed at exit.
    """
    nginx = nginx_binary()
    if nginx is None:
        raise Unavailable(nginx_unavailable_reason() or "nginx unavailable")
    root = Path(root).resolve()
    port = port or free_port()
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(nginx, root, port, prefix))
    # -e: the error log before the config is read (otherwise /var/log/nginx/error.log is opened)
    cmd = [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout=10, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            log = (prefix / "error.log").read_text(errors="replace") if (prefix / "error.log").exists() else ""
            raise RuntimeError(f"nginx did not start: {exc}\n{log}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown; the master stops its workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(prefix, ignore_errors=True)


# --------------------------------------------------------------------------- load generator


def _check_loopback(url: str) -> None:
    """Benchmarks must never load anything but this machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load() only targets loopback addresses, not {host!r} ({url})")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def load(
    url: str,
    *,
    concurrency: int,
    total: int | None = None,
    duration: float | None = None,
    headers: dict[str, str] | None = None,
    expect_status: int = 200,
    max_seconds: float = 120.0,
    request_timeout: float = 60.0,
) -> dict[str, Any]:
    """GET ``url`` with ``concurrency`` keep-alive connections; return throughput and latency figures.

    Stops after ``total`` requests or ``duration`` seconds, whichever comes first, and never
    runs longer than ``max_seconds`` (also the limit when neither is given). Every body is read
    whole (in chunks, so big files do not pile up in memory) and counted in MB/s. A response
    with another status than ``expect_status``, or a failed request, counts as an error.

    Returns ``requests`` (completed, errors included), ``errors``, ``seconds``, ``req_s``,
    ``mb_s``, ``p50_ms``, ``p99_ms``, ``bytes`` and ``error_samples`` (a few error texts).
    """
    import aiohttp

    _check_loopback(url)
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    limit_s = min(duration, max_seconds) if duration is not None else max_seconds
    latencies: list[float] = []
    counts = {"started": 0, "errors": 0, "bytes": 0}
    error_samples: list[str] = []
    start = time.perf_counter()
    deadline = start + limit_s

    def claim() -> bool:
        if time.perf_counter() >= deadline:
            return False
        if total is not None and counts["started"] >= total:
            return False
        counts["started"] += 1
        return True

    def fail(text: str) -> None:
        counts["errors"] += 1
        if len(error_samples) < 5:
            error_samples.append(text)

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, auto_decompress=False
    ) as session:

        async def worker() -> None:
            while claim():
                t0 = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        size = 0
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            size += len(chunk)
                        counts["bytes"] += size
                        if resp.status != expect_status:
                            fail(f"status {resp.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    fail(f"{type(exc).__name__}: {exc}")
                latencies.append(time.perf_counter() - t0)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            # Requests in flight at the deadline may finish; this bounds the wait for them too.
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=limit_s + request_timeout + 5)
        except asyncio.TimeoutError:
            fail("load generator hit its hard time limit")
    seconds = time.perf_counter() - start
    latencies.sort()
    done = len(latencies)
    return {
        "requests": done,
        "errors": counts["errors"],
        "seconds": round(seconds, 3),
        "req_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "mb_s": round(counts["bytes"] / MB / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "bytes": counts["bytes"],
        "error_samples": error_samples,
    }


# --------------------------------------------------------------------------- memory


def _rss_of(pid: int) -> int | None:
    """Current RSS in bytes of ``pid`` (psutil when installed, else /proc on Linux)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # process gone
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _ru_maxrss_bytes() -> int:
    """Lifetime peak RSS of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakRSS:
    """Measure the peak RSS reached while a block runs, and how far above the start it went.

    How: a daemon thread samples the RSS of ``pid`` (default: this process) every
    ``interval`` seconds with psutil (or /proc). Sampling is needed because
    ``getrusage().ru_maxrss`` is the peak over the whole process lifetime, so it cannot show
    the cost of one block once an earlier step has been bigger; it is still reported as
    ``lifetime_peak_mb`` for this process, and it catches spikes shorter than the interval.
    Attributes after the block: ``start_mb``, ``peak_mb``, ``delta_mb`` (peak - start).

    Works around sync code and around ``await`` alike (the sampler is a thread)::

        with PeakRSS() as mem:
            build_index(...)
        print(mem.delta_mb)
    """

    def __init__(self, pid: int | None = None, interval: float = 0.005) -> None:
        self.pid = pid or os.getpid()
        self.interval = interval
        self.start_bytes = 0
        self.peak_bytes = 0
        self.lifetime_peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_of(self.pid)
            if rss is not None and rss > self.peak_bytes:
                self.peak_bytes = rss
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start_bytes = _rss_of(self.pid) or 0
        self.peak_bytes = self.start_bytes
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        final = _rss_of(self.pid)
        if final is not None:
            self.peak_bytes = max(self.peak_bytes, final)
        if self.pid == os.getpid():
            self.lifetime_peak_bytes = _ru_maxrss_bytes()

    @property
    def start_mb(self) -> float:
        return round(self.start_bytes / MB, 1)

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / MB, 1)

    @property
    def delta_mb(self) -> float:
        return round((self.peak_bytes - self.start_bytes) / MB, 1)

    @property
    def lifetime_peak_mb(self) -> float | None:
        return None if self.lifetime_peak_bytes is None else round(self.lifetime_peak_bytes / MB, 1)

    def figures(self) -> dict[str, float | None]:
        """The figures as a table row fragment."""
        return {"rss_start_mb": self.start_mb, "rss_peak_mb": self.peak_mb, "rss_delta_mb": self.delta_mb}


def peak_rss_of(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, PeakRSS]:
    """Call ``fn(*args, **kwargs)`` under :class:`PeakRSS`; return its result and the measurement."""
    with PeakRSS() as mem:
        result = fn(*args, **kwargs)
    return result, mem


# --------------------------------------------------------------------------- output


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts; columns = union of keys, in first-seen order) as an aligned table.

    Uses rich when installed, plain text otherwise; numbers are right-aligned.
    """
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    numeric = {
        c: all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if c in r)
        for c in columns
    }
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

        def line(values: list[str]) -> str:
            return "  ".join(
                v.rjust(w) if numeric[c] else v.ljust(w) for v, w, c in zip(values, widths, columns, strict=True)
            )

        print(f"\n{title}")
        print(line(columns))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print(line(r))
        return
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if numeric[c] else "left", no_wrap=True)
    for r in cells:
        table.add_row(*r)
    # Figures must never be cut or wrapped (bench output often goes to a file or CI log).
    needed = sum(max([len(c)] + [len(r[i]) for r in cells]) + 3 for i, c in enumerate(columns)) + 1
    Console(width=max(needed, Console().width)).print(table)
