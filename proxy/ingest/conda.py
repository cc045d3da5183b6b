"""conda packages (.conda, .tar.bz2): info/index.json and info/about.json, read from the archive."""

from __future__ import annotations

import orjson

from conda_platform_plugin.errors import InvalidPackage
from conda_platform_plugin.formats import conda_record, read_conda_package
from conda_platform_plugin.names import CONDA_EXTENSIONS

from ..store.files import NewFile
from . import Received, register


def read(received: Received, expect_subdir: str | None) -> NewFile:
    pkg = read_conda_package(received.blob.path, received.filename)
    if expect_subdir is not None and pkg.subdir != expect_subdir:
        raise InvalidPackage(
            f"{received.filename} is for subdir {pkg.subdir!r} (info/index.json), not {expect_subdir!r}",
            detail={"filename": received.filename, "subdir": pkg.subdir, "expected": expect_subdir},
        )
    blob = received.blob
    record = conda_record(pkg, sha256=blob.sha256, md5=blob.md5, size=blob.size)
    about = dict(pkg.about)
    return NewFile(
        type="conda",
        subdir=pkg.subdir,
        filename=pkg.filename,
        name=pkg.name,
        version=pkg.version,
        build=pkg.build,
        sha256=blob.sha256,
        md5=blob.md5,
        size=blob.size,
        record=orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
        about=orjson.dumps(about),
        contents=orjson.dumps({"paths": pkg.paths, "readme": pkg.readme}),
        license=str(record.get("license") or about.get("license") or ""),
        summary=str(about.get("summary") or ""),
    )


register("conda", lambda filename: filename.endswith(CONDA_EXTENSIONS), read)
