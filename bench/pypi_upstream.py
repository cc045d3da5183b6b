"""A static PEP 503 simple index of tiny projects, made once for bench_pypi.py and served by nginx.

Every proxy in the PyPI benchmark mirrors the same upstream, so the upstream is made of plain files
that any static server can serve with no work per request:

    simple/index.html                 the project list (PEP 503)
    simple/<project>/index.html       one page per project: links with #sha256=, data-requires-python,
                                      data-core-metadata / data-dist-info-metadata (PEP 658/714)
    files/<project>/<wheel>           wheels, each with <wheel>.metadata (its METADATA, PEP 658)
    files/<project>/<sdist>           sdists (.tar.gz with PKG-INFO)

Wheels are written directly with zipfile (a wheel is a zip with METADATA, WHEEL and RECORD): a
thousand files take a second or two, where building each with a build backend would take minutes.
A few more projects (``bench-big0``, ``bench-big1``, ...) have a single wheel each with an incompressible
payload, for the cold fetch of a big file. The tree is cached under bench/out/ (a ``.done`` marker says it is complete).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REQUIRES_PYTHON = ">=3.8"


@dataclass(frozen=True)
class Upstream:
    """Where the tree is, and what it holds (project names are PEP 503-normalized)."""

    root: Path
    projects: list[str]
    versions: int
    big: list[tuple[str, str, str]]  # (project, wheel filename, sha256) of each big wheel

    @property
    def all_projects(self) -> list[str]:
        return [*self.projects, *(b[0] for b in self.big)]


def project_name(i: int) -> str:
    """``bench-proj0007``: normalized names with a '-', files with a '_' (``bench_proj0007-1.0.0.tar.gz``)."""
    return f"bench-proj{i:04d}"


def _dist(name: str) -> str:
    """The distribution name as it appears in file names (PEP 427 escaping)."""
    return name.replace("-", "_")


def _metadata(name: str, version: str) -> bytes:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: A benchmark project.\n"
            f"License: MIT\nRequires-Python: {REQUIRES_PYTHON}\n\n").encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(out_dir: Path, name: str, version: str, payload: bytes = b"") -> tuple[Path, bytes]:
    """A valid pure-Python wheel of ``name`` ``version``; returns (its path, its METADATA bytes)."""
    dist = _dist(name)
    info = f"{dist}-{version}.dist-info"
    meta = _metadata(name, version)
    members = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench_pypi\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n",
    }
    if payload:
        members[f"{dist}/payload.bin"] = payload
    record = "\n".join(_record_line(p, d) for p, d in members.items()) + f"\n{info}/RECORD,,\n"
    members[f"{info}/RECORD"] = record.encode()
    path = out_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            method = zipfile.ZIP_STORED if member.endswith(".bin") else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(member, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=method)
    return path, meta


def write_sdist(out_dir: Path, name: str, version: str) -> Path:
    """A minimal sdist (``NAME-VERSION.tar.gz`` with PKG-INFO, PEP 625 naming)."""
    base = f"{_dist(name)}-{version}"
    path = out_dir / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, data in ((f"{base}/PKG-INFO", _metadata(name, version)),
                             (f"{base}/{_dist(name)}/__init__.py", f'__version__ = "{version}"\n'.encode())):
            ti = tarfile.TarInfo(member)
            ti.size, ti.mtime = len(data), 1704067200
            tf.addfile(ti, io.BytesIO(data))
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _project_page(name: str, links: list[tuple[Path, str | None]]) -> str:
    """PEP 503 page; ``links`` are (file, sha256 of its .metadata or None for sdists)."""
    rp = html.escape(REQUIRES_PYTHON)
    lines = ["<!DOCTYPE html>", "<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">",
             f"<title>Links for {name}</title></head><body><h1>Links for {name}</h1>"]
    for path, meta_sha in links:
        attrs = f' data-requires-python="{rp}"'
        if meta_sha:
            attrs += f' data-core-metadata="sha256={meta_sha}" data-dist-info-metadata="sha256={meta_sha}"'
        lines.append(f'<a href="../../files/{name}/{path.name}#sha256={_sha256(path)}"{attrs}>{path.name}</a><br>')
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def make_upstream(base: Path, projects: int, versions: int, big_mb: int, big_count: int) -> Upstream:
    """Build (or reuse) the tree under ``base``/pypi-upstream-v3-P×V-bigM×B/."""
    root = base / f"pypi-upstream-v3-{projects}x{versions}-big{big_mb}x{big_count}"
    names = [project_name(i) for i in range(projects)]
    bigs = [f"bench-big{i}" for i in range(big_count)]
    if not (root / ".done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        for name in [*names, *bigs]:
            files = root / "files" / name
            files.mkdir(parents=True)
            links: list[tuple[Path, str | None]] = []
            if name in bigs:
                wheel, meta = write_wheel(files, name, "1.0", payload=os.urandom(big_mb * 1_000_000))
                (files / f"{wheel.name}.metadata").write_bytes(meta)
                links.append((wheel, hashlib.sha256(meta).hexdigest()))
            for v in range(versions if name in names else 0):
                version = f"1.{v}.0"
                wheel, meta = write_wheel(files, name, version)
                (files / f"{wheel.name}.metadata").write_bytes(meta)
                links += [(write_sdist(files, name, version), None), (wheel, hashlib.sha256(meta).hexdigest())]
            page = root / "simple" / name
            page.mkdir(parents=True)
            (page / "index.html").write_text(_project_page(name, links))
        listing = "".join(f'<a href="{n}/">{n}</a><br>\n' for n in [*names, *bigs])
        (root / "simple" / "index.html").write_text(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            f"<title>Simple index</title></head><body>\n{listing}</body></html>\n")
        (root / ".done").write_text("ok\n")
    big = []
    for name in bigs:
        wheel = f"{_dist(name)}-1.0-py3-none-any.whl"
        big.append((name, wheel, _sha256(root / "files" / name / wheel)))
    return Upstream(root=root, projects=names, versions=versions, big=big)
