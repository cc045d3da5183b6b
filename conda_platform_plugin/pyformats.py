"""Read an uploaded Python package (wheel or sdist) safely, without extracting it.

The core metadata (``*.dist-info/METADATA`` of a wheel, ``PKG-INFO`` of an sdist) is read from the
archive in memory and kept byte for byte: it is what PEP 658 serves as ``<file>.metadata``. Every
member path is checked like a conda package's, and the name and version in the metadata must
agree with the file name (compared after PEP 503 / PEP 440 normalization).
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.metadata import Metadata, parse_email
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)

from .errors import InvalidPackage
from .formats import invalid_package, unsafe_reason

#: core metadata larger than this is not metadata
MAX_METADATA = 4 << 20
SDIST_SUFFIXES = (".tar.gz", ".zip")
_ERRORS = (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, ValueError, LookupError)


def normalize_name(name: str) -> str:
    """PEP 503 normalization (packaging's canonicalize_name), as a plain str."""
    return str(canonicalize_name(name))


@dataclass(frozen=True)
class PythonPackage:
    filename: str
    name: str  # as the metadata spells it
    version: str
    packagetype: str  # "bdist_wheel" or "sdist"
    metadata: bytes  # the core metadata file, verbatim (PEP 658)
    fields: dict = field(default_factory=dict)  # parsed: summary, requires_dist, requires_python, license…

    @property
    def normalized_name(self) -> str:
        return normalize_name(self.name)


def _filename_parts(filename: str) -> tuple[str, str, str]:
    """(normalized name, version, packagetype) from a wheel or sdist file name."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return str(name), str(version), "bdist_wheel"
        if filename.endswith(SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            return str(name), str(version), "sdist"
    except (InvalidWheelFilename, InvalidSdistFilename) as e:
        raise invalid_package(filename, f"not a valid Python package file name: {e}") from e
    raise invalid_package(filename, "a Python package is a .whl, .tar.gz or .zip file")


def file_version(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) of a wheel or sdist file name; None for other files (eggs, exes)."""
    try:
        return _filename_parts(filename)[:2]
    except InvalidPackage:
        return None


def _metadata_member(names: list[str], filename: str, packagetype: str) -> str:
    for n in names:
        reason = unsafe_reason(n)
        if reason:
            raise invalid_package(filename, f"unsafe member path {n!r} ({reason})", member=n)
    if packagetype == "bdist_wheel":
        found = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        what = "a *.dist-info/METADATA file"
    else:
        found = [n for n in names if re.fullmatch(r"[^/]+/PKG-INFO", n)]
        what = "a top-level PKG-INFO file"
    if len(found) != 1:
        raise invalid_package(filename, f"expected exactly one {what}, found {len(found)}")
    return found[0]


def _read_zip(path: Path, filename: str, packagetype: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        member = _metadata_member(zf.namelist(), filename, packagetype)
        info = zf.getinfo(member)
        if info.file_size > MAX_METADATA:
            raise invalid_package(filename, f"{member} is larger than {MAX_METADATA} bytes")
        bad = zf.testzip()  # every member's CRC: a truncated or damaged wheel is refused now
        if bad is not None:
            raise invalid_package(filename, f"damaged archive member {bad!r}")
        return zf.read(member)


def _read_tar(path: Path, filename: str) -> bytes:
    metadata: bytes | None = None
    names: list[str] = []
    with tarfile.open(path, mode="r|gz") as tar:  # streamed: every byte is decompressed and checked
        for m in tar:
            names.append(m.name)
            if m.issym() or m.islnk():
                reason = unsafe_reason(m.linkname) or (
                    "a link out of the archive" if m.linkname.startswith("/") else None)
                if reason:
                    raise invalid_package(filename, f"unsafe link {m.name!r} -> {m.linkname!r} ({reason})")
            if m.isdev() or m.ischr() or m.isblk() or m.isfifo():
                raise invalid_package(filename, f"device or pipe member {m.name!r}")
            if re.fullmatch(r"[^/]+/PKG-INFO", m.name) and m.isfile():
                if m.size > MAX_METADATA:
                    raise invalid_package(filename, f"{m.name} is larger than {MAX_METADATA} bytes")
                metadata = tar.extractfile(m).read()
    _metadata_member(names, filename, "sdist")
    assert metadata is not None
    return metadata


def read_python_package(path: Path, filename: str) -> PythonPackage:
    """Check a wheel or sdist and read its core metadata; InvalidPackage (422) says what is wrong."""
    fn_name, fn_version, packagetype = _filename_parts(filename)
    try:
        if packagetype == "bdist_wheel" or filename.endswith(".zip"):
            raw = _read_zip(Path(path), filename, packagetype)
        else:
            raw = _read_tar(Path(path), filename)
    except _ERRORS as e:
        raise invalid_package(filename, f"not a readable {packagetype} archive: {e.__class__.__name__}: {e}") from e
    try:
        meta, fields = core_metadata_fields(raw)
    except ValueError as e:
        raise invalid_package(filename, f"unreadable core metadata: {e}") from e
    if not meta.name or not meta.version:
        raise invalid_package(filename, "the core metadata lacks Name or Version")
    if canonicalize_name(meta.name) != fn_name:
        raise invalid_package(filename, f"the metadata names the project {meta.name!r}, the file name {fn_name!r}")
    if canonicalize_version(str(meta.version)) != canonicalize_version(fn_version):
        raise invalid_package(filename, f"the metadata says version {meta.version}, the file name {fn_version}")
    return PythonPackage(filename, meta.name, str(meta.version), packagetype, raw, fields)


def core_metadata_fields(raw: bytes) -> tuple[Metadata, dict]:
    """Parse core metadata (METADATA, PKG-INFO, a PEP 658 file): the parsed form and the fields
    records keep. ValueError when it cannot be read (uploads and mirrors both use it)."""
    try:
        meta = Metadata.from_email(raw, validate=False)
    except Exception as e:  # noqa: BLE001 - packaging raises several kinds on bad metadata
        raise ValueError(str(e)) from e
    fields = {
        "summary": meta.summary or "",
        "description": meta.description or "",
        "description_content_type": meta.description_content_type or "",
        "requires_dist": [str(r) for r in meta.requires_dist or ()],
        # as written (packaging reorders a SpecifierSet): what data-requires-python repeats
        "requires_python": str(parse_email(raw)[0].get("requires_python") or meta.requires_python or ""),
        "license": meta.license or "",
        "license_expression": getattr(meta, "license_expression", None) or "",
        "classifiers": list(meta.classifiers or ()),
        "home_page": meta.home_page or "",
        "project_urls": dict(meta.project_urls or {}),
        "author": meta.author or meta.author_email or "",
    }
    return meta, fields
