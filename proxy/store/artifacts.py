"""Artifacts: one package name of one type in a channel, summarised from its current files."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from conda_platform_plugin.dependencies import DependencyIndex
from conda_platform_plugin.errors import BadRequest, NotFound
from conda_platform_plugin.names import ARTIFACT_TYPES
from conda_platform_plugin.pyformats import normalize_name
from conda_platform_plugin.versions import version_key

from ..repo.cran_index import dependencies_item
from .channels import Channel
from .db import Database
from .publish import CURRENT
from .tables import channels, files
from .times import iso_time


def check_type(type_: str) -> str:
    if type_ not in ARTIFACT_TYPES:
        raise BadRequest(f"unknown artifact type {type_!r}; known: {', '.join(ARTIFACT_TYPES)}")
    return type_


class ArtifactStore:
    def __init__(self, db: Database):
        self.db = db

    async def rows(self, channel: Channel, type_: str, name: str, *, contents: bool = False) -> list[sa.Row]:
        """The artifact's current files, newest version first; 404 when it has none."""
        cols = [files.c.subdir, files.c.filename, files.c.version, files.c.build, files.c.record, files.c.about,
                files.c.license, files.c.summary, files.c.uploaded_at, files.c.size, files.c.sha256, files.c.md5,
                files.c.type, files.c.name, files.c.added_gen]
        if contents:
            cols.append(files.c.contents)
        if type_ == "python":  # python names are kept PEP 503-normalized: Tiny.App finds tiny-app
            name = normalize_name(name)
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(*cols).where(files.c.channel_id == channel.id, files.c.type == check_type(type_),
                                           files.c.name == name, CURRENT)
                )
            ).all()
        if not rows:
            raise NotFound(f"artifact {type_}/{name} not found in channel {channel.name!r}",
                           detail={"channel": channel.name, "type": type_, "name": name})
        return sorted(rows, key=lambda r: (version_key(r.version), r.uploaded_at, r.filename), reverse=True)

    async def list(self, channel: Channel, *, page: int, per_page: int) -> tuple[list[dict], int]:
        cond = (files.c.channel_id == channel.id) & CURRENT
        async with self.db.read() as conn:
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.select(files.c.type, files.c.name).where(cond).distinct().subquery()
                    )
                )
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(files.c.type, files.c.name, sa.func.count().label("files"),
                              sa.func.max(files.c.uploaded_at).label("last_upload"))
                    .where(cond).group_by(files.c.type, files.c.name).order_by(files.c.name, files.c.type)
                    .limit(per_page).offset((page - 1) * per_page)
                )
            ).all()
            newest = await newest_versions(conn, [(channel.name, r.type, r.name) for r in rows])
        return [{"type": r.type, "name": r.name, "file_count": r.files, **newest[(channel.name, r.type, r.name)],
                 "last_upload": iso_time(r.last_upload)} for r in rows], total


