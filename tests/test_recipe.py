"""recipe/meta.yaml agrees with pyproject.toml: version, run requirements (names mapped from PyPI to
conda where they differ, the same version bounds), the console script, and the test commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
#: PyPI name -> conda package name, where they differ
CONDA_NAMES = {"msgpack": "msgpack-python"}
#: what a PyPI extra becomes in conda: sqlalchemy[asyncio] needs greenlet
EXTRA_PACKAGES = {("sqlalchemy", "asyncio"): ["greenlet"]}


def _recipe() -> dict:
    text = (ROOT / "recipe" / "meta.yaml").read_text()
    version = re.search(r'{%\s*set\s+version\s*=\s*"([^"]+)"\s*%}', text).group(1)
    text = re.sub(r"{%.*?%}", "", text).replace("{{ version }}", version).replace("{{ PYTHON }}", "python")
    return yaml.safe_load(text)


def _conda_requirements(reqs: list[str]) -> dict[str, str]:
    out = {}
    for line in reqs:
        name, _, spec = line.partition(" ")
        out[name] = spec.replace(" ", "")
    return out


def test_recipe_agrees_with_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    recipe = _recipe()
    assert recipe["package"]["version"] == project["version"]
    assert recipe["build"]["noarch"] == "python"
    expected = {"python": project["requires-python"]}
    for line in project["dependencies"] + project["optional-dependencies"]["conda"]:
        req = Requirement(line)
        name = CONDA_NAMES.get(req.name.lower(), req.name.lower())
        expected[name] = str(req.specifier)
        for extra in sorted(req.extras):
            for package in EXTRA_PACKAGES[(req.name.lower(), extra)]:
                expected[package] = ""
    run = _conda_requirements(recipe["requirements"]["run"])
    constrained = _conda_requirements(recipe["requirements"].get("run_constrained", []))
    # conda-content-trust is optional (the plugin verifies without it): a constraint, not a requirement
    assert {**run, **constrained} == expected
    assert set(constrained) == {"conda-content-trust"}
    scripts = [f"{k} = {v}" for k, v in project["scripts"].items()]
    assert recipe["build"]["entry_points"] == scripts
    plugin = project["entry-points"]["conda"]
    assert plugin == {"conda-platform": "conda_platform_plugin.plugin"}
    commands = recipe["test"]["commands"]
    assert "conda-platform --help" in commands and "conda platform --help" in commands
    assert any("conda_platform_plugin.plugin" in c for c in commands)


def test_only_plugin_imports_conda() -> None:
    """conda is optional: nothing but plugin.py may import it."""
    offenders = []
    for path in [*ROOT.glob("conda_platform_plugin/**/*.py"), *ROOT.glob("proxy/**/*.py")]:
        if path.name == "plugin.py" and path.parent.name == "conda_platform_plugin":
            continue
        if re.search(r"^\s*(from conda(\.| import)|import conda(\.|$|\s))", path.read_text(), re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
