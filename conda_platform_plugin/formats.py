"""Read an uploaded conda package archive safely, in memory, without extracting it.

Every byte of the archive is streamed (both the ``info`` and the ``pkg`` component of a
``.conda``), so a truncated or corrupt file is refused at upload time rather than at install
time, and every member path and link target is checked, so nothing we publish can write outside
the environment it is installed into. Only the small metadata members are kept in memory.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from conda_package_streaming import package_streaming

from .errors import InvalidPackage, PlatformError, TooLarge
from .names import KNOWN_SUBDIRS, split_conda_filename

__all__ = ["CondaPackage", "conda_record", "read_conda_package", "RECORD_KEYS"]

#: index.json keys copied into a repodata record, in the order conda-index's output sorts them.
#: ``arch`` and ``platform`` are left out on purpose: conda-index filters them from repodata.json.
RECORD_KEYS = (
    "build",
    "build_number",
    "constrains",
    "depends",
    "features",
    "license",
    "license_family",
    "name",
    "noarch",
    "subdir",
    "timestamp",
    "track_features",
    "version",
)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_BZ2_MAGIC = b"BZh"
_DRIVE = re.compile(r"^[A-Za-z]:")
_README = re.compile(r"^info/(recipe/)?readme(\.(md|markdown|rst|txt))?$", re.IGNORECASE)
_README_EXT_RANK = {".md": 0, ".markdown": 1, ".rst": 2, ".txt": 3, "": 4}
_MAX_LINK_HOPS = 40

#: errors the stdlib and conda-package-streaming raise on damaged input
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    ValueError,
    LookupError,
    AssertionError,
    RuntimeError,
)
_zstd = getattr(package_streaming, "zstd", None)
if _zstd is not None and hasattr(_zstd, "ZstdError"):
    _STREAM_ERRORS = (*_STREAM_ERRORS, _zstd.ZstdError)


@dataclass(frozen=True)
class CondaPackage:
    """What we know about an uploaded conda package after it has been checked."""

    filename: str
    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    index: dict[str, Any]
    about: dict[str, Any] = field(default_factory=dict)
    paths: list[dict[str, Any]] = field(default_factory=list)
    readme: str | None = None


def invalid_package(filename: str, message: str, **detail: Any) -> InvalidPackage:
    return InvalidPackage(f"{filename}: {message}", detail={"filename": filename, **detail})


def _split(path: str) -> list[str]:
    """Split on both separators: a backslash is a separator for a Windows install."""
    return [p for p in re.split(r"[/\\]", path) if p not in ("", ".")]


def unsafe_reason(path: str) -> str | None:
    """Why ``path`` may not appear in a package (None when it is fine)."""
    if not path or path in (".", "./"):
        return "an empty path"
    if "\x00" in path:
        return "a NUL character"
    if path[0] in "/\\":
        return "an absolute path"
    if _DRIVE.match(path):
        return "a drive letter"
    if ".." in re.split(r"[/\\]", path):
        return "a '..' component"
    return None


def _resolve(parts: list[str], links: dict[str, str]) -> list[str] | None:
    """Resolve ``parts`` inside the package root following the package's own symlinks.

    Returns None when the path leaves the root (or loops), which a lexical check alone cannot
    see: ``lib/d -> .`` plus ``lib/x -> d/../..`` escapes although each link looks harmless.
    """
    out: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        target = links.get("/".join(out))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or target[:1] in ("/", "\\") or _DRIVE.match(target):
                return None
            out.pop()
            todo = _split(target) + todo
    return out


class _Reader:
    """One pass over all members of a package, keeping the metadata and checking the rest."""

    def __init__(self, filename: str, max_metadata_bytes: int):
        self.filename = filename
        self.max = max_metadata_bytes
        self.meta: dict[str, bytes] = {}
        self.readme: tuple[tuple[int, int], str, bytes] | None = None
        self.symlinks: dict[str, str] = {}
        self.hardlinks: dict[str, str] = {}
        self.names: list[str] = []

    def _too_large(self, member: tarfile.TarInfo) -> TooLarge:
        return TooLarge(
            f"{self.filename}: {member.name} is {member.size} bytes, more than the {self.max} bytes allowed "
            "for package metadata",
            detail={"filename": self.filename, "member": member.name, "size": member.size, "limit": self.max},
        )

    def _read_small(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        if member.size > self.max:
            raise self._too_large(member)
        fh = tar.extractfile(member)
        if fh is None:  # pragma: no cover - only regular files reach here
            raise invalid_package(self.filename, f"{member.name} is not a regular file", member=member.name)
        data = fh.read(self.max + 1)
        if len(data) > self.max:  # pragma: no cover - header size already checked
            raise self._too_large(member)
        return data

    def visit(self, tar: tarfile.TarFile, member: tarfile.TarInfo, component: str | None) -> None:
        name = member.name
        reason = unsafe_reason(name)
        if reason:
            raise invalid_package(self.filename, f"unsafe member path {name!r} ({reason})", member=name)
        if component == "info" and not name.startswith("info/"):
            raise invalid_package(self.filename, f"member {name!r} outside info/ in the info component", member=name)
        if component == "pkg" and name.startswith("info/"):
            raise invalid_package(self.filename, f"member {name!r} of info/ in the pkg component", member=name)
        self.names.append(name)
        if member.isdir():
            return
        if member.issym():
            self.symlinks[name.rstrip("/")] = member.linkname
            return
        if member.islnk():
            reason = unsafe_reason(member.linkname)
            if reason:
                raise invalid_package(
                    self.filename,
                    f"hardlink {name!r} points outside the package ({member.linkname!r}: {reason})",
                    member=name,
                )
            self.hardlinks[name] = member.linkname
            return
        if member.ischr() or member.isblk():
            raise invalid_package(self.filename, f"device file {name!r} is not allowed in a package", member=name)
        if member.isfifo():
            raise invalid_package(self.filename, f"FIFO {name!r} is not allowed in a package", member=name)
        if not member.isreg():
            raise invalid_package(self.filename, f"member {name!r} has unsupported type {member.type!r}", member=name)

        is_json = name.startswith("info/") and name.count("/") == 1 and name.endswith(".json")
        if is_json or name == "info/files":
            data = self._read_small(tar, member)
            if name in self.meta:
                raise invalid_package(self.filename, f"{name} appears twice in the archive", member=name)
            self.meta[name] = data
        elif _README.match(name):
            if member.size > self.max:
                raise self._too_large(member)
            ext = posixpath.splitext(posixpath.basename(name).lower())[1]
            rank = (name.count("/"), _README_EXT_RANK.get(ext, 5))
            if self.readme is None or rank < self.readme[0]:
                self.readme = (rank, name, self._read_small(tar, member))

    def check_links(self) -> None:
        """Symlink targets and every member's parent directories must stay inside the package."""
        if not self.symlinks and not self.hardlinks:
            return
        for name, target in self.symlinks.items():
            parts = _split(posixpath.dirname(name)) + _split(target)
            if target[:1] in ("/", "\\") or _DRIVE.match(target) or _resolve(parts, self.symlinks) is None:
                raise invalid_package(
                    self.filename, f"symlink {name!r} -> {target!r} points outside the package (or loops)", member=name
                )
        if not self.symlinks:
            return
        for name in self.names:
            parent = _split(posixpath.dirname(name.rstrip("/")))
            if parent and _resolve(parent, self.symlinks) is None:
                raise invalid_package(self.filename, f"member {name!r} is written through a symlink outside the package")
        for name, target in self.hardlinks.items():
            if _resolve(_split(target), self.symlinks) is None:
                raise invalid_package(
                    self.filename, f"hardlink {name!r} -> {target!r} points outside the package", member=name
                )


