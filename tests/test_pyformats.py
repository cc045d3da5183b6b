"""Reading real wheels and sdists (built here with hatchling) and refusing damaged or unsafe ones."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from pybuilders import build_python_project

from conda_platform_plugin.errors import InvalidPackage
from conda_platform_plugin.pyformats import normalize_name, read_python_package


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_python_project(tmp_path_factory.mktemp("py"), "Tiny.Thing", "1.2.0",
                                requires=["requests>=2", "idna; python_version>'3.8'"], license="MIT OR Apache-2.0",
                                summary="A tiny thing")


def test_pep503_names() -> None:
    assert normalize_name("Tiny.Thing") == normalize_name("tiny__thing") == "tiny-thing"


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_reads_core_metadata_of_real_packages(built: dict[str, Path], kind: str) -> None:
    path = built[kind]
    pkg = read_python_package(path, path.name)
    assert pkg.name == "Tiny.Thing" and pkg.normalized_name == "tiny-thing" and pkg.version == "1.2.0"
    assert pkg.packagetype == ("bdist_wheel" if kind == "wheel" else "sdist")
    assert pkg.fields["summary"] == "A tiny thing"
    assert sorted(pkg.fields["requires_dist"]) == ['idna; python_version > "3.8"', "requests>=2"]
    assert pkg.fields["requires_python"] == ">=3.8"
    assert pkg.fields["license_expression"] == "MIT OR Apache-2.0"
    assert pkg.metadata.startswith(b"Metadata-Version: ")  # verbatim, for PEP 658


def _rewrite_zip(src: Path, dst: Path, change) -> Path:  # noqa: ANN001
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            change(zout, info, zin.read(info))
    return dst


def test_refuses_bad_wheels(built: dict[str, Path], tmp_path: Path) -> None:
    wheel = built["wheel"]
    # truncated
    cut = tmp_path / wheel.name
    cut.write_bytes(wheel.read_bytes()[: wheel.stat().st_size // 2])
    with pytest.raises(InvalidPackage, match="not a readable"):
        read_python_package(cut, cut.name)
    # an unsafe member path
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    def add_evil(z, i, d) -> None:  # noqa: ANN001
        z.writestr(i, d)
        if i.filename.endswith("METADATA"):
            z.writestr("../evil.py", b"x")

    evil = _rewrite_zip(wheel, evil_dir / wheel.name, add_evil)
    with pytest.raises(InvalidPackage, match="unsafe member path"):
        read_python_package(evil, evil.name)
    # metadata that disagrees with the file name
    other = tmp_path / "other-1.2.0-py3-none-any.whl"
    other.write_bytes(wheel.read_bytes())
    with pytest.raises(InvalidPackage, match="names the project"):
        read_python_package(other, other.name)
    with pytest.raises(InvalidPackage, match="file name"):
        read_python_package(wheel, "not-a-wheel.whl")
    # no METADATA at all
    bare_dir = tmp_path / "bare"
    bare_dir.mkdir()
    bare = _rewrite_zip(wheel, bare_dir / wheel.name,
                        lambda z, i, d: None if i.filename.endswith("METADATA") else z.writestr(i, d))
    with pytest.raises(InvalidPackage, match="exactly one"):
        read_python_package(bare, bare.name)


def test_refuses_bad_sdists(built: dict[str, Path], tmp_path: Path) -> None:
    sdist = built["sdist"]
    buf = io.BytesIO()
    with tarfile.open(sdist) as tin, tarfile.open(fileobj=buf, mode="w:gz") as tout:
        for m in tin.getmembers():
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
        link = tarfile.TarInfo(f"{tin.getmembers()[0].name.split('/')[0]}/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tout.addfile(link)
    evil = tmp_path / sdist.name
    evil.write_bytes(buf.getvalue())
    with pytest.raises(InvalidPackage, match="unsafe link"):
        read_python_package(evil, evil.name)
    junk = tmp_path / "junk-1.0.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(InvalidPackage, match="not a readable"):
        read_python_package(junk, junk.name)
