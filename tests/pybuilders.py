"""Build real Python packages (wheels and sdists of tiny projects) with hatchling, as pip would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BUILD = """
import sys, hatchling.build as b
out, kind = sys.argv[1], sys.argv[2]
print((b.build_wheel if kind == "wheel" else b.build_sdist)(out))
"""


def build_python_project(out_dir: Path, name: str, version: str = "1.0", *, requires: Sequence[str] = (),
                         requires_python: str = ">=3.8", license: str = "MIT", summary: str = "",
                         readme: str = "") -> dict[str, Path]:
    """Write a tiny project ``name`` and build its wheel and sdist into ``out_dir``."""
    out_dir = Path(out_dir)
    src = out_dir / "src" / f"{name}-{version}"
    module = name.replace("-", "_").replace(".", "_").lower()
    (src / module).mkdir(parents=True, exist_ok=True)
    (src / module / "__init__.py").write_text(f'__version__ = "{version}"\n')
    deps = ", ".join(f'"{r}"' for r in requires)
    (src / "README.md").write_text(readme or f"# {name}\n\n{summary or 'A test project.'}\n")
    (src / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
description = "{summary or 'A test project.'}"
readme = "README.md"
requires-python = "{requires_python}"
license = "{license}"
dependencies = [{deps}]

[tool.hatch.build.targets.wheel]
packages = ["{module}"]
""")
    built = {}
    for kind in ("wheel", "sdist"):
        r = subprocess.run([sys.executable, "-c", BUILD, str(out_dir), kind], cwd=src, capture_output=True,
                           text=True, check=True)
        built[kind] = out_dir / r.stdout.strip().splitlines()[-1]
    return built
