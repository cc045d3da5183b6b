"""Real R against the server: ``install.packages(type = "source")`` installs a tiny pure-R package
and its dependency from a hosted channel, and through a passive CRAN mirror of a local upstream.
Skipped (with the reason printed) where Rscript is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Api, Server
from rbuilders import NO_R_REASON, RSCRIPT, build_r_source, rscript, write_cran_repo
from test_cran_mirror import BASE, wait_run
from upstream import UpstreamChannel

if RSCRIPT is None:
    print(f"\ntest_cran_r skipped: {NO_R_REASON}")
pytestmark = pytest.mark.skipif(RSCRIPT is None, reason=NO_R_REASON)


def _packages(out: Path) -> list[Path]:
    return [build_r_source(out, "greetdep", "0.3.0"),
            build_r_source(out, "greetapp", "1.2", Imports="greetdep (>= 0.3)"),
            build_r_source(out, "greetapp", "1.1", Imports="greetdep")]


def install(repos: str, lib: Path, package: str) -> str:
    lib.mkdir(parents=True, exist_ok=True)
    done = rscript(
        f'options(warn = 1); install.packages("{package}", repos = "{repos}", lib = "{lib}", type = "source", '
        f'quiet = TRUE); library("{package}", lib.loc = "{lib}", character.only = TRUE); '
        f'cat(as.character(packageVersion("{package}", lib.loc = "{lib}")), '
        f'get(paste0("hello_", "{package}"))(), "\\n")')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    return done.stdout


def test_install_packages_from_a_hosted_channel(server: Server, api: Api, tmp_path: Path) -> None:
    api.post("/api/channels", 201, json={"name": "rteam"})
    api.upload("rteam", *_packages(tmp_path / "pkgs"))
    lib = tmp_path / "lib"
    out = install(f"{server.url}/api/repo/rteam/cran", lib, "greetapp")
    assert "1.2 hello from greetapp" in out
    assert (lib / "greetdep" / "DESCRIPTION").is_file()  # the dependency came along
    # R's own view of the repository: available.packages reads our PACKAGES.gz
    listed = rscript(f'ap <- available.packages(repos = "{server.url}/api/repo/rteam/cran", type = "source"); '
                     'cat(paste(ap[, "Package"], ap[, "Version"]), sep = "\\n")')
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[:2] == ["greetapp 1.2", "greetdep 0.3.0"]
    # an older version from Archive/ by its URL, as remotes::install_version finds it
    old = rscript(f'install.packages("{server.url}/api/repo/rteam/cran/src/contrib/Archive/greetapp/greetapp_1.1.tar.gz",'
                  f' repos = NULL, type = "source", lib = "{lib}", quiet = TRUE); '
                  f'cat(as.character(packageVersion("greetapp", lib.loc = "{lib}")))')
    assert old.returncode == 0 and old.stdout.strip() == "1.1", old.stderr


def test_install_packages_through_a_passive_cran_mirror(server: Server, api: Api, tmp_path: Path) -> None:
    up = UpstreamChannel(tmp_path / "up", prefix="/cran")
    write_cran_repo(up.root, _packages(tmp_path / "pkgs")[:2])
    up.start()
    try:
        api.post("/api/channels", 201, json={"name": "mc"})
        api.post(BASE, 201, json={"name": "up", "type": "cran", "source_url": up.url, "run_now": True})
        assert wait_run(api, "up")["status"] == "completed"
        out = install(f"{server.url}/api/repo/mc/cran", tmp_path / "lib", "greetapp")
        assert "1.2 hello from greetapp" in out
        assert up.hits["src/contrib/greetapp_1.2.tar.gz"] == 1 and up.hits["src/contrib/greetdep_0.3.0.tar.gz"] == 1
    finally:
        up.stop()