async def newest_versions(conn, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:  # noqa: ANN001
    """Summary, license and version of the newest version of each (channel, type, name), as
    GET artifact shows them (newest by conda version order, then upload time)."""
    if not keys:
        return {}
    rows = (
        await conn.execute(
            sa.select(channels.c.name.label("channel"), files.c.type, files.c.name, files.c.version,
                      files.c.summary, files.c.license, files.c.uploaded_at)
            .select_from(files.join(channels, channels.c.id == files.c.channel_id))
            .where(CURRENT, sa.tuple_(channels.c.name, files.c.type, files.c.name).in_(keys))
        )
    ).all()
    best: dict[tuple[str, str, str], sa.Row] = {}
    for r in rows:
        key = (r.channel, r.type, r.name)
        if key not in best or (version_key(r.version), r.uploaded_at) > (version_key(best[key].version),
                                                                          best[key].uploaded_at):
            best[key] = r
    return {k: {"latest_version": r.version, "summary": r.summary, "license": r.license} for k, r in best.items()}


def artifact_json(channel: Channel, rows: list[sa.Row]) -> dict:
    newest = rows[0]
    about = orjson.loads(newest.about) if newest.about else {}
    versions = sorted({r.version for r in rows}, key=version_key, reverse=True)
    return {
        "channel": channel.name,
        "type": newest.type,
        "name": newest.name,
        "latest_version": newest.version,
        "versions": versions,
        "summary": newest.summary or about.get("summary") or "",
        "description": about.get("description") or "",
        "license": newest.license,
        "home": about.get("home"),
        "dev_url": about.get("dev_url"),
        "doc_url": about.get("doc_url"),
        "subdirs": sorted({r.subdir for r in rows}),
        "file_count": len(rows),
        "last_upload": iso_time(max(r.uploaded_at for r in rows)),
    }


def version_rows(rows: list[sa.Row], version: str | None) -> list[sa.Row]:
    """The files of one version (the newest by default); 404 when there is no such version."""
    version = version or rows[0].version
    chosen = [r for r in rows if r.version == version]
    if not chosen:
        raise NotFound(f"{rows[0].type}/{rows[0].name} has no version {version!r}")
    return chosen


def dependencies_json(rows: list[sa.Row], version: str | None, index: DependencyIndex | None = None,
                      cran: dict[str, dict[str, list]] | None = None) -> dict:
    """Dependencies (and constraints apart) of each file of one version: the newest by default.

    With ``index`` (the channel's records of the names asked for), each file also gets ``matches``:
    every spec parsed, with the channel's packages that satisfy it for the file's subdir.
    """
    chosen = version_rows(rows, version)
    out = []
    for r in chosen:
        rec = orjson.loads(r.record)
        if r.type == "python":  # PEP 508 requirements (no conda matchspecs to match in the channel)
            out.append({"subdir": r.subdir, "filename": r.filename, "requires_python": rec.get("requires_python"),
                        "depends": [_pep508(s) for s in rec.get("requires_dist") or ()], "constrains": []})
            continue
        if r.type == "cran":  # R's dependency fields, resolved among the channel's R packages (repo/cran_index.py)
            out.append({"subdir": r.subdir, "filename": r.filename,
                        **dependencies_item(rec, cran.get(r.subdir, {}) if cran is not None else None)})
            continue
        item = {
            "subdir": r.subdir,
            "filename": r.filename,
            "depends": [_spec(s) for s in rec.get("depends", [])],
            "constrains": [_spec(s) for s in rec.get("constrains", [])],
        }
        if index is not None:
            item["matches"] = {
                kind: [match_json(index, s, r.subdir) for s in rec.get(kind, [])] for kind in ("depends", "constrains")
            }
        out.append(item)
    return {"name": rows[0].name, "version": chosen[0].version, "files": out}


def match_json(index: DependencyIndex, spec: str, subdir: str) -> dict:
    """A MatchSpec parsed (rattler, conda's semantics) and the channel's records that satisfy it."""
    virtual = index.is_virtual(spec)
    parsed = None if virtual else index._spec(spec)
    found = index.candidates(spec, subdir) if parsed is not None else []
    candidates = sorted(found, key=lambda k: (version_key(str(index.records[k]["version"])), k), reverse=True)
    return {
        "spec": spec,
        "name": parsed.name.normalized if parsed is not None else spec.split()[0] if spec.split() else "",
        "version": parsed.version if parsed is not None else None,
        "build": parsed.build if parsed is not None else None,
        "virtual": virtual,
        "valid": virtual or parsed is not None,
        "satisfied": virtual or bool(found),
        "candidates": [{"subdir": k[0], "filename": k[1], "version": str(index.records[k]["version"]),
                        "build": str(index.records[k].get("build", ""))} for k in candidates],
    }


def _pep508(spec: str) -> dict:
    try:
        req = Requirement(spec)
    except InvalidRequirement:
        return {"spec": spec, "name": spec.split(";")[0].strip(), "constraint": ""}
    out = {"spec": spec, "name": canonicalize_name(req.name), "constraint": str(req.specifier)}
    if req.extras:
        out["extras"] = sorted(req.extras)
    if req.marker is not None:
        out["marker"] = str(req.marker)
    return out


def _spec(spec: str) -> dict:
    name, _, rest = spec.strip().partition(" ")
    return {"spec": spec, "name": name, "constraint": rest.strip()}


def readme_markdown(rows: list[sa.Row]) -> str:
    newest = rows[0]
    about = orjson.loads(newest.about) if newest.about else {}
    contents = orjson.loads(newest.contents) if getattr(newest, "contents", None) else {}
    if about.get("description"):
        return str(about["description"])
    if contents.get("readme"):
        return str(contents["readme"])
    summary = about.get("summary") or newest.summary
    return f"# {newest.name}\n\n{summary}\n" if summary else f"# {newest.name}\n"
