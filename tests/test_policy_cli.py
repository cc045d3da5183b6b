"""The installed ``conda-platform`` executable: policy, cve and package cves commands against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import test_cli
from builders import SHARED_DATA, build_conda_package
from conftest import Api, Server


def test_policy_and_cve_commands(server: Server, api: Api, tmp_path: Path) -> None:
    cli, cli_json = test_cli.cli, test_cli.cli_json
    api.post("/api/channels", 201, json={"name": "team"})
    out = tmp_path / "pk"
    api.upload("team", build_conda_package(out, "good", "1.0", license="MIT"),
               build_conda_package(out, "gpl", "1.0", license="GPL-3.0-only"),
               build_conda_package(out, "app", "1.0", depends=["gpl"]),
               build_conda_package(out, "pip", "23.2.1", "pyhd8ed1ab_0", noarch="python", depends=["python"]),
               build_conda_package(out, "pip", "24.0", "pyhd8ed1ab_0", noarch="python", depends=["python"]))

    rules = tmp_path / "rules.yaml"
    rules.write_text("description: no GPLv3\nrules:\n  - kind: license\n    deny_families: [GPL3]\n")
    r = cli(server, "policy", "create", "prod", "-f", str(rules))
    assert r.stdout.strip() == "created policy prod (version 1, 1 rule(s))"
    r = cli(server, "policy", "preview", "prod", "-c", "team")
    assert "gpl-1.0-0.conda" in r.stdout and "license" in r.stdout
    assert "app-1.0-0.conda" in r.stdout and "gpl" in r.stdout  # uninstallable, with the failing spec
    preview = cli_json(server, "policy", "preview", "prod", "-c", "team")
    assert (preview["excluded"], preview["uninstallable_count"]) == (1, 1)

    r = cli(server, "policy", "apply", "prod", "-c", "team")
    assert r.stdout.startswith("policy prod applied to channel team (generation")
    listed = cli_json(server, "policy", "list")
    assert [(p["name"], p["channels"]) for p in listed["items"]] == [("prod", ["team"])]
    assert "prod" in cli(server, "policy", "list").stdout and "team" in cli(server, "policy", "list").stdout

    r = cli(server, "policy", "edit", "prod", "--rule", '{"kind": "keep_newest", "count": 1}')
    assert r.stdout.strip() == "policy prod is now version 2"
    shown = cli(server, "policy", "show", "prod").stdout
    assert "keep_newest" in shown and "count=1" in shown

    bad = cli(server, "policy", "create", "x", "--rule", '{"kind": "cve", "min_score": 42}', code=1)
    assert "0 to 10" in test_cli.error_line(bad)
    r = cli(server, "policy", "delete", "prod", "--yes", code=1)
    assert "applied to team" in test_cli.error_line(r)
    cli(server, "policy", "detach", "prod", "-c", "team")
    cli(server, "policy", "delete", "prod", "--yes")

    r = cli(server, "cve", "import", str(SHARED_DATA / "osv" / "pysec"))
    assert r.stdout.strip() == "imported 133 advisories: 133 new, 0 updated, 0 unchanged"
    r = cli(server, "cve", "import", str(SHARED_DATA / "osv" / "pysec_selected.osv.json"))
    assert r.stdout.strip() == "imported 133 advisories: 0 new, 0 updated, 133 unchanged"
    assert "PYSEC-2023-228" in cli(server, "cve", "list", "--package", "pip").stdout
    shown = cli_json(server, "cve", "show", "CVE-2023-5752")
    assert shown["id"] == "PYSEC-2023-228" and shown["score"] == 3.3

    r = cli(server, "package", "cves", "team", "pip")
    assert "1 of 7 known advisories affect its files" in r.stdout
    assert "CVE-2023-5752" in r.stdout and "23.2.1" in r.stdout
    data = json.loads(cli(server, "package", "cves", "team", "pip", "--json").stdout)
    assert data["affecting"] == 1

    shown = cli(server, "package", "show", "team", "gpl").stdout
    assert "GPL-3.0-only (family GPL3, OSI)" in shown

    missing = cli(server, "cve", "import", str(tmp_path / "nope"), code=1)
    assert "does not exist" in test_cli.error_line(missing)
