"""Which reader takes an upload: a filename that fits two types is decided by the contents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, Server
from pybuilders import build_python_project
from rbuilders import build_r_source, write_tar_gz


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("data")).start()
    Api(s).post("/api/channels", 201, json={"name": "mixed"})
    yield s
    s.stop()


def test_an_sdist_in_r_shape_is_a_python_file(server: Server, tmp_path: Path) -> None:
    """iso_639-0.4.5.tar.gz reads as R's NAME_VERSION too (iso, 639-0.4.5); it has PKG-INFO, not DESCRIPTION."""
    sdist = build_python_project(tmp_path / "iso", "iso-639", "0.4.5")["sdist"]
    assert sdist.name == "iso_639-0.4.5.tar.gz"
    f = Api(server).upload("mixed", sdist)["files"][0]
    assert (f["type"], f["subdir"], f["name"], f["version"]) == ("python", "pypi", "iso-639", "0.4.5")


def test_an_r_package_in_sdist_shape_is_an_r_file(server: Server, tmp_path: Path) -> None:
    source = build_r_source(tmp_path, "tinyr", "1.0-2")
    assert source.name == "tinyr_1.0-2.tar.gz"  # an sdist name too: project "tinyr_1.0", version 2
    f = Api(server).upload("mixed", source)["files"][0]
    assert (f["type"], f["subdir"], f["name"], f["version"]) == ("cran", "cran-src", "tinyr", "1.0-2")


def test_a_file_no_reader_takes_gets_the_first_readers_reason(server: Server, tmp_path: Path) -> None:
    blobs = server.data_dir / "blobs"
    before = sorted(p for p in blobs.rglob("*") if p.is_file())
    neither = write_tar_gz(tmp_path / "thing_1.0.tar.gz", {"thing/README": b"neither R nor Python\n"})
    r = Api(server).upload("mixed", neither, expect=422)
    assert r["error"]["code"] == "invalid_package" and "DESCRIPTION" in r["error"]["message"]
    assert sorted(p for p in blobs.rglob("*") if p.is_file()) == before
