"""R (CRAN) packages, hosted: the PACKAGES format as R writes it (real indexes of shared/data),
uploads of sources and binaries (validated, nothing left behind on bad input), and the CRAN
repository the server serves (PACKAGES, tarballs, Archive/, bin/, HEAD and Range, policies)."""

from __future__ import annotations

import gzip
import re
import tarfile
from pathlib import Path

import pytest
import requests
from builders import SHARED_DATA
from conftest import Api, Server
from rbuilders import NO_R_REASON, RSCRIPT, build_r_binary, build_r_source, description, rscript, write_tar_gz

from conda_platform_plugin.rformats import PACKAGES_FIELDS, parse_dcf, render_dcf
from proxy.repo.cran_index import contrib_path, locate, render_packages, satisfies, strwrap

CRAN = SHARED_DATA / "cran"
#: indexes that R's tools::write_PACKAGES wrote (the Posit, R-hub and macOS slices were written by
#: other tools: unfolded lines, other field orders)
R_WRITTEN = ("PACKAGES-src.gz", "PACKAGES-win.gz", "PACKAGES-win2.gz")


def _text(name: str) -> str:
    data = (CRAN / name).read_bytes()
    return (gzip.decompress(data) if name.endswith(".gz") else data).decode()


# -- the format -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", R_WRITTEN)
def test_packages_render_byte_for_byte_as_r_writes_them(name: str) -> None:
    text = _text(name)
    records = parse_dcf(text)
    expected = re.sub(r"\n{3,}", "\n\n", text)  # (one stanza of the src slice has two blank lines before it)
    assert render_packages(records) == expected


def test_folding_keeps_long_fields_in_72_columns_with_continuation_lines() -> None:
    deps = ", ".join(f"package{i} (>= {i}.0-1)" for i in range(12))
    lines = strwrap(f"Imports: {deps}")
    assert len(lines) > 2 and all(len(line) < 72 for line in lines)
    assert all(line.startswith("        ") and not line.startswith("         ") for line in lines[1:])
    assert " ".join(line.strip() for line in lines) == f"Imports: {deps}"
    assert strwrap("Title: Ends here.  Then more") == ["Title: Ends here.  Then more"]  # a sentence end's two spaces


@pytest.mark.skipif(RSCRIPT is None, reason=NO_R_REASON)
def test_folding_agrees_with_r_write_dcf(tmp_path: Path) -> None:
    records = parse_dcf(_text("PACKAGES-ppm2.gz")) + parse_dcf((CRAN / "packages" / "PACKAGES").read_text())
    src = tmp_path / "in.dcf"
    src.write_text(render_dcf(records))
    out = tmp_path / "out.dcf"
    fields = ", ".join(f'"{f}"' for f in PACKAGES_FIELDS)
    done = rscript(f'db <- read.dcf("{src}"); db <- db[, intersect(c({fields}), colnames(db)), drop = FALSE]; '
                   f'db[!is.na(db) & db == ""] <- NA; write.dcf(db, "{out}")')
    assert done.returncode == 0, done.stderr
    assert render_packages(records) == out.read_text()


def test_urls_of_subdirs_are_where_r_looks() -> None:
    for subdir, path in (("cran-src", "src/contrib"), ("cran-bin-windows-4.2", "bin/windows/contrib/4.2"),
                         ("cran-bin-macosx-4.2", "bin/macosx/contrib/4.2"),
                         ("cran-bin-macosx-arm64-4.3", "bin/macosx/big-sur-arm64/contrib/4.3"),
                         ("cran-bin-linux-jammy-4.2", "bin/linux/jammy/contrib/4.2")):
        assert contrib_path(subdir) == path
        assert locate([*path.split("/"), "PACKAGES"]) == (subdir, ["PACKAGES"])
    assert satisfies("1.8-4", ">= 1.8-3") and not satisfies("1.8-4", "< 1.8") and satisfies("2.0", "")


# -- uploads ----------------------------------------------------------------------------------------
@pytest.fixture
def r_channel(api: Api) -> Api:
    api.post("/api/channels", 201, json={"name": "rpk"})
    return api


