"""The PyPI simple index of a channel, rendered once per published generation (contract 3).

Layout of ``Publisher.subdir_dir(cid, "pypi", gen)``::

    simple.html  simple.json       the project list (PEP 503 HTML, PEP 691 JSON)
    p/<project>.html  .json        each project's page (hashes, requires-python, yanked, PEP 700
                                   size and upload-time, PEP 658/714 core-metadata)
    m/<filename>.metadata          the core metadata of each file that has it (PEP 658)

Serving (proxy/repo/pypi.py) then answers static files. A render after a small change links the
pages of the unchanged projects from the previous render instead of writing them again. The
channel's policy filters uploaded files (mirrored ones were filtered by their mirror's run).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import orjson
import sqlalchemy as sa

from conda_platform_plugin.versions import version_key

from ..ingest.python import core_metadata
from ..store.publish import visible_at_unindexed
from ..store.tables import files
from ..store.times import iso_time

if TYPE_CHECKING:
    from conda_platform_plugin.policy import CompiledPolicy

    from ..store.publish import Publisher

API_VERSION = "1.1"
#: a PEP 503-normalized name: safe as a file name
SAFE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?")
#: where the pages link files: relative to /pypi/simple/<project>/ (so /t/<token>/ prefixes work)
FILES_REL = "../../files/"


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


class PypiRenderer:
    """IndexRenderer of the "python" type (registered in Platform.__init__)."""

    async def render(self, publisher: Publisher, cid: int, subdir: str, gen: int, previous: int | None,
                     names: set[str], *, force: bool, policy: CompiledPolicy | None) -> int:
        out = publisher.subdir_dir(cid, subdir, gen)
        prev_dir = publisher.subdir_dir(cid, subdir, previous) if previous is not None else None
        full = force or prev_dir is None or not (prev_dir / "simple.json").is_file()
        base = sa.select(files.c.name, files.c.filename, files.c.version, files.c.record, files.c.mirror_id,
                         files.c.uploaded_at, files.c.contents).where(
            files.c.channel_id == cid, files.c.subdir == subdir, visible_at_unindexed(gen))
        rows: list = []
        async with publisher.db.read() as conn:
            if full:
                rows = (await conn.execute(base)).all()
            else:
                for chunk in _chunks(sorted(names), 500):
                    rows.extend((await conn.execute(base.where(files.c.name.in_(chunk)))).all())
        return await asyncio.to_thread(_write, out, subdir, rows, None if full else (prev_dir, names), policy)


def _write(out: Path, subdir: str, rows: list, incremental: tuple[Path, set[str]] | None,
           policy: CompiledPolicy | None) -> int:
    by_name: dict[str, list] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r)
    if policy is not None:  # uploaded files only: a mirror's were judged by the mirror's run
        for name, items in by_name.items():
            mine = {r.filename: orjson.loads(r.record) for r in items if r.mirror_id is None}
            if mine:
                excluded = policy.exclusions(subdir, mine).keys()
                if excluded:
                    by_name[name] = [r for r in items if r.filename not in excluded]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "p").mkdir(parents=True)
    (tmp / "m").mkdir()
    projects: dict[str, int] = {}
    if incremental is not None:
        prev_dir, changed = incremental
        for name, count in orjson.loads((prev_dir / "simple.json").read_bytes())["_counts"].items():
            if name not in changed:
                _link_project(prev_dir, tmp, name)
                projects[name] = count
    for name, items in by_name.items():
        if items and SAFE_NAME.fullmatch(name):
            projects[name] = _write_project(tmp, name, items)
    _write_list(tmp, projects)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return sum(projects.values())


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _link_project(prev: Path, tmp: Path, name: str) -> None:
    for ext in (".html", ".json"):
        _link(prev / "p" / f"{name}{ext}", tmp / "p" / f"{name}{ext}")
    for f in orjson.loads((prev / "p" / f"{name}.json").read_bytes())["files"]:
        if f.get("core-metadata"):
            _link(prev / "m" / f"{f['filename']}.metadata", tmp / "m" / f"{f['filename']}.metadata")


def _write_project(tmp: Path, name: str, items: list) -> int:
    items = sorted(items, key=lambda r: (version_key(r.version), r.filename))
    entries = []
    links = []
    for r in items:
        rec = orjson.loads(r.record)
        fn = r.filename
        meta_sha = rec.get("metadata_sha256")
        if meta_sha:
            raw = core_metadata(r.contents)
            if raw is None:
                meta_sha = None
            else:
                (tmp / "m" / f"{fn}.metadata").write_bytes(raw)
        url = FILES_REL + quote(fn)
        yanked = rec.get("yanked") or False
        meta = {"sha256": meta_sha} if meta_sha else False
        entries.append({
            "filename": fn, "url": url, "hashes": {"sha256": rec["sha256"]},
            "requires-python": rec.get("requires_python") or None,
            "yanked": yanked, "size": rec.get("size") or 0,
            "upload-time": rec.get("upload_time") or iso_time(r.uploaded_at),
            "core-metadata": meta, "dist-info-metadata": meta,
        })
        attrs = [f'href="{html.escape(url)}#sha256={rec["sha256"]}"']
        if rec.get("requires_python"):
            attrs.append(f'data-requires-python="{html.escape(rec["requires_python"])}"')
        if yanked:
            attrs.append(f'data-yanked="{html.escape(yanked if isinstance(yanked, str) else "")}"')
        if meta_sha:
            attrs.append(f'data-dist-info-metadata="sha256={meta_sha}" data-core-metadata="sha256={meta_sha}"')
        links.append(f"    <a {' '.join(attrs)}>{html.escape(fn)}</a><br/>\n")
    versions = sorted({r.version for r in items}, key=version_key)
    doc = {"meta": {"api-version": API_VERSION}, "name": name, "versions": versions, "files": entries}
    (tmp / "p" / f"{name}.json").write_bytes(orjson.dumps(doc))
    title = html.escape(name)
    (tmp / "p" / f"{name}.html").write_text(
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>Links for {title}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {title}</h1>\n{''.join(links)}  </body>\n</html>\n", encoding="utf-8")
    return len(items)


def _write_list(tmp: Path, projects: dict[str, int]) -> None:
    names = sorted(projects)
    doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names],
           "_counts": {n: projects[n] for n in names}}  # private (PEP 691 "_"): what the next render reuses
    (tmp / "simple.json").write_bytes(orjson.dumps(doc))
    links = "".join(f'    <a href="{quote(n)}/">{html.escape(n)}</a><br/>\n' for n in names)
    (tmp / "simple.html").write_text(
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}  </body>\n</html>\n", encoding="utf-8")