def _members(fh: IO[bytes], filename: str, ext: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str | None]]:
    """Yield (tar, member, component) for every member of the archive, whole archive included."""
    if ext == ".tar.bz2":
        for tar, member in package_streaming.stream_conda_component(filename, fh, "pkg"):
            yield tar, member, None
        return
    stem = filename[: -len(ext)]
    with zipfile.ZipFile(fh) as zf:
        names = zf.namelist()
        for zname in names:
            reason = unsafe_reason(zname)
            if reason:
                raise invalid_package(filename, f"unsafe zip member path {zname!r} ({reason})", member=zname)
        for component in ("info", "pkg"):
            want = f"{component}-{stem}.tar.zst"
            if names.count(want) != 1:
                found = [n for n in names if n.startswith(f"{component}-")]
                raise invalid_package(
                    filename,
                    f"a .conda must hold exactly one {want} (found {found or 'none'})",
                    components=found,
                )
            others = [n for n in names if n != want and n.startswith(f"{component}-{stem}")]
            if others:
                raise invalid_package(filename, f"unexpected extra component(s) {others}", components=others)
        bad = zf.testzip()  # CRC of every zip member, so no corrupt byte goes unread
        if bad is not None:
            raise invalid_package(filename, f"is truncated or corrupt (bad CRC in {bad})", member=bad)
        for component in ("info", "pkg"):
            for tar, member in package_streaming.stream_conda_component(filename, fh, component, zf=zf):
                yield tar, member, component