def test_upload_sources_and_binaries_into_their_subdirs(r_channel: Api, tmp_path: Path) -> None:
    api = r_channel
    src = build_r_source(tmp_path, "tinyr", "1.0.2", Imports="utils, xtable (>= 1.8)", Suggests="testthat",
                         URL="https://example.com/tinyr", License="GPL-3")
    bins = [build_r_binary(tmp_path / k, "tinyr", "1.0.2", kind=k, NeedsCompilation="yes")
            for k in ("windows", "mac", "mac-arm64", "linux")]
    out = api.upload("rpk", src, *bins)
    assert [f["subdir"] for f in out["files"]] == [
        "cran-src", "cran-bin-windows-4.2", "cran-bin-macosx-4.2", "cran-bin-macosx-arm64-4.2", "cran-bin-linux-4.2"]
    # a pure-R macOS binary names no platform: the uploader says which directory it is for
    pure = build_r_binary(tmp_path / "pure", "purer", "1.0", kind="mac")
    assert api.upload("rpk", pure, subdir="cran-bin-macosx-arm64-4.2")["files"][0]["subdir"] == \
        "cran-bin-macosx-arm64-4.2"
    f = api.get("/api/channels/rpk/files/cran-src/tinyr_1.0.2.tar.gz").json()
    assert (f["type"], f["name"], f["version"], f["license"]) == ("cran", "tinyr", "1.0.2", "GPL-3")
    rec = f["record"]
    assert rec["Package"] == "tinyr" and rec["Imports"] == "utils, xtable (>= 1.8)" and rec["Suggests"] == "testthat"
    assert rec["MD5sum"] == f["md5"] and rec["sha256"] == f["sha256"] and rec["size"] == src.stat().st_size
    assert rec["depends"] == ["utils", "xtable (>= 1.8)"] and "Title" not in rec and rec["title"]
    # a Linux binary names no distribution: the uploader may give one
    deb = build_r_binary(tmp_path / "deb", "other", "0.1", kind="linux")
    assert api.upload("rpk", deb, subdir="cran-bin-linux-jammy-4.2")["files"][0]["subdir"] == "cran-bin-linux-jammy-4.2"
    err = api.upload("rpk", src, subdir="cran-bin-windows-4.2", expect=422)["error"]
    assert "belongs in subdir 'cran-src'" in err["message"]


def _bad_packages(out: Path) -> dict[str, tuple[Path, str]]:
    out.mkdir(parents=True, exist_ok=True)
    good = build_r_source(out / "g", "okpkg", "1.0")
    not_tar = out / "junk_1.0.tar.gz"
    not_tar.write_bytes(b"this is not a tarball at all")
    unsafe = write_tar_gz(out / "evil_1.0.tar.gz", {"evil/DESCRIPTION": render_dcf([description("evil", "1.0")]).encode(),
                                                    "evil/../../etc/passwd": b"x"})
    nodesc = write_tar_gz(out / "nodesc_1.0.tar.gz", {"nodesc/R/x.R": b"1\n"})
    wrong = build_r_source(out, "named", "2.0", filename="named_1.0.tar.gz")
    link = tarfile.TarInfo("linky/R/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    linky = write_tar_gz(out / "linky_1.0.tar.gz",
                         {"linky/DESCRIPTION": render_dcf([description("linky", "1.0")]).encode()}, extra=[link])
    return {"not a tar": (not_tar, "not a readable R package"), "unsafe": (unsafe, "unsafe member path"),
            "no DESCRIPTION": (nodesc, "no nodesc/DESCRIPTION"),
            "disagreeing": (wrong, "DESCRIPTION says named 2.0, the file name named 1.0"),
            "unsafe link": (linky, "unsafe link"), "good": (good, "")}


def test_bad_r_packages_are_422_and_leave_nothing_behind(server: Server, r_channel: Api, tmp_path: Path) -> None:
    api = r_channel
    cases = _bad_packages(tmp_path)
    good = cases.pop("good")[0]
    for what, (path, message) in cases.items():
        err = api.upload("rpk", good, path, expect=422)["error"]  # with a good file: all or nothing
        assert message in err["message"], (what, err)
    assert api.get("/api/channels/rpk/files").json()["total"] == 0
    assert not list((server.data_dir / "blobs" / "tmp").iterdir()) if (server.data_dir / "blobs" / "tmp").exists() \
        else True
    assert requests.get(f"{server.url}/api/repo/rpk/cran/src/contrib/PACKAGES", timeout=30).status_code == 404


