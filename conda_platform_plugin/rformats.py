"""R packages: the DESCRIPTION / PACKAGES format (Debian control files) and reading an uploaded
R package (source ``.tar.gz``, or a binary ``.tgz``/``.tar.gz`` with ``Built:``, or ``.zip``)
safely, without extracting it.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .formats import invalid_package, unsafe_reason

MAX_DESCRIPTION = 1 << 20
#: the fields CRAN's tools::write_PACKAGES keeps, in its order
PACKAGES_FIELDS = (
    "Package", "Version", "Priority", "Depends", "Imports", "LinkingTo", "Suggests", "Enhances", "License",
    "License_is_FOSS", "License_restricts_use", "OS_type", "Archs", "MD5sum", "SHA256", "NeedsCompilation",
    "Built", "File", "Path", "Filesize",
)
DEPENDENCY_FIELDS = ("Depends", "Imports", "LinkingTo", "Suggests", "Enhances")
#: an R package file name: NAME_VERSION[_rest].tar.gz|tgz|zip (uploads and mirrors read it)
R_FILENAME = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9])_(?P<version>[0-9]+[-.][0-9][-.0-9]*)"
                       r"(?P<rest>_[^/]*)?\.(?P<ext>tar\.gz|tgz|zip)$")
_ERRORS = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, ValueError, UnicodeDecodeError)


def parse_dcf(text: str) -> list[dict[str, str]]:
    """Records of a DCF file; continuation lines (leading whitespace) join their field with newlines."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current, last = {}, None
        elif line[0] in " \t":
            if last is None:
                raise ValueError(f"a continuation line before any field: {line!r}")
            current[last] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key:
                raise ValueError(f"not a 'Field: value' line: {line!r}")
            last = key
            current[key] = value.strip()
    if current:
        records.append(current)
    return records


def render_dcf(records: list[dict[str, str]], fields: tuple[str, ...] | None = None) -> str:
    """DCF text; with ``fields``, only those fields, in that order (as PACKAGES lists them)."""
    out = []
    for rec in records:
        keys = [k for k in fields if k in rec] if fields else list(rec)
        lines = []
        for k in keys:
            first, *more = str(rec[k]).split("\n")
            lines.append(f"{k}: {first}")
            lines.extend(f"        {m}" for m in more)
        out.append("\n".join(lines))
    return "\n\n".join(out) + ("\n" if out else "")


def parse_dependencies(value: str) -> list[tuple[str, str]]:
    """``"R (>= 2.15.0), xtable"`` → [("R", ">= 2.15.0"), ("xtable", "")]."""
    deps = []
    for part in re.split(r",\s*", value.replace("\n", " ").strip()):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9.]*)\s*(?:\(\s*([^)]*?)\s*\))?", part)
        if m is None:
            raise ValueError(f"not an R dependency: {part!r}")
        deps.append((m.group(1), " ".join(m.group(2).split()) if m.group(2) else ""))
    return deps


@dataclass(frozen=True)
class RPackage:
    filename: str
    name: str
    version: str
    binary: bool  # has Built: (made by R CMD INSTALL --build)
    description: dict[str, str]


def split_r_filename(filename: str) -> tuple[str, str]:
    m = R_FILENAME.match(filename)
    if m is None:
        raise invalid_package(filename, "an R package file is NAME_VERSION.tar.gz (or .tgz / .zip for binaries)")
    return m.group("name"), m.group("version")


def _check(names: list[str], filename: str, pkg: str) -> str:
    for n in names:
        reason = unsafe_reason(n)
        if reason:
            raise invalid_package(filename, f"unsafe member path {n!r} ({reason})", member=n)
    want = f"{pkg}/DESCRIPTION"
    if want not in names:
        raise invalid_package(filename, f"no {want} in the archive")
    return want


def read_r_package(path: Path, filename: str) -> RPackage:
    name, version = split_r_filename(filename)
    raw: bytes | None = None
    try:
        if filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                member = _check(zf.namelist(), filename, name)
                if zf.getinfo(member).file_size > MAX_DESCRIPTION:
                    raise invalid_package(filename, "DESCRIPTION is too large")
                if zf.testzip() is not None:
                    raise invalid_package(filename, "a damaged archive member")
                raw = zf.read(member)
        else:
            names = []
            with tarfile.open(path, mode="r|gz") as tar:  # streamed: all bytes decompressed and checked
                for m in tar:
                    names.append(m.name)
                    if (m.issym() or m.islnk()) and (unsafe_reason(m.linkname) or m.linkname.startswith("/")):
                        raise invalid_package(filename, f"unsafe link {m.name!r} -> {m.linkname!r}")
                    if m.isdev() or m.ischr() or m.isblk() or m.isfifo():
                        raise invalid_package(filename, f"device or pipe member {m.name!r}")
                    if m.name == f"{name}/DESCRIPTION" and m.isfile():
                        if m.size > MAX_DESCRIPTION:
                            raise invalid_package(filename, "DESCRIPTION is too large")
                        raw = tar.extractfile(m).read()
            _check(names, filename, name)
        records = parse_dcf(raw.decode("utf-8", errors="replace"))
    except _ERRORS as e:
        raise invalid_package(filename, f"not a readable R package: {e.__class__.__name__}: {e}") from e
    if len(records) != 1:
        raise invalid_package(filename, "DESCRIPTION must hold exactly one record")
    desc = records[0]
    if desc.get("Package") != name or desc.get("Version") != version:
        raise invalid_package(
            filename, f"DESCRIPTION says {desc.get('Package')} {desc.get('Version')}, the file name {name} {version}")
    for field in DEPENDENCY_FIELDS:
        if field in desc:
            try:
                parse_dependencies(desc[field])
            except ValueError as e:
                raise invalid_package(filename, f"DESCRIPTION {field}: {e}") from e
    return RPackage(filename, name, version, "Built" in desc, desc)