def _load_json(filename: str, member: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise invalid_package(filename, f"{member} is not valid JSON ({e})", member=member) from None


def _check_index(filename: str, index: Any, fn_parts: tuple[str, str, str, str]) -> None:
    if not isinstance(index, dict):
        raise invalid_package(filename, "info/index.json is not a JSON object")
    for key in ("name", "version", "build", "subdir"):
        if not isinstance(index.get(key), str) or not index[key]:
            raise invalid_package(filename, f"info/index.json has no {key} string", field=key)
    bn = index.get("build_number")
    if not isinstance(bn, int) or isinstance(bn, bool) or bn < 0:
        raise invalid_package(filename, f"info/index.json build_number must be a non-negative integer, not {bn!r}")
    for key in ("depends", "constrains"):
        value = index.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            raise invalid_package(filename, f"info/index.json {key} must be a list of strings", field=key)
    name, version, build, _ = fn_parts
    for key, from_fn in (("name", name), ("version", version), ("build", build)):
        if index[key] != from_fn:
            raise invalid_package(
                filename,
                f"info/index.json {key} {index[key]!r} does not match the file name's {key} {from_fn!r}",
                field=key,
                index_value=index[key],
                filename_value=from_fn,
            )
    if index["subdir"] not in KNOWN_SUBDIRS:
        raise invalid_package(
            filename, f"info/index.json subdir {index['subdir']!r} is not a known conda subdir", field="subdir"
        )


def _paths(filename: str, meta: dict[str, bytes]) -> list[dict[str, Any]]:
    if "info/paths.json" in meta:
        doc = _load_json(filename, "info/paths.json", meta["info/paths.json"])
        paths = doc.get("paths") if isinstance(doc, dict) else None
        if not isinstance(paths, list) or not all(
            isinstance(p, dict) and isinstance(p.get("_path"), str) for p in paths
        ):
            raise invalid_package(filename, "info/paths.json has no list of paths with a _path each")
    elif "info/files" in meta:
        text = meta["info/files"].decode("utf-8", errors="surrogateescape")
        paths = [{"_path": line.strip()} for line in text.splitlines() if line.strip()]
    else:
        return []
    for p in paths:
        reason = unsafe_reason(p["_path"])
        if reason:
            raise invalid_package(filename, f"unsafe path {p['_path']!r} in the package's file list ({reason})")
    return paths


def read_conda_package(
    path: str | os.PathLike[str], filename: str, *, max_metadata_bytes: int = 16 << 20
) -> CondaPackage:
    """Check the archive at ``path`` (uploaded as ``filename``) and return its metadata.

    Raises InvalidPackage (422) for anything conda could not install safely, TooLarge (413)
    when a metadata member exceeds ``max_metadata_bytes``.
    """
    fn_parts = split_conda_filename(filename)
    if fn_parts is None or "/" in filename or "\\" in filename:
        raise invalid_package(filename, "not a conda package file name: expected name-version-build.conda or .tar.bz2")
    ext = fn_parts[3]
    reader = _Reader(filename, max_metadata_bytes)
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        if ext == ".conda" and not head.startswith(_ZIP_MAGIC):
            raise invalid_package(filename, "is not an archive: a .conda package must be a zip file")
        if ext == ".tar.bz2" and not head.startswith(_BZ2_MAGIC):
            raise invalid_package(filename, "is not an archive: a .tar.bz2 package must be a bzip2-compressed tar file")
        try:
            for tar, member, component in _members(fh, filename, ext):
                reader.visit(tar, member, component)
        except PlatformError:
            raise
        except _STREAM_ERRORS as e:
            raise invalid_package(filename, f"is truncated or corrupt ({type(e).__name__}: {e})") from None
    reader.check_links()

    meta = reader.meta
    if "info/index.json" not in meta:
        raise invalid_package(filename, "has no info/index.json")
    index = _load_json(filename, "info/index.json", meta["info/index.json"])
    _check_index(filename, index, fn_parts)
    about: Any = {}
    if "info/about.json" in meta:
        about = _load_json(filename, "info/about.json", meta["info/about.json"])
        if not isinstance(about, dict):
            raise invalid_package(filename, "info/about.json is not a JSON object")
    readme = reader.readme[2].decode("utf-8", errors="replace") if reader.readme else None
    return CondaPackage(
        filename=filename,
        name=index["name"],
        version=index["version"],
        build=index["build"],
        build_number=index["build_number"],
        subdir=index["subdir"],
        index=index,
        about=about,
        paths=_paths(filename, meta),
        readme=readme,
    )


def conda_record(pkg: CondaPackage, *, sha256: str, md5: str, size: int) -> dict[str, Any]:
    """The repodata.json record of ``pkg``, shaped as conda-index writes it (sorted keys, no nulls)."""
    record: dict[str, Any] = {k: pkg.index[k] for k in RECORD_KEYS if pkg.index.get(k) is not None}
    record.setdefault("depends", [])
    record.update(md5=md5, sha256=sha256, size=size)
    return dict(sorted(record.items()))
