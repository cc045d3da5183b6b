"""Uploaded files to file rows: one reader per artifact type, chosen by the filename.

Each reader validates a received file (its bytes are in a temp blob) without extracting it to
disk, and returns the :class:`~proxy.store.files.NewFile` the channel stores. Readers raise
:class:`~conda_platform_plugin.errors.InvalidPackage` with a message a user can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conda_platform_plugin.errors import InvalidPackage

from ..store.blobs import TempBlob
from ..store.files import NewFile


@dataclass
class Received:
    """An uploaded file waiting for validation: its bytes are in a temp blob."""

    filename: str
    blob: TempBlob


#: reader(received, expected subdir or None) -> NewFile
Reader = Callable[[Received, "str | None"], NewFile]
#: (artifact type, does this filename belong to it, its reader), asked in order
READERS: list[tuple[str, Callable[[str], bool], Reader]] = []


def register(type_: str, claims: Callable[[str], bool], reader: Reader) -> None:
    READERS.append((type_, claims, reader))


def read_upload(received: Received, expect_subdir: str | None = None) -> NewFile:
    """Blocking (archive reading): call it in a worker thread."""
    candidates = [reader for _type, claims, reader in READERS if claims(received.filename)]
    # A name may fit two types (R's NAME_VERSION.tar.gz and an sdist like iso_639-0.4.5.tar.gz):
    # the contents decide; when no reader takes the file, the first one's reason is given.
    first: InvalidPackage | None = None
    for reader in candidates:
        try:
            return reader(received, expect_subdir)
        except InvalidPackage as e:
            first = first or e
    if first is not None:
        raise first
    raise InvalidPackage(
        f"{received.filename}: not a package file this server takes (conda: .conda/.tar.bz2; python: .whl, "
        ".tar.gz/.zip sdists; R: NAME_VERSION.tar.gz sources and binaries)",
        detail={"filename": received.filename})


def _register_all() -> None:
    from . import conda, cran, python  # noqa: F401 - each reader module registers itself


_register_all()
