"""Client-facing repository protocols."""

from __future__ import annotations

from conda_platform_plugin.names import subdir_type


def repo_path(subdir: str, filename: str) -> str:
    """Where a file is below its channel's repository URL (``/api/repo/<ch>/…``), for every type:
    conda files in their subdir, python files under ``pypi/files/``, R files in their CRAN directory."""
    kind = subdir_type(subdir)
    if kind == "python":
        return f"pypi/files/{filename}"
    if kind == "cran":
        from .cran_index import contrib_path  # (it imports the store, which imports this module)

        return f"cran/{contrib_path(subdir)}/{filename}"
    return f"{subdir}/{filename}"
