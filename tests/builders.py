"""Build real conda packages (and deliberately broken ones) for tests.

Tests exercise the same code paths as real uploads, so packages are made with
conda-package-handling exactly as conda-build makes them, not faked.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import zstandard
from conda_package_handling import api as cph_api

#: the checkout's sibling ``shared/data`` with real public archives and repodata
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: the real package archives of shared/data that tests upload and read
ZLIB_DIR = SHARED_DATA / "channels" / "conda_format_repo" / "linux-64"
ZLIB_CONDA = ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.conda"
ZLIB_TAR = ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.tar.bz2"
MOCK = SHARED_DATA / "packages" / "mock-2.0.0-py37_1000.conda"
XTENSOR = SHARED_DATA / "packages" / "xtensor-io-0.10.3-hb585cf6_0.tar.bz2"
MOTO = SHARED_DATA / "channels" / "legacy_repodata" / "noarch" / "moto-1.3.7-py_0.tar.bz2"

#: fixed mtime (2021-01-01) so archive contents do not depend on when a test ran
FIXED_MTIME = 1609459200
DEFAULT_TIMESTAMP = 1700000000000

_ARCH = {"64": "x86_64", "32": "x86", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def _platform_arch(subdir: str) -> tuple[str | None, str | None]:
    if subdir == "noarch" or "-" not in subdir:
        return None, None
    platform, _, arch = subdir.partition("-")
    return platform, _ARCH.get(arch, arch)


def _index_json(
    name: str,
    version: str,
    build: str,
    build_number: int,
    subdir: str,
    depends: Sequence[str],
    constrains: Sequence[str],
    license: str,
    noarch: str | None,
    timestamp: int,
) -> dict:
    platform, arch = _platform_arch(subdir)
    index: dict = {
        "arch": arch,
        "build": build,
        "build_number": build_number,
        "depends": list(depends),
        "license": license,
        "name": name,
        "platform": platform,
        "subdir": subdir,
        "timestamp": timestamp,
        "version": version,
    }
    if constrains:
        index["constrains"] = list(constrains)
    if noarch:
        index["noarch"] = noarch
    return index


def build_conda_package(
    out_dir: Path,
    name: str,
    version: str = "1.0",
    build: str = "0",
    *,
    build_number: int = 0,
    subdir: str = "noarch",
    depends: Sequence[str] = (),
    constrains: Sequence[str] = (),
    license: str = "MIT",
    summary: str = "",
    description: str = "",
    files: dict[str, bytes] | None = None,
    fmt: str = ".conda",
    noarch: str | None = None,
    timestamp: int | None = None,
    extra_index: dict | None = None,
) -> Path:
    """Write ``<name>-<version>-<build><fmt>`` into ``out_dir`` and return its path.

    ``extra_index`` is merged last into info/index.json, so a test can make the metadata
    disagree with the file name.
    """
    if fmt not in (".conda", ".tar.bz2"):
        raise ValueError(f"fmt must be .conda or .tar.bz2, not {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if noarch is None and subdir == "noarch":
        noarch = "generic"
    if files is None:
        files = {f"share/{name}/README.txt": f"{name} {version} ({build})\n".encode()}
    index = _index_json(
        name,
        version,
        build,
        build_number,
        subdir,
        depends,
        constrains,
        license,
        noarch,
        DEFAULT_TIMESTAMP if timestamp is None else timestamp,
    )
    index.update(extra_index or {})
    about = {"description": description, "home": f"https://example.com/{name}", "license": license, "summary": summary}
    payload = sorted(files)
    paths = {
        "paths": [
            {
                "_path": p,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(files[p]).hexdigest(),
                "size_in_bytes": len(files[p]),
            }
            for p in payload
        ],
        "paths_version": 1,
    }
    info = {
        "info/index.json": json.dumps(index, indent=2, sort_keys=True).encode(),
        "info/about.json": json.dumps(about, indent=2, sort_keys=True).encode(),
        "info/paths.json": json.dumps(paths, indent=2, sort_keys=True).encode(),
        "info/files": "".join(f"{p}\n" for p in payload).encode(),
    }
    out_fn = f"{name}-{version}-{build}{fmt}"
    with tempfile.TemporaryDirectory(prefix="build-", dir=out_dir) as prefix:
        for rel, data in {**files, **info}.items():
            target = Path(prefix, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.utime(target, (FIXED_MTIME, FIXED_MTIME))
        out = out_dir / out_fn
        if out.exists():
            out.unlink()
        cph_api.create(prefix, sorted(info) + payload, out_fn, str(out_dir))
    return out


def tar_member(name: str, size: int = 0, **attrs: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = FIXED_MTIME
    ti.mode = 0o644
    for key, value in attrs.items():
        setattr(ti, key, value)
    return ti


def write_tar_bz2(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A .tar.bz2 made by hand, member names exactly as given (tarfile.add would clean them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    Path(path).write_bytes(bz2.compress(buf.getvalue()))
    return Path(path)


def build_hand_made_tar_bz2(
    path: Path, name: str, extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = (), *, index: bool = True
) -> Path:
    """A tiny .tar.bz2 package with a valid info/ (unless index=False) plus ``extra`` members, written as given."""
    stem = path.name[: -len(".tar.bz2")]
    version, build = stem.rsplit("-", 2)[1:]
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    if index:
        idx = _index_json(name, version, build, 0, "noarch", (), (), "MIT", "generic", DEFAULT_TIMESTAMP)
        data = json.dumps(idx, sort_keys=True).encode()
        members.append((tar_member("info/index.json", len(data)), data))
    files = b"share/x.txt\n"
    members.append((tar_member("info/files", len(files)), files))
    members.append((tar_member("share/x.txt", 3), b"ok\n"))
    return write_tar_bz2(path, [*members, *extra])


def build_bad_archives(out_dir: Path) -> dict[str, Path]:
    """Inputs an upload must refuse with InvalidPackage (422), keyed by what is wrong with them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad: dict[str, Path] = {}

    p = out_dir / "x-1.0-0.conda"
    p.write_text("this is not a conda package\n")
    bad["not_archive"] = p

    # a payload big enough that half the archive is clearly missing data
    blob = {"share/trunc/data.bin": hashlib.sha256(b"seed").digest() * 4096}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        for key, fmt in (("truncated", ".conda"), ("truncated_bz2", ".tar.bz2")):
            whole = build_conda_package(Path(tmp), "trunc", files=blob, fmt=fmt).read_bytes()
            p = out_dir / f"trunc-1.0-0{fmt}"
            p.write_bytes(whole[: len(whole) // 2])
            bad[key] = p

    bad["unsafe_path"] = build_hand_made_tar_bz2(
        out_dir / "unsafe-1.0-0.tar.bz2", "unsafe", [(tar_member("../evil", 5), b"evil\n")]
    )
    bad["absolute_path"] = build_hand_made_tar_bz2(
        out_dir / "absolute-1.0-0.tar.bz2", "absolute", [(tar_member("/tmp/evil", 5), b"evil\n")]
    )
    bad["symlink_escape"] = build_hand_made_tar_bz2(
        out_dir / "symlink-1.0-0.tar.bz2",
        "symlink",
        [(tar_member("lib/evil", type=tarfile.SYMTYPE, linkname="../../etc/passwd"), None)],
    )
    bad["hardlink_escape"] = build_hand_made_tar_bz2(
        out_dir / "hardlink-1.0-0.tar.bz2",
        "hardlink",
        [(tar_member("lib/evil", type=tarfile.LNKTYPE, linkname="../etc/passwd"), None)],
    )
    bad["device_file"] = build_hand_made_tar_bz2(
        out_dir / "device-1.0-0.tar.bz2", "device", [(tar_member("dev/null", type=tarfile.CHRTYPE), None)]
    )
    bad["no_index"] = build_hand_made_tar_bz2(out_dir / "noindex-1.0-0.tar.bz2", "noindex", [], index=False)
    bad["name_mismatch"] = build_conda_package(out_dir, "mismatch", extra_index={"name": "other"})
    bad["bad_subdir"] = build_conda_package(
        out_dir, "badsubdir", subdir="linux-64", extra_index={"subdir": "linux-999"}
    )
    return bad


def copy_as(src: Path, out_dir: Path, filename: str) -> Path:
    """Copy an archive under another name (for file-name vs index.json checks)."""
    dst = Path(out_dir) / filename
    shutil.copyfile(src, dst)
    return dst


# -- reading archives independently of the server's reader ------------------------------------
def info_member(path: Path, member: str) -> dict:
    """A JSON member of a package's info/ (``info/index.json``…), read with tarfile/zipfile/zstandard."""
    if path.name.endswith(".tar.bz2"):
        with tarfile.open(path, "r:bz2") as tar:
            return json.load(tar.extractfile(member))
    with zipfile.ZipFile(path) as zf:
        (info,) = [n for n in zf.namelist() if n.startswith("info-") and n.endswith(".tar.zst")]
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(zf.read(info))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return json.load(tar.extractfile(member))


def expected_record(path: Path) -> dict:
    """What conda expects in repodata.json: index.json (no nulls, no arch/platform) + digests of the bytes."""
    index = info_member(path, "info/index.json")
    data = path.read_bytes()
    record = {k: v for k, v in index.items() if v is not None and k not in ("arch", "platform")}
    record.update(sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(), size=len(data))
    return record


def section(filename: str) -> str:
    """The repodata section a package file belongs in."""
    return "packages.conda" if filename.endswith(".conda") else "packages"
