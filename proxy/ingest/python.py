"""Python packages (wheels and sdists): core metadata read from the archive, stored in subdir "pypi".

A python file row: ``type`` "python", ``subdir`` "pypi", ``name`` the PEP 503-normalized project
name, ``version`` the metadata's version, ``build`` the wheel tag ("" for an sdist). Its
``record`` (canonical JSON) holds what the simple API, the policies and the insights read::

    name, version, filename, packagetype ("bdist_wheel" | "sdist"), requires_python,
    requires_dist [PEP 508 strings], yanked (false or the reason, PEP 592), sha256, md5, size,
    upload_time (ISO 8601 UTC), timestamp (ms, for age rules), license (License-Expression, else
    a one-line License, else the license classifier), summary, metadata_sha256 (PEP 658; null:
    no core metadata file is served for it)

``about`` holds summary/description/home/dev_url/doc_url/author/project_urls (what the artifact
and readme endpoints show) and ``contents`` the core metadata bytes (base64, served verbatim as
``<file>.metadata``) and the archive's member list. Mirrored files get the same shapes
(proxy/mirror/pypi_source.py builds them with :func:`python_record` and :func:`python_extras`).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import time
import zipfile

import orjson
from packaging.utils import parse_wheel_filename

from conda_platform_plugin.errors import InvalidPackage
from conda_platform_plugin.names import PYPI_SUBDIR
from conda_platform_plugin.pyformats import PythonPackage, file_version, normalize_name, read_python_package

from ..store.files import NewFile
from ..store.times import iso_time
from . import Received, register

#: license classifiers (their last part) → SPDX, for metadata without License-Expression
CLASSIFIER_LICENSES = {
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "Apache Software License": "Apache-2.0",
    "BSD License": "BSD-3-Clause",
    "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "Python Software Foundation License": "PSF-2.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
}


def claims(filename: str) -> bool:
    """Wheels (a bad wheel name is refused by read with why), and sdists named NAME-VERSION.tar.gz/.zip
    (PEP 625). A name that is R's NAME_VERSION shape too is decided by the contents (proxy/ingest/__init__.py)."""
    return filename.endswith(".whl") or file_version(filename) is not None


def license_of(fields: dict) -> str:
    """License-Expression, else a one-line License field, else the license classifier."""
    if fields.get("license_expression"):
        return str(fields["license_expression"])[:400]
    text = str(fields.get("license") or "").strip()
    if text and "\n" not in text and len(text) <= 120:
        return text
    for c in fields.get("classifiers") or ():
        if c.startswith("License :: "):
            last = c.rsplit(" :: ", 1)[-1]
            return CLASSIFIER_LICENSES.get(last, last)[:400]
    return text.splitlines()[0][:120] if text else ""


def wheel_tag(filename: str) -> str:
    if not filename.endswith(".whl"):
        return ""
    _, _, build, tags = parse_wheel_filename(filename)
    tag = ".".join(sorted(str(t) for t in tags))
    return (f"{build[0]}{build[1]}-" if build else "") + tag[:180]


def python_record(*, name: str, version: str, filename: str, sha256: str, size: int, md5: str = "",
                  fields: dict, upload_time: float | str | None, yanked: bool | str = False,
                  metadata_sha256: str | None = None) -> dict:
    """The record of one python file (the shape in the module docstring)."""
    if isinstance(upload_time, (int, float)):
        upload_iso, ts = iso_time(upload_time), int(upload_time * 1000)
    else:
        upload_iso, ts = upload_time, _ms(upload_time)
    return {
        "name": normalize_name(name), "version": version, "filename": filename,
        "packagetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
        "requires_python": fields.get("requires_python") or "",
        "requires_dist": list(fields.get("requires_dist") or ()),
        "yanked": yanked or False, "sha256": sha256, "md5": md5, "size": size,
        "upload_time": upload_iso, "timestamp": ts, "license": license_of(fields),
        "summary": str(fields.get("summary") or "")[:500], "metadata_sha256": metadata_sha256,
    }


def python_extras(fields: dict, metadata: bytes | None, paths: list[str] | None = None) -> dict:
    """``about`` and ``contents`` of a python file row (its summary and license are the record's)."""
    urls = dict(fields.get("project_urls") or {})
    lower = {k.lower(): v for k, v in urls.items()}
    about = {
        "summary": fields.get("summary") or "",
        "description": fields.get("description") or "",
        "description_content_type": fields.get("description_content_type") or "",
        "home": fields.get("home_page") or lower.get("homepage") or lower.get("home") or None,
        "dev_url": lower.get("source") or lower.get("repository") or lower.get("source code") or None,
        "doc_url": lower.get("documentation") or lower.get("docs") or None,
        "author": fields.get("author") or "",
        "project_urls": urls,
        "classifiers": list(fields.get("classifiers") or ()),
    }
    contents = {"paths": paths or [], "readme": fields.get("description") or ""}
    if metadata is not None:
        contents["metadata"] = base64.b64encode(metadata).decode()
    return {"about": orjson.dumps(about), "contents": orjson.dumps(contents)}


def core_metadata(contents: bytes | None) -> bytes | None:
    """The core metadata bytes kept in a python row's ``contents`` (None: none kept)."""
    if not contents:
        return None
    b64 = orjson.loads(contents).get("metadata")
    return base64.b64decode(b64) if b64 else None


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) * 1000
    except ValueError:
        return None


def _members(received: Received, pkg: PythonPackage) -> list[str]:
    if pkg.packagetype != "bdist_wheel":
        return []
    with zipfile.ZipFile(received.blob.path) as zf:  # already checked by read_python_package
        return [n for n in zf.namelist() if not n.endswith("/")][:5000]


def read(received: Received, expect_subdir: str | None) -> NewFile:
    if expect_subdir is not None and expect_subdir != PYPI_SUBDIR:
        raise InvalidPackage(f"{received.filename} is a Python package: its subdir is {PYPI_SUBDIR!r}, not "
                             f"{expect_subdir!r}", detail={"filename": received.filename, "expected": expect_subdir})
    pkg = read_python_package(received.blob.path, received.filename)
    blob = received.blob
    record = python_record(name=pkg.name, version=pkg.version, filename=pkg.filename, sha256=blob.sha256,
                           size=blob.size, md5=blob.md5, fields=pkg.fields, upload_time=time.time(),
                           metadata_sha256=hashlib.sha256(pkg.metadata).hexdigest())
    extras = python_extras(pkg.fields, pkg.metadata, _members(received, pkg))
    return NewFile(type="python", subdir=PYPI_SUBDIR, filename=pkg.filename, name=pkg.normalized_name,
                   version=pkg.version, build=wheel_tag(pkg.filename), sha256=blob.sha256, md5=blob.md5,
                   size=blob.size, record=orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
                   summary=record["summary"], license=record["license"], **extras)


register("python", claims, read)
