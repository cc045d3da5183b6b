"""read_conda_package / conda_record on real archives, built packages and hostile inputs."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from builders import (
    SHARED_DATA,
    ZLIB_DIR,
    build_bad_archives,
    build_conda_package,
    build_hand_made_tar_bz2,
    copy_as,
    tar_member,
)

from conda_platform_plugin.errors import InvalidPackage, TooLarge
from conda_platform_plugin.formats import CondaPackage, conda_record, read_conda_package

REAL_ARCHIVES = [
    ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.conda",
    ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.tar.bz2",
    SHARED_DATA / "packages" / "mock-2.0.0-py37_1000.conda",
    SHARED_DATA / "packages" / "mock-2.0.0-py37_1000.tar.bz2",
    SHARED_DATA / "packages" / "xtensor-io-0.10.3-hb585cf6_0.tar.bz2",
    SHARED_DATA / "channels" / "legacy_repodata" / "noarch" / "moto-1.3.7-py_0.tar.bz2",
]
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared test data not found at {SHARED_DATA}")


def _sums(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(), "size": len(data)}


def _read(path: Path, **kw) -> CondaPackage:
    return read_conda_package(path, path.name, **kw)


@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_bad_archives(tmp_path_factory.mktemp("bad"))


# --- real archives -------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", REAL_ARCHIVES, ids=lambda p: p.name)
def test_real_archives_read(path: Path) -> None:
    pkg = _read(path)
    stem = path.name.removesuffix(".conda").removesuffix(".tar.bz2")
    assert f"{pkg.name}-{pkg.version}-{pkg.build}" == stem
    assert pkg.index["name"] == pkg.name and pkg.subdir == pkg.index["subdir"]
    assert isinstance(pkg.build_number, int)
    assert pkg.paths and all("_path" in p for p in pkg.paths)
    assert isinstance(pkg.about, dict) and pkg.about


@needs_shared
@pytest.mark.parametrize("ext", [".conda", ".tar.bz2"])
def test_zlib_record_matches_real_repodata(ext: str) -> None:
    repodata = json.loads((ZLIB_DIR / "repodata.json").read_text())
    fn = f"zlib-1.2.11-h7b6447c_3{ext}"
    expected = repodata["packages.conda" if ext == ".conda" else "packages"][fn]
    path = ZLIB_DIR / fn
    record = conda_record(_read(path), **_sums(path))
    for key in ("sha256", "md5", "size", "depends", "name", "version", "build", "build_number", "subdir"):
        assert record[key] == expected[key], key
    # same shape as conda-index: no arch/platform, keys sorted
    assert record == expected
    assert list(record) == sorted(record)


@needs_shared
def test_zlib_both_formats_agree() -> None:
    a, b = (_read(ZLIB_DIR / f"zlib-1.2.11-h7b6447c_3{ext}") for ext in (".conda", ".tar.bz2"))
    assert a.index == b.index and a.about == b.about and a.paths == b.paths
    by_path = {p["_path"]: p for p in a.paths}
    assert by_path["lib/libz.so"]["path_type"] == "softlink"
    assert by_path["lib/libz.so.1.2.11"]["size_in_bytes"] == 133384


@needs_shared
def test_noarch_python_record() -> None:
    path = SHARED_DATA / "channels" / "legacy_repodata" / "noarch" / "moto-1.3.7-py_0.tar.bz2"
    pkg = _read(path)
    assert pkg.index["arch"] is None and pkg.index["platform"] is None  # null in index.json
    record = conda_record(pkg, **_sums(path))
    assert record["noarch"] == "python" and record["subdir"] == "noarch"
    assert "arch" not in record and "platform" not in record
    legacy = json.loads((path.parent / "repodata.json").read_text())["packages"][path.name]
    for key in ("sha256", "md5", "size", "depends", "license", "timestamp"):
        assert record[key] == legacy[key]


@needs_shared
def test_readme_in_recipe_is_found() -> None:
    pkg = _read(SHARED_DATA / "packages" / "conda-forge-repodata-patches-20180828-0.tar.bz2")
    assert pkg.readme and "scheme" in pkg.readme


@needs_shared
def test_real_archive_renamed_is_refused(tmp_path: Path) -> None:
    renamed = copy_as(ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.conda", tmp_path, "zlib-1.2.11-h7b6447c_4.conda")
    with pytest.raises(InvalidPackage, match=r"info-zlib-1.2.11-h7b6447c_4.tar.zst"):
        _read(renamed)
    renamed = copy_as(ZLIB_DIR / "zlib-1.2.11-h7b6447c_3.tar.bz2", tmp_path, "zlib-1.2.11-h7b6447c_4.tar.bz2")
    with pytest.raises(InvalidPackage, match=r"build 'h7b6447c_3' does not match .* 'h7b6447c_4'"):
        _read(renamed)


# --- built packages -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_built_package_round_trip(tmp_path: Path, fmt: str) -> None:
    files = {"lib/python3.11/site-packages/foo/__init__.py": b"x = 1\n", "bin/foo": b"#!/bin/sh\necho foo\n"}
    path = build_conda_package(
        tmp_path,
        "foo",
        "2.1",
        "py_3",
        build_number=3,
        depends=["python >=3.8", "numpy"],
        constrains=["bar <2"],
        license="BSD-3-Clause",
        summary="a foo",
        description="longer",
        files=files,
        fmt=fmt,
    )
    assert path == tmp_path / f"foo-2.1-py_3{fmt}"
    pkg = _read(path)
    assert (pkg.name, pkg.version, pkg.build, pkg.build_number, pkg.subdir) == ("foo", "2.1", "py_3", 3, "noarch")
    assert pkg.index["noarch"] == "generic"
    assert pkg.about["summary"] == "a foo" and pkg.about["license"] == "BSD-3-Clause"
    assert {p["_path"]: (p["sha256"], p["size_in_bytes"]) for p in pkg.paths} == {
        k: (hashlib.sha256(v).hexdigest(), len(v)) for k, v in files.items()
    }
    assert pkg.readme is None
    record = conda_record(pkg, **_sums(path))
    assert record == {
        "build": "py_3",
        "build_number": 3,
        "constrains": ["bar <2"],
        "depends": ["python >=3.8", "numpy"],
        "license": "BSD-3-Clause",
        "name": "foo",
        "noarch": "generic",
        "subdir": "noarch",
        "timestamp": 1700000000000,
        "version": "2.1",
        **_sums(path),
    }


def test_built_platform_package_defaults(tmp_path: Path) -> None:
    pkg = _read(build_conda_package(tmp_path, "bar", subdir="linux-64", timestamp=123))
    assert pkg.index["platform"] == "linux" and pkg.index["arch"] == "x86_64"
    assert [p["_path"] for p in pkg.paths] == ["share/bar/README.txt"]
    record = conda_record(pkg, sha256="0" * 64, md5="0" * 32, size=1)
    assert "noarch" not in record and "constrains" not in record
    assert record["depends"] == [] and record["timestamp"] == 123


def test_depends_default_when_index_has_none(tmp_path: Path) -> None:
    path = build_hand_made_tar_bz2(tmp_path / "nodeps-1.0-0.tar.bz2", "nodeps")
    pkg = _read(path)
    assert pkg.paths == [{"_path": "share/x.txt"}]  # from info/files: no paths.json
    pkg.index.pop("depends", None)
    assert conda_record(pkg, sha256="a", md5="b", size=1)["depends"] == []


def test_built_content_is_deterministic(tmp_path: Path) -> None:
    a = _read(build_conda_package(tmp_path / "a", "det"))
    b = _read(build_conda_package(tmp_path / "b", "det"))
    assert (a.index, a.about, a.paths) == (b.index, b.about, b.paths)


@pytest.mark.parametrize("readme_name", ["info/README.md", "info/readme.md", "info/recipe/README.md"])
def test_readme(tmp_path: Path, readme_name: str) -> None:
    text = "# Hello\n\nünïcode\n"
    path = build_conda_package(tmp_path, "withreadme", files={readme_name: text.encode(), "share/x": b"x"})
    assert _read(path).readme == text


def test_readme_prefers_info_over_recipe(tmp_path: Path) -> None:
    files = {"info/recipe/README.md": b"recipe", "info/README.md": b"top", "share/x": b"x"}
    assert _read(build_conda_package(tmp_path, "two", files=files)).readme == "top"


# --- bad inputs -----------------------------------------------------------------------------

BAD_MESSAGES = {
    "not_archive": r"not an archive",
    "truncated": r"truncated or corrupt",
    "truncated_bz2": r"truncated or corrupt",
    "unsafe_path": r"unsafe member path '\.\./evil'",
    "absolute_path": r"unsafe member path '/tmp/evil' \(an absolute path\)",
    "symlink_escape": r"symlink 'lib/evil' -> '\.\./\.\./etc/passwd' points outside",
    "hardlink_escape": r"hardlink 'lib/evil' points outside",
    "device_file": r"device file 'dev/null'",
    "no_index": r"has no info/index\.json",
    "name_mismatch": r"name 'other' does not match the file name's name 'mismatch'",
    "bad_subdir": r"subdir 'linux-999' is not a known conda subdir",
}


def test_bad_archive_keys(bad_archives: dict[str, Path]) -> None:
    assert set(bad_archives) == set(BAD_MESSAGES)


@pytest.mark.parametrize("key", sorted(BAD_MESSAGES))
def test_bad_archives_are_refused(bad_archives: dict[str, Path], key: str) -> None:
    path = bad_archives[key]
    with pytest.raises(InvalidPackage, match=BAD_MESSAGES[key]) as exc:
        _read(path)
    err = exc.value
    assert err.status == 422 and err.code == "invalid_package"
    assert err.detail["filename"] == path.name
    assert "\n" not in err.message and err.message.startswith(path.name)


@pytest.mark.parametrize(
    "filename", ["foo.zip", "foo-1.0.conda", "foo-1.0-0.tar.gz", "../foo-1.0-0.conda", "a/foo-1.0-0.conda"]
)
def test_bad_filenames(tmp_path: Path, filename: str) -> None:
    path = build_conda_package(tmp_path, "foo")
    with pytest.raises(InvalidPackage, match="not a conda package file name"):
        read_conda_package(path, filename)


def test_wrong_kind_of_archive(tmp_path: Path) -> None:
    conda = build_conda_package(tmp_path, "kind")
    as_bz2 = copy_as(conda, tmp_path, "kind-1.0-0.tar.bz2")
    with pytest.raises(InvalidPackage, match="not an archive: a .tar.bz2 package must be a bzip2"):
        _read(as_bz2)
    empty = tmp_path / "empty-1.0-0.conda"
    empty.write_bytes(b"")
    with pytest.raises(InvalidPackage, match="not an archive"):
        _read(empty)


def test_corrupt_byte_in_conda_is_detected(tmp_path: Path) -> None:
    path = build_conda_package(tmp_path, "corrupt", files={"share/data.bin": bytes(range(256)) * 512})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("pkg-corrupt-1.0-0.tar.zst")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidPackage, match="truncated or corrupt"):
        _read(path)


def test_truncated_payload_of_bz2_is_detected(tmp_path: Path) -> None:
    big = hashlib.sha512(b"x").digest() * 20000  # ~1.3 MB, many bz2 blocks; info/ comes first in the tar
    path = build_conda_package(tmp_path, "tail", files={"share/big.bin": big}, fmt=".tar.bz2")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 50])
    with pytest.raises(InvalidPackage, match="truncated or corrupt"):
        _read(path)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        # each link looks harmless on its own; together they escape
        (
            [("lib/d", tarfile.SYMTYPE, "."), ("lib/x", tarfile.SYMTYPE, "d/../..")],
            r"symlink 'lib/x' .* points outside",
        ),
        ([("lib/d", tarfile.SYMTYPE, "../..")], r"symlink 'lib/d' .* points outside"),
        ([("lib/d", tarfile.SYMTYPE, "/etc")], r"symlink 'lib/d' .* points outside"),
        ([("lib/d", tarfile.SYMTYPE, "C:\\Windows")], r"points outside"),
        ([("lib/loop", tarfile.SYMTYPE, "loop")], r"loops"),
        # a file written through a symlinked directory that leaves the package
        ([("lib/up", tarfile.SYMTYPE, ".."), ("lib/up/up2", tarfile.SYMTYPE, "..")], r"outside the package"),
        ([("share\\..\\..\\evil", tarfile.REGTYPE, "")], r"unsafe member path .*'\.\.' component"),
        (
            [("C:/evil", tarfile.REGTYPE, "")],
            r"unsafe member path 'C:/evil' \(a drive letter\)",
        ),
        ([("dev/fifo", tarfile.FIFOTYPE, "")], r"FIFO 'dev/fifo'"),
        ([("dev/sda", tarfile.BLKTYPE, "")], r"device file 'dev/sda'"),
    ],
)
def test_hostile_members(tmp_path: Path, members: list[tuple[str, bytes, str]], message: str) -> None:
    extra = [(tar_member(name, type=kind, linkname=link), None) for name, kind, link in members]
    path = build_hand_made_tar_bz2(tmp_path / "hostile-1.0-0.tar.bz2", "hostile", extra)
    with pytest.raises(InvalidPackage, match=message):
        _read(path)


def test_links_inside_the_package_are_fine(tmp_path: Path) -> None:
    extra = [
        (tar_member("lib/libz.so.1.2.11", 3), b"elf"),
        (tar_member("lib/libz.so.1", type=tarfile.SYMTYPE, linkname="libz.so.1.2.11"), None),
        (tar_member("lib/libz.so", type=tarfile.SYMTYPE, linkname="libz.so.1"), None),
        (tar_member("bin/tool", type=tarfile.SYMTYPE, linkname="../lib/libz.so"), None),
        (tar_member("lib/hard", type=tarfile.LNKTYPE, linkname="lib/libz.so.1.2.11"), None),
        (tar_member("share/dir/", type=tarfile.DIRTYPE), None),
    ]
    path = build_hand_made_tar_bz2(tmp_path / "links-1.0-0.tar.bz2", "links", extra)
    assert _read(path).name == "links"


@pytest.mark.parametrize(
    ("extra_index", "message"),
    [
        ({"version": "2.0"}, r"version '2.0' does not match the file name's version '1.0'"),
        ({"build": "1"}, r"build '1' does not match the file name's build '0'"),
        ({"build_number": "0"}, r"build_number must be a non-negative integer"),
        ({"build_number": True}, r"build_number must be a non-negative integer"),
        ({"subdir": None}, r"has no subdir string"),
        ({"depends": "python"}, r"depends must be a list of strings"),
    ],
)
def test_bad_index_json(tmp_path: Path, extra_index: dict, message: str) -> None:
    path = build_conda_package(tmp_path, "idx", extra_index=extra_index)
    with pytest.raises(InvalidPackage, match=message):
        _read(path)


def test_index_json_not_an_object(tmp_path: Path) -> None:
    bad = b"[1, 2]"
    extra = [(tar_member("info/index.json", len(bad)), bad)]
    path = build_hand_made_tar_bz2(tmp_path / "arr-1.0-0.tar.bz2", "arr", extra, index=False)
    with pytest.raises(InvalidPackage, match="not a JSON object"):
        _read(path)
    bad = b"{not json"
    path = build_hand_made_tar_bz2(
        tmp_path / "nojson-1.0-0.tar.bz2", "nojson", [(tar_member("info/index.json", len(bad)), bad)], index=False
    )
    with pytest.raises(InvalidPackage, match=r"info/index.json is not valid JSON"):
        _read(path)


def test_unsafe_path_in_paths_json(tmp_path: Path) -> None:
    paths = json.dumps({"paths": [{"_path": "../outside", "path_type": "hardlink"}], "paths_version": 1}).encode()
    extra = [(tar_member("info/paths.json", len(paths)), paths)]
    path = build_hand_made_tar_bz2(tmp_path / "pj-1.0-0.tar.bz2", "pj", extra)
    with pytest.raises(InvalidPackage, match=r"unsafe path '\.\./outside' in the package's file list"):
        _read(path)


def test_metadata_too_large(tmp_path: Path) -> None:
    path = build_conda_package(tmp_path, "big", description="x" * 5000)
    with pytest.raises(TooLarge, match=r"info/about.json is \d+ bytes") as exc:
        _read(path, max_metadata_bytes=4096)
    assert exc.value.status == 413
    # the payload is not metadata: a big file is fine under a small metadata limit
    path = build_conda_package(tmp_path, "bigpayload", files={"share/big": b"x" * 100_000})
    assert _read(path, max_metadata_bytes=4096).name == "bigpayload"


def test_readme_too_large(tmp_path: Path) -> None:
    path = build_conda_package(tmp_path, "bigreadme", files={"info/README.md": b"r" * 10_000, "share/x": b"x"})
    with pytest.raises(TooLarge, match=r"info/README.md"):
        _read(path, max_metadata_bytes=4096)
