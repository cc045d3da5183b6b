"""Build tiny real R packages for tests: sources laid out as ``R CMD build`` makes them (written
here with tarfile, no R needed), binaries with ``R CMD INSTALL --build`` when Rscript is on the
machine (else a hand-made binary layout with ``Built:``), and a CRAN-style repository directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

from builders import FIXED_MTIME

from conda_platform_plugin.rformats import read_r_package, render_dcf
from proxy.repo.cran_index import render_packages

RSCRIPT = shutil.which("Rscript")
R = shutil.which("R")
NO_R_REASON = "Rscript is not on PATH (.ci/run installs Debian's r-base-core)"


def description(name: str, version: str, **fields: str) -> dict[str, str]:
    """A DESCRIPTION as a package author writes it; keyword fields add or override (``Imports="x"``)."""
    desc = {
        "Package": name,
        "Version": version,
        "Title": f"The {name} Test Package",
        "Description": f"A tiny package ({name}) built by the tests. It has one function that\n"
                       "returns a greeting.",
        "License": "MIT + file LICENSE",
        "Authors@R": 'person("Test", "Author", email = "t@example.com", role = c("aut", "cre"))',
        "Encoding": "UTF-8",
        "NeedsCompilation": "no",
    }
    desc.update(fields)
    return {k: v for k, v in desc.items() if v is not None}


def _sources(name: str, desc: dict[str, str]) -> dict[str, bytes]:
    fn = name.replace(".", "_")
    imports = [d.strip().split(" ")[0].split("(")[0] for d in desc.get("Imports", "").split(",") if d.strip()]
    namespace = f"export(hello_{fn})\n" + "".join(f"import({i})\n" for i in imports)
    return {
        f"{name}/DESCRIPTION": render_dcf([desc]).encode(),
        f"{name}/NAMESPACE": namespace.encode(),
        f"{name}/R/hello.R": f'hello_{fn} <- function() "hello from {name}"\n'.encode(),
        f"{name}/LICENSE": b"YEAR: 2024\nCOPYRIGHT HOLDER: Test Author\n",
    }


def write_tar_gz(path: Path, members: dict[str, bytes], *, extra: list[tarfile.TarInfo] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
        dirs = sorted({str(Path(m).parent) for m in members if "/" in m})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if info.isfile() else None)
    return path


def build_r_source(out_dir: Path, name: str, version: str = "1.0.0", *, filename: str | None = None,
                   **fields: str) -> Path:
    """``NAME_VERSION.tar.gz`` with NAME/DESCRIPTION, NAMESPACE, R/ and LICENSE."""
    desc = description(name, version, **fields)
    return write_tar_gz(Path(out_dir) / (filename or f"{name}_{version}.tar.gz"), _sources(name, desc))


def build_r_binary(out_dir: Path, name: str, version: str = "1.0.0", *, kind: str = "linux",
                   r_version: str = "4.2.2", **fields: str) -> Path:
    """A binary package as ``R CMD INSTALL --build`` lays it out (an installed package with
    ``Built:``): ``kind`` linux (NAME_VERSION_R_<platform>.tar.gz), mac (.tgz) or windows (.zip)."""
    platform = {"linux": "x86_64-pc-linux-gnu", "mac": "x86_64-apple-darwin17.0",
                "mac-arm64": "aarch64-apple-darwin20", "windows": "x86_64-w64-mingw32"}[kind]
    os_type = "windows" if kind == "windows" else "unix"
    desc = description(name, version, **fields)
    # a package with compiled code names its platform in Built:, a pure-R one leaves it empty
    compiled = desc.get("NeedsCompilation") == "yes"
    desc["Built"] = f"R {r_version}; {platform if compiled else ''}; 2024-01-02 03:04:05 UTC; {os_type}"
    members = {
        f"{name}/DESCRIPTION": render_dcf([desc]).encode(),
        f"{name}/NAMESPACE": _sources(name, desc)[f"{name}/NAMESPACE"],
        f"{name}/R/{name}": b"lazy-load stub\n",
        f"{name}/Meta/package.rds": b"X\n",
    }
    out = Path(out_dir)
    if kind == "windows":
        path = out / f"{name}_{version}.zip"
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            for m, data in members.items():
                zf.writestr(m, data)
        return path
    if kind.startswith("mac"):
        return write_tar_gz(out / f"{name}_{version}.tgz", members)
    return write_tar_gz(out / f"{name}_{version}_R_{platform}.tar.gz", members)


def r_install_build(source: Path, out_dir: Path) -> Path:
    """A real binary: ``R CMD INSTALL --build`` of a source tarball (needs R)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "lib"
    lib.mkdir(exist_ok=True)
    before = set(out_dir.iterdir())
    subprocess.run([R, "CMD", "INSTALL", "--build", "--no-test-load", "-l", str(lib), str(source.resolve())],
                   cwd=out_dir, check=True, capture_output=True, timeout=120)
    (built,) = [p for p in set(out_dir.iterdir()) - before if p.is_file()]
    return built


def rscript(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run R code; the completed process (stdout/stderr as text)."""
    return subprocess.run([RSCRIPT, "--vanilla", "-e", code], capture_output=True, text=True, timeout=timeout)


def write_cran_repo(root: Path, packages: list[Path], *, sha256: bool = False, contrib: str = "src/contrib") -> Path:
    """A CRAN-style repository directory: the files in ``contrib`` (e.g. bin/windows/contrib/4.2)
    with PACKAGES and PACKAGES.gz as write_PACKAGES writes them (MD5sum; ``sha256``: also SHA256,
    as R-hub's have)."""
    contrib = Path(root) / contrib
    contrib.mkdir(parents=True, exist_ok=True)
    records = []
    for path in packages:
        target = contrib / path.name
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        desc = read_r_package(target, target.name).description
        data = target.read_bytes()
        rec = {**desc, "MD5sum": hashlib.md5(data).hexdigest()}
        if sha256:
            rec["SHA256"] = hashlib.sha256(data).hexdigest()
        records.append(rec)
    records.sort(key=lambda r: r["Package"].lower())
    text = render_packages(records)  # (SHA256 is one of the fields kept, after MD5sum, as R-hub's have it)
    (contrib / "PACKAGES").write_text(text)
    (contrib / "PACKAGES.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    return contrib