# -- serving ----------------------------------------------------------------------------------------
def test_repository_serves_packages_tarballs_archive_and_binaries(server: Server, r_channel: Api,
                                                                   tmp_path: Path) -> None:
    api = r_channel
    old = build_r_source(tmp_path / "a", "tinyr", "1.0.0")
    new = build_r_source(tmp_path / "b", "tinyr", "1.10.0", Depends="R (>= 3.5)",
                         Imports=", ".join(f"dependency{i} (>= {i}.0)" for i in range(8)))
    dep = build_r_source(tmp_path, "Apkg", "0.1")
    win = build_r_binary(tmp_path / "w", "tinyr", "1.10.0", kind="windows")
    api.upload("rpk", old, new, dep, win)
    base = f"{server.url}/api/repo/rpk/cran"
    r = requests.get(f"{base}/src/contrib/PACKAGES", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    stanzas = parse_dcf(r.text)
    assert [(s["Package"], s["Version"]) for s in stanzas] == [("Apkg", "0.1"), ("tinyr", "1.10.0")]
    assert "\n        " in r.text  # folded as R folds
    rec = api.get("/api/channels/rpk/files/cran-src/tinyr_1.10.0.tar.gz").json()["record"]
    assert r.text == render_packages([api.get("/api/channels/rpk/files/cran-src/Apkg_0.1.tar.gz").json()["record"], rec])
    assert gzip.decompress(requests.get(f"{base}/src/contrib/PACKAGES.gz", timeout=30).content).decode() == r.text
    assert stanzas[1]["MD5sum"] == rec["md5"] and stanzas[1]["NeedsCompilation"] == "no"
    # the newest at the top, the older in Archive/NAME/
    assert requests.get(f"{base}/src/contrib/tinyr_1.10.0.tar.gz", timeout=30).content == new.read_bytes()
    assert requests.get(f"{base}/src/contrib/Archive/tinyr/tinyr_1.0.0.tar.gz", timeout=30).content == old.read_bytes()
    assert requests.get(f"{base}/src/contrib/tinyr_1.0.0.tar.gz", timeout=30).content == old.read_bytes()
    f = api.get("/api/channels/rpk/files/cran-src/tinyr_1.0.0.tar.gz").json()
    assert f["download_url"] == "/api/repo/rpk/cran/src/contrib/tinyr_1.0.0.tar.gz"
    assert api.get("/api/channels/rpk/files/cran-bin-windows-4.2/tinyr_1.10.0.zip").json()["download_url"] == \
        "/api/repo/rpk/cran/bin/windows/contrib/4.2/tinyr_1.10.0.zip"
    for missing in ("src/contrib/Archive/tinyr/tinyr_1.10.0.tar.gz",
                    "src/contrib/Archive/other/tinyr_1.0.0.tar.gz", "src/nothing",
                    "bin/windows/contrib/4.1/PACKAGES"):
        resp = requests.get(f"{base}/{missing}", timeout=30)
        assert resp.status_code == 404 and resp.json()["error"]["code"], missing
    # HEAD and Range on files
    head = requests.head(f"{base}/src/contrib/tinyr_1.10.0.tar.gz", timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == new.stat().st_size
    part = requests.get(f"{base}/src/contrib/tinyr_1.10.0.tar.gz", headers={"Range": "bytes=10-19"}, timeout=30)
    assert part.status_code == 206 and part.content == new.read_bytes()[10:20]
    # binaries with their own PACKAGES
    wp = parse_dcf(requests.get(f"{base}/bin/windows/contrib/4.2/PACKAGES", timeout=30).text)
    assert [(s["Package"], s["Version"]) for s in wp] == [("tinyr", "1.10.0")] and "Built" in wp[0]
    assert requests.get(f"{base}/bin/windows/contrib/4.2/tinyr_1.10.0.zip", timeout=30).content == win.read_bytes()
    # deleting the newest makes the older one current again
    api.request("DELETE", "/api/channels/rpk/files/cran-src/tinyr_1.10.0.tar.gz")
    assert [s["Version"] for s in parse_dcf(requests.get(f"{base}/src/contrib/PACKAGES", timeout=30).text)
            if s["Package"] == "tinyr"] == ["1.0.0"]
    assert requests.get(f"{base}/src/contrib/tinyr_1.0.0.tar.gz", timeout=30).content == old.read_bytes()


def test_channel_policy_leaves_excluded_r_packages_out(server: Server, r_channel: Api, tmp_path: Path) -> None:
    api = r_channel
    api.upload("rpk", build_r_source(tmp_path, "freepkg", "1.0", License="MIT + file LICENSE"),
               build_r_source(tmp_path, "gplpkg", "1.0", License="GPL-3"))
    api.post("/api/policies", 201, json={"name": "no-gpl3", "rules": [{"kind": "license", "deny_families": ["GPL3"]}]})
    api.post("/api/policies/no-gpl3/apply", json={"channel": "rpk"})
    base = f"{server.url}/api/repo/rpk/cran/src/contrib"
    assert [s["Package"] for s in parse_dcf(requests.get(f"{base}/PACKAGES", timeout=30).text)] == ["freepkg"]
    assert requests.get(f"{base}/gplpkg_1.0.tar.gz", timeout=30).status_code == 404
    assert requests.get(f"{base}/freepkg_1.0.tar.gz", timeout=30).status_code == 200


def test_private_channel_cran_needs_a_token(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "secret", "private": True})
    api.upload("secret", build_r_source(tmp_path, "hidden", "1.0"))
    assert requests.get(f"{server.url}/api/repo/secret/cran/src/contrib/PACKAGES", timeout=30).status_code == 404
    r = requests.get(f"{server.url}/t/{server.admin_token}/api/repo/secret/cran/src/contrib/PACKAGES", timeout=30)
    assert r.status_code == 200 and "Package: hidden" in r.text


def test_cli_uploads_r_packages_and_prints_one_line_for_bad_ones(server: Server, r_channel: Api,
                                                                 tmp_path: Path) -> None:
    from test_cli import cli, error_line

    good = build_r_source(tmp_path, "clipkg", "0.9")
    r = cli(server, "upload", "--channel", "rpk", str(good))
    assert "clipkg_0.9.tar.gz" in r.stdout and "cran-src" in r.stdout, r.stdout
    bad = build_r_source(tmp_path / "bad", "clipkg", "1.0", filename="clipkg_2.0.tar.gz")
    r = cli(server, "upload", "--channel", "rpk", str(bad), code=1)
    assert "DESCRIPTION says clipkg 1.0, the file name clipkg 2.0" in error_line(r)
    assert [f["filename"] for f in r_channel.get("/api/channels/rpk/files").json()["items"]] == ["clipkg_0.9.tar.gz"]


def test_subchannels_and_a_recreated_channel_serve_their_own_r_packages(server: Server, r_channel: Api,
                                                                        tmp_path: Path) -> None:
    api = r_channel
    api.post("/api/channels/rpk/subchannels", 201, json={"name": "dev"})
    api.upload("rpk/dev", build_r_source(tmp_path, "devpkg", "0.0.1"))
    r = requests.get(f"{server.url}/api/repo/rpk/dev/cran/src/contrib/PACKAGES", timeout=30)
    assert [s["Package"] for s in parse_dcf(r.text)] == ["devpkg"]
    assert requests.get(f"{server.url}/api/repo/rpk/dev/cran/src/contrib/devpkg_0.0.1.tar.gz",
                        timeout=30).status_code == 200
    # a channel deleted and made again (maybe with the same id and generations) serves what it has now
    for name in ("first", "second"):
        api.post("/api/channels", 201, json={"name": "again"})
        api.upload("again", build_r_source(tmp_path / name, name, "1.0"))
        base = f"{server.url}/api/repo/again/cran/src/contrib"
        assert [s["Package"] for s in parse_dcf(requests.get(f"{base}/PACKAGES", timeout=30).text)] == [name]
        assert requests.get(f"{base}/{name}_1.0.tar.gz", timeout=30).status_code == 200
        api.request("DELETE", "/api/channels/again")


@pytest.mark.skipif(RSCRIPT is None, reason=NO_R_REASON)
def test_packages_rds_is_the_matrix_r_reads(server: Server, r_channel: Api, tmp_path: Path) -> None:
    """available.packages() asks for PACKAGES.rds first: R reads ours as the matrix of PACKAGES."""
    r_channel.upload("rpk", build_r_source(tmp_path, "zeta", "1.0", License="GPL (>= 2) | file LICENCE — ünï"),
                     build_r_source(tmp_path, "alpha", "0.1-2", Imports=", ".join(f"dep{i} (>= {i}.0)" for i in range(9)),
                                    LinkingTo="Rcpp"))
    base = f"{server.url}/api/repo/rpk/cran/src/contrib"
    for name in ("PACKAGES", "PACKAGES.rds"):
        (tmp_path / name).write_bytes(requests.get(f"{base}/{name}", timeout=30).content)
    done = rscript(f'x <- readRDS("{tmp_path / "PACKAGES.rds"}"); y <- read.dcf("{tmp_path / "PACKAGES"}"); '
                   'rownames(y) <- y[, "Package"]; y[] <- gsub("[[:space:]]+", " ", y); '
                   'cat(identical(x, y[, colnames(x)]), ncol(x) == ncol(y), Encoding(x["zeta", "License"]))')
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TRUE", "TRUE", "UTF-8"], done.stdout
