"""The PACKAGES/DESCRIPTION format on the real CRAN, Posit and R-hub indexes in shared/data, and
reading R package archives (built here as R CMD build lays them out)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from builders import SHARED_DATA

from conda_platform_plugin.errors import InvalidPackage
from conda_platform_plugin.rformats import (
    PACKAGES_FIELDS,
    parse_dcf,
    parse_dependencies,
    read_r_package,
    render_dcf,
)

CRAN = SHARED_DATA / "cran"
INDEXES = {
    "PACKAGES-src.gz": 45, "PACKAGES-mac.gz": 69, "PACKAGES-win.gz": 34, "PACKAGES-win2.gz": 4,
    "PACKAGES-ppm1.gz": 4, "PACKAGES-ppm2.gz": 4, "PACKAGES-rhub": 2,
}


def _text(name: str) -> str:
    data = (CRAN / name).read_bytes()
    return (gzip.decompress(data) if name.endswith(".gz") else data).decode()


@pytest.mark.parametrize(("name", "count"), INDEXES.items())
def test_real_indexes_parse_and_round_trip(name: str, count: int) -> None:
    records = parse_dcf(_text(name))
    assert len(records) == count
    assert all("Package" in r and "Version" in r for r in records)
    assert parse_dcf(render_dcf(records)) == records
    for r in records:
        for field in ("Depends", "Imports", "LinkingTo", "Suggests"):
            if field in r:
                assert all(dep for dep, _ in parse_dependencies(r[field]))


def test_compression_variants_hold_the_same_index() -> None:
    plain = parse_dcf((CRAN / "packages" / "PACKAGES").read_text())
    assert len(plain) == 6 and all("MD5sum" in r for r in plain)
    assert parse_dcf(gzip.decompress((CRAN / "packages" / "PACKAGES.gz").read_bytes()).decode()) == plain


def test_dependencies_with_versions() -> None:
    assert parse_dependencies("R (>= 2.15.0), xtable,\n  pbapply (>=1.0)") == [
        ("R", ">= 2.15.0"), ("xtable", ""), ("pbapply", ">=1.0")]
    with pytest.raises(ValueError):
        parse_dependencies("not valid!")


def test_packages_fields_order_and_selection() -> None:
    rec = {"Title": "x", "Version": "1.0", "Package": "a", "Depends": "R (>= 3.0)"}
    assert render_dcf([rec], PACKAGES_FIELDS) == "Package: a\nVersion: 1.0\nDepends: R (>= 3.0)\n"


def _r_tarball(path: Path, name: str, description: str, extra: dict[str, bytes] | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, data in {f"{name}/DESCRIPTION": description.encode(), f"{name}/R/{name}.R": b"f <- 1\n",
                             **(extra or {})}.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_reads_source_and_binary_packages(tmp_path: Path) -> None:
    desc = "Package: tiny\nVersion: 0.1.2\nTitle: Tiny\nDepends: R (>= 3.5)\nImports: jsonlite\nLicense: MIT\n"
    src = read_r_package(_r_tarball(tmp_path / "tiny_0.1.2.tar.gz", "tiny", desc), "tiny_0.1.2.tar.gz")
    assert (src.name, src.version, src.binary) == ("tiny", "0.1.2", False)
    assert src.description["Imports"] == "jsonlite"
    built = desc + "Built: R 4.4.0; ; 2024-01-01 00:00:00 UTC; unix\n"
    binary = read_r_package(_r_tarball(tmp_path / "tiny_0.1.2.tgz", "tiny", built), "tiny_0.1.2.tgz")
    assert binary.binary


def test_refuses_bad_r_packages(tmp_path: Path) -> None:
    desc = "Package: tiny\nVersion: 0.1.2\nLicense: MIT\n"
    with pytest.raises(InvalidPackage, match="file name"):
        read_r_package(_r_tarball(tmp_path / "tiny_0.1.3.tar.gz", "tiny", desc), "tiny_0.1.3.tar.gz")
    with pytest.raises(InvalidPackage, match="unsafe"):
        read_r_package(_r_tarball(tmp_path / "tiny_0.1.2.tar.gz", "tiny", desc, {"../evil": b"x"}), "tiny_0.1.2.tar.gz")
    with pytest.raises(InvalidPackage, match="NAME_VERSION"):
        read_r_package(tmp_path / "whatever.tar.gz", "whatever.tar.gz")
    junk = tmp_path / "junk_1.0.tar.gz"
    junk.write_bytes(b"junk")
    with pytest.raises(InvalidPackage, match="not a readable"):
        read_r_package(junk, junk.name)
