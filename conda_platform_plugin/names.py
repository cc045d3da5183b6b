"""Names users give us: channels, subchannels, conda subdirs and package filenames."""

from __future__ import annotations

import re

from .errors import BadRequest

#: conda's known platform subdirs (conda/base/constants.py KNOWN_SUBDIRS, plus noarch).
KNOWN_SUBDIRS: frozenset[str] = frozenset(
    {
        "noarch",
        "emscripten-wasm32",
        "wasi-wasm32",
        "freebsd-64",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-ppc64",
        "linux-ppc64le",
        "linux-riscv64",
        "linux-s390x",
        "osx-64",
        "osx-arm64",
        "win-32",
        "win-64",
        "win-arm64",
        "zos-z",
    }
)

CONDA_EXTENSIONS = (".conda", ".tar.bz2")

#: artifact types: one channel holds all three (DESIGN.md §2)
ARTIFACT_TYPES = ("conda", "python", "cran")
#: the one pseudo-subdir of python files (wheels and sdists have no conda platform)
PYPI_SUBDIR = "pypi"
#: cran files: sources in "cran-src"; binaries in "cran-bin-<os>-<R x.y>" (proxy/ingest/cran.py)
_CRAN_SUBDIR = re.compile(r"^cran-(src|bin-[a-z0-9][a-z0-9.-]{0,22})$")


def is_cran_subdir(subdir: str) -> bool:
    return _CRAN_SUBDIR.match(subdir or "") is not None


def subdir_type(subdir: str) -> str | None:
    """The artifact type whose files live in ``subdir``; None for no subdir we know."""
    if subdir in KNOWN_SUBDIRS:
        return "conda"
    if subdir == PYPI_SUBDIR:
        return "python"
    return "cran" if is_cran_subdir(subdir) else None
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: words a channel may not be called because they are parts of our URLs
_RESERVED = frozenset({"t", "api", "pypi", "cran", "trust", "shards", "subchannels", "artifacts", "files",
                       "channeldata.json"})


def check_segment(segment: str, what: str = "channel") -> str:
    if not _SEGMENT.match(segment or ""):
        raise BadRequest(
            f"invalid {what} name {segment!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            detail={"name": segment},
        )
    if segment in _RESERVED or segment in KNOWN_SUBDIRS:
        raise BadRequest(f"invalid {what} name {segment!r}: it is a reserved word", detail={"name": segment})
    return segment


def parse_channel_path(path: str) -> tuple[str, str | None]:
    """``"CH"`` or ``"CH/SUB"`` → (channel, subchannel), both validated."""
    parts = (path or "").strip("/").split("/")
    if len(parts) > 2:
        raise BadRequest(f"invalid channel {path!r}: at most one level of subchannels (CH/SUB)")
    channel = check_segment(parts[0])
    sub = check_segment(parts[1], "subchannel") if len(parts) == 2 else None
    return channel, sub


def check_subdir(subdir: str) -> str:
    """A conda subdir, or the pseudo-subdir of python or cran files."""
    if subdir_type(subdir) is None:
        raise BadRequest(f"unknown subdir {subdir!r} (a conda subdir, {PYPI_SUBDIR!r}, 'cran-src' or "
                         "'cran-bin-…')", detail={"subdir": subdir})
    return subdir


def check_conda_subdir(subdir: str) -> str:
    if subdir not in KNOWN_SUBDIRS:
        raise BadRequest(f"unknown conda subdir {subdir!r}", detail={"subdir": subdir})
    return subdir


def split_conda_filename(filename: str) -> tuple[str, str, str, str] | None:
    """``name-version-build.ext`` → (name, version, build, ext), or None when it is not one."""
    for ext in CONDA_EXTENSIONS:
        if filename.endswith(ext):
            stem = filename[: -len(ext)]
            parts = stem.rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1], parts[2], ext
    return None


_FILENAME = re.compile(r"^[A-Za-z0-9_.+!-]+$")


def check_filename(filename: str) -> str:
    """A filename from a URL or a request, safe to use as a key (never as a path)."""
    if not filename or not _FILENAME.match(filename) or filename.startswith("."):
        raise BadRequest(f"invalid file name {filename!r}")
    return filename
