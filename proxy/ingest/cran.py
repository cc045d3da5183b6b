"""R packages: sources (``NAME_VERSION.tar.gz``) into ``cran-src``, binaries (``.zip`` Windows,
``.tgz`` macOS, ``NAME_VERSION_R_<platform>.tar.gz`` Linux builds: DESCRIPTION has ``Built:``)
into ``cran-bin-<os>-<R x.y>``. DESCRIPTION is read from the archive without extracting it
(conda_platform_plugin.rformats); the record is proxy/repo/cran_index.py's.

R names put ``_`` between name and version; Python sdists (PEP 625) put ``-``: the file name
shape alone tells the two apart.
"""

from __future__ import annotations

import time

import orjson

from conda_platform_plugin.errors import InvalidPackage
from conda_platform_plugin.rformats import R_FILENAME, read_r_package

from ..repo.cran_index import SRC_SUBDIR, about_of, binary_os, binary_subdir, cran_record, split_binary_subdir
from ..store.files import NewFile
from . import Received, register


def claims(filename: str) -> bool:
    m = R_FILENAME.match(filename)
    # a Linux binary is NAME_VERSION_R_<platform>.tar.gz; any other tail is not an R file
    return m is not None and (not m.group("rest") or m.group("rest").startswith("_R_"))


def subdir_of(filename: str, desc: dict[str, str], expect_subdir: str | None) -> str:
    if "Built" not in desc:
        if not filename.endswith(".tar.gz") or R_FILENAME.match(filename).group("rest"):
            raise InvalidPackage(f"{filename}: a source package is NAME_VERSION.tar.gz (this one has no Built: "
                                 "field, so it is not a binary)", detail={"filename": filename})
        subdir = SRC_SUBDIR
    else:
        try:
            os_, r_version = binary_os(filename, desc["Built"])
        except ValueError as e:
            raise InvalidPackage(f"{filename}: {e}", detail={"filename": filename}) from None
        subdir = binary_subdir(os_, r_version)
        if expect_subdir and expect_subdir.startswith("cran-bin-") and _may_refine(os_, desc["Built"], expect_subdir,
                                                                                   r_version):
            subdir = expect_subdir
    if expect_subdir is not None and subdir != expect_subdir:
        raise InvalidPackage(f"{filename} belongs in subdir {subdir!r} (from its DESCRIPTION), not {expect_subdir!r}",
                             detail={"filename": filename, "subdir": subdir, "expected": expect_subdir})
    return subdir


def _may_refine(os_: str, built: str, expect_subdir: str, r_version: str) -> bool:
    """What the file cannot tell, its uploader may: the distribution of a Linux binary
    (cran-bin-linux-jammy-4.2), the architecture of a macOS binary without compiled code (its
    Built: names no platform)."""
    want_os, want_r = split_binary_subdir(expect_subdir)
    if want_r != r_version:
        return False
    if os_ == "linux":
        return want_os.startswith("linux-")
    no_platform = len(built.split(";")) > 1 and not built.split(";")[1].strip()
    return os_.startswith("macosx") and want_os.startswith("macosx") and no_platform


def read(received: Received, expect_subdir: str | None) -> NewFile:
    pkg = read_r_package(received.blob.path, received.filename)
    desc = pkg.description
    subdir = subdir_of(received.filename, desc, expect_subdir)
    blob = received.blob
    record = cran_record(desc, md5=blob.md5, size=blob.size, sha256=blob.sha256, timestamp=int(time.time() * 1000))
    about = about_of(desc)
    return NewFile(
        type="cran",
        subdir=subdir,
        filename=received.filename,
        name=pkg.name,
        version=pkg.version,
        build="",
        sha256=blob.sha256,
        md5=blob.md5,
        size=blob.size,
        record=orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
        about=orjson.dumps(about),
        contents=None,
        license=record["license"],
        summary=about.get("summary", ""),
    )


register("cran", claims, read)
