"""CRAN repositories: where each kind of R file lives (subdirs and their URL paths), the record a
cran file row stores, and ``PACKAGES`` written as R's ``tools::write_PACKAGES`` writes it.

A cran record (``files.record``, canonical JSON) holds the fields a ``PACKAGES`` stanza lists
(``Package``, ``Version``, ``Depends``, ``Imports``, ``LinkingTo``, ``Suggests``, ``Enhances``,
``License``, ``NeedsCompilation``, ``MD5sum``, ``Built`` …, whitespace collapsed as R's
``read.dcf`` leaves it) beside the platform's common lowercase keys: ``name``, ``version``,
``license``, ``md5``, ``size``, ``sha256`` (uploads, and mirrors whose index has ``SHA256``),
``timestamp`` (ms), ``depends`` (the ``Depends``/``Imports``/``LinkingTo`` entries as
``"name (>= x)"`` strings, what the dependency views and policies read) and, for the artifact
views, ``title``.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa

from conda_platform_plugin.dependencies import DependencyIndex, Key
from conda_platform_plugin.errors import NotFound
from conda_platform_plugin.rformats import DEPENDENCY_FIELDS, PACKAGES_FIELDS, parse_dependencies

from ..store.publish import visible_at
from ..store.tables import files

if TYPE_CHECKING:
    from conda_platform_plugin.policy import CompiledPolicy

    from ..store.publish import Publisher

SRC_SUBDIR = "cran-src"
#: R's own packages: a dependency on them is satisfied by R itself, never by a repository
BASE_PACKAGES = frozenset({
    "R", "base", "compiler", "datasets", "graphics", "grDevices", "grid", "methods", "parallel", "splines",
    "stats", "stats4", "tcltk", "tools", "utils",
})
#: the dependency kinds that installing needs (Suggests/Enhances do not)
NEEDED = ("Depends", "Imports", "LinkingTo")
#: binary platforms whose CRAN directory is not bin/<os>/contrib (R's contrib.url for mac.binary.<x>)
_MAC_DIRS = {"macosx-arm64": "big-sur-arm64", "macosx-x86_64": "big-sur-x86_64"}
_R_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")
_DISTRO = re.compile(r"^[a-z0-9][a-z0-9.]{0,15}$")
#: what a render writes beside PACKAGES: which files are listed, which archived (only those are served)
LISTING = "files.json"
INDEX_TYPES = {"PACKAGES": "text/plain; charset=utf-8", "PACKAGES.gz": "application/x-gzip",
               "PACKAGES.rds": "application/octet-stream"}
#: write.dcf() with R's default options(width = 80): fold at 72 columns, continuation indent 8
WIDTH, INDENT = 72, 8


# -- subdirs and URL paths -------------------------------------------------------------------------
def binary_subdir(os_: str, r_version: str) -> str:
    return f"cran-bin-{os_}-{r_version}"


def split_binary_subdir(subdir: str) -> tuple[str, str]:
    """``cran-bin-macosx-arm64-4.2`` → ("macosx-arm64", "4.2")."""
    os_, _, r_version = subdir.removeprefix("cran-bin-").rpartition("-")
    return os_, r_version


def contrib_path(subdir: str) -> str:
    """Where R looks for a subdir's files (``contrib.url``): ``src/contrib``, ``bin/windows/contrib/4.2``,
    ``bin/macosx/big-sur-arm64/contrib/4.2``, ``bin/linux/jammy/contrib/4.2`` …"""
    if subdir == SRC_SUBDIR:
        return "src/contrib"
    os_, r_version = split_binary_subdir(subdir)
    if os_ in _MAC_DIRS:
        return f"bin/macosx/{_MAC_DIRS[os_]}/contrib/{r_version}"
    head, _, distro = os_.partition("-")
    return f"bin/{head}/{distro + '/' if distro else ''}contrib/{r_version}"


def locate(parts: list[str]) -> tuple[str, list[str]]:
    """A path below ``…/cran/`` → (subdir, the rest below its contrib directory); 404 for others."""
    if parts[:2] == ["src", "contrib"]:
        return SRC_SUBDIR, parts[2:]
    if parts[:1] == ["bin"] and "contrib" in parts and len(parts) > parts.index("contrib") + 1:
        i = parts.index("contrib")
        where, r_version = parts[1:i], parts[i + 1]
        if _R_VERSION.match(r_version):
            os_ = None
            if len(where) == 1 and where[0] in ("windows", "macosx", "linux"):
                os_ = where[0]
            elif len(where) == 2 and where[0] == "macosx":
                os_ = next((k for k, v in _MAC_DIRS.items() if v == where[1]), None)
            elif len(where) == 2 and where[0] == "linux" and _DISTRO.match(where[1]):
                os_ = f"linux-{where[1]}"
            if os_ is not None:
                return binary_subdir(os_, r_version), parts[i + 2:]
    raise NotFound(f"cran/{'/'.join(parts)} is not a CRAN repository path")


def binary_os(filename: str, built: str) -> tuple[str, str]:
    """(os, R x.y) of a binary from its file name and ``Built:`` (``R 4.2.2; aarch64-apple-darwin20; …``)."""
    parts = [p.strip() for p in built.split(";")]
    m = re.match(r"^R ([0-9]+)\.([0-9]+)", parts[0])
    if m is None:
        raise ValueError(f"Built: {built!r} does not start with 'R x.y'")
    r_version = f"{m.group(1)}.{m.group(2)}"
    platform = parts[1] if len(parts) > 1 else ""
    if filename.endswith(".zip"):
        return "windows", r_version
    if filename.endswith(".tgz"):
        if platform.startswith(("aarch64", "arm64")):
            return "macosx-arm64", r_version
        return ("macosx-x86_64" if (int(m.group(1)), int(m.group(2))) >= (4, 3) else "macosx"), r_version
    return "linux", r_version


# -- records -----------------------------------------------------------------------------------
def squash(value: str) -> str:
    """A field value as R's read.dcf and write.dcf see it: whitespace runs are one space."""
    return " ".join(str(value).split())


def dependency_specs(fields: Mapping[str, str], kinds: Iterable[str] = NEEDED) -> list[str]:
    """``"xtable (>= 1.8)"`` strings of some dependency fields, in field order."""
    out = []
    for kind in kinds:
        for name, constraint in parse_dependencies(fields.get(kind, "") or ""):
            out.append(f"{name} ({constraint})" if constraint else name)
    return out


def cran_record(fields: Mapping[str, str], *, md5: str, size: int, sha256: str | None,
                timestamp: int) -> dict:
    """The stored record of a cran file (see the module docstring) from its DESCRIPTION or
    PACKAGES fields; ``md5`` fills ``MD5sum`` when the fields have none."""
    rec: dict = {k: squash(fields[k]) for k in PACKAGES_FIELDS if fields.get(k)}
    if md5:
        rec["MD5sum"] = md5
    rec.update(name=rec["Package"], version=rec["Version"], license=rec.get("License", ""), md5=md5 or "",
               size=size, timestamp=timestamp, depends=dependency_specs(rec))
    if sha256:
        rec["sha256"] = sha256
    if fields.get("Title"):
        rec["title"] = squash(fields["Title"])
    return rec


def about_of(fields: Mapping[str, str]) -> dict:
    """The artifact views' about (summary, description, home, dev_url) from DESCRIPTION fields."""
    urls = [u for u in re.split(r"[,\s]+", fields.get("URL", "") or "") if u.startswith(("http://", "https://"))]
    about = {"summary": squash(fields.get("Title", "")), "description": str(fields.get("Description", "")),
             "license": squash(fields.get("License", ""))}
    if urls:
        about["home"] = urls[0]
    if str(fields.get("BugReports", "")).startswith(("http://", "https://")):
        about["dev_url"] = squash(fields["BugReports"])
    return {k: v for k, v in about.items() if v}


# -- PACKAGES ---------------------------------------------------------------------------------
def strwrap(text: str, width: int = WIDTH, exdent: int = INDENT) -> list[str]:
    """R's ``strwrap(text, width, exdent = exdent)`` for one paragraph (what write.dcf folds with):
    words split on single blanks, greedy lines shorter than ``width``, a double space kept after a
    sentence end."""
    if len(text) < width and text == text.strip() and "  " not in text and "\t" not in text and "\n" not in text:
        return [text]  # one line as it is: most fields (3x faster renders)
    words = re.split(r"[ \t\n]", text)
    keep = [w for i, w in enumerate(words)
            if w or (i > 0 and re.search(r"[.?!][)\"']?$", words[i - 1]) is not None)]
    words = keep
    if not words:
        return [""]
    nc = [len(w) for w in words]
    lines: list[str] = []
    start, max_len = 0, width
    while start < len(words):
        total, k = 0, 0
        for n in nc[start:]:
            if total + n + 1 > max_len:
                break
            total += n + 1
            k += 1
        k = max(k, 1)
        end = start + k  # exclusive
        upper = end - 1 if nc[end - 1] == 0 else end
        if end < len(words) and nc[end] == 0:
            end += 1
        lines.append(("" if not lines else " " * exdent) + " ".join(words[start:upper]))
        start, max_len = end, width - exdent
    return lines


def render_packages(records: Iterable[Mapping[str, str]]) -> str:
    """PACKAGES text: each record's PACKAGES fields in R's order, empty ones left out, folded as
    ``write.dcf`` folds them."""
    out = []
    for rec in records:
        lines = []
        for key in PACKAGES_FIELDS:
            value = rec.get(key)
            if value is None or str(value).strip() == "":
                continue
            lines.extend(strwrap(f"{key}: {value}"))
        out.append("\n".join(lines))
    return "\n\n".join(out) + ("\n" if out else "")


def packages_rds(records: list[Mapping[str, str]]) -> bytes:
    """PACKAGES.rds: the index as the character matrix ``available.packages()`` reads first (rows:
    packages, named by Package; columns: the PACKAGES fields any record has; NA where a record
    has none), in R's serialization format version 2 (XDR), gzip-compressed as ``saveRDS`` does."""
    present = set().union(*records) if records else set()
    columns = [k for k in PACKAGES_FIELDS if k in present]
    out = [b"X\n", struct.pack(">iii", 2, 0x040202, 0x020300)]  # format 2, written as by R 4.2.2, readable by 2.3.0
    ascii_flags, utf8_flags = _CHARSXP | (_ASCII << 12), _CHARSXP | (_UTF8 << 12)
    na = struct.pack(">ii", _CHARSXP, -1)  # NA_character_
    pack = struct.Struct(">ii").pack

    def strings(values: Iterable[str | None], count: int, attributes: bool = False) -> None:
        out.append(pack(_STRSXP | (_HAS_ATTR if attributes else 0), count))
        add = out.append
        for v in values:
            if not v:
                add(na)
            else:
                data = str(v).encode()
                add(pack(ascii_flags if data.isascii() else utf8_flags, len(data)))
                add(data)

    def tag(name: str) -> None:
        data = name.encode()
        out.append(pack(_LISTSXP | _HAS_TAG, _SYMSXP) + pack(ascii_flags, len(data)) + data)

    strings((r.get(c) for c in columns for r in records), len(columns) * len(records), attributes=True)
    tag("dim")
    out.append(struct.pack(">iiii", _INTSXP, 2, len(records), len(columns)))
    tag("dimnames")
    out.append(pack(_VECSXP, 2))
    strings((r["Package"] for r in records), len(records))
    strings(columns, len(columns))
    out.append(struct.pack(">i", _NILVALUE))
    return gzip.compress(b"".join(out), compresslevel=6, mtime=0)  # (R's gzip level)


#: R's serialization: SEXP types and flag bits (src/main/serialize.c)
_SYMSXP, _LISTSXP, _CHARSXP, _INTSXP, _STRSXP, _VECSXP, _NILVALUE = 1, 2, 9, 13, 16, 19, 254
_HAS_ATTR, _HAS_TAG = 1 << 9, 1 << 10
_UTF8, _ASCII = 1 << 3, 1 << 6


def r_version_key(version: str) -> tuple:
    """R's package_version order: the numbers between '.' and '-'."""
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.-]", version))


def satisfies(version: str, constraint: str) -> bool:
    """Does ``version`` meet an R constraint like ``>= 1.2-3``? (empty: any version)."""
    m = re.fullmatch(r"\s*(>=|<=|==|>|<|!=)?\s*([0-9][0-9.-]*)\s*", constraint or "")
    if not constraint or m is None:
        return not constraint
    have, want = r_version_key(version), r_version_key(m.group(2))
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
            "!=": have != want}.get(m.group(1) or "==", have == want)


def dependencies_report(fields: Mapping[str, str], available: Mapping[str, list[tuple[str, str, str]]]) -> dict:
    """Each dependency of each kind, resolved against ``available`` (name → [(subdir, filename,
    version)] of the channel's cran files): R's base packages are satisfied by R itself."""
    out: dict[str, list] = {}
    for kind in DEPENDENCY_FIELDS:
        items = []
        for name, constraint in parse_dependencies(fields.get(kind, "") or ""):
            base = name in BASE_PACKAGES
            found = [c for c in available.get(name, []) if satisfies(c[2], constraint)]
            found.sort(key=lambda c: r_version_key(c[2]), reverse=True)
            items.append({"spec": f"{name} ({constraint})" if constraint else name, "name": name,
                          "constraint": constraint, "base": base, "satisfied": base or bool(found),
                          "candidates": [{"subdir": s, "filename": f, "version": v} for s, f, v in found]})
        out[kind.lower()] = items
    return out


# -- the renderer (contract 3) ----------------------------------------------------------------
class CranRenderer:
    """PACKAGES of one cran subdir for one generation (contract 3). A full render each time: a
    CRAN-sized subdir (21,000 packages) publishes in one to a few seconds (bench/bench_cran.py)."""

    async def render(self, publisher: Publisher, cid: int, subdir: str, gen: int, previous: int | None,
                     names: set[str], *, force: bool, policy: CompiledPolicy | None) -> int:
        async with publisher.db.read() as conn:
            rows = (await conn.execute(
                sa.select(files.c.filename, files.c.name, files.c.version, files.c.record, files.c.mirror_id,
                          files.c.uploaded_at)
                .where(files.c.channel_id == cid, files.c.subdir == subdir, files.c.type == "cran", visible_at(gen))
            )).all()
        out = publisher.subdir_dir(cid, subdir, gen)
        return await asyncio.to_thread(_render, out, subdir, rows, policy)


def _render(out: Path, subdir: str, rows: list, policy: CompiledPolicy | None) -> int:
    records = {r.filename: orjson.loads(r.record) for r in rows}
    excluded: set[str] = set()
    if policy is not None:  # uploads only: mirrored files were filtered by their mirror run
        uploaded = {r.filename: records[r.filename] for r in rows if r.mirror_id is None}
        excluded = set(policy.exclusions(subdir, uploaded)) if uploaded else set()
    by_name: dict[str, list] = defaultdict(list)
    for r in rows:
        if r.filename not in excluded:
            by_name[r.name].append(r)
    current, archive = [], {}
    for name in sorted(by_name, key=str.lower):
        versions = sorted(by_name[name], key=lambda r: (r_version_key(r.version), r.uploaded_at), reverse=True)
        current.append(versions[0])
        for r in versions[1:]:
            archive[r.filename] = name
    stanzas = [records[r.filename] for r in current]
    text = render_packages(stanzas)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "PACKAGES", text.encode())
    _write(out / "PACKAGES.gz", gzip.compress(text.encode(), compresslevel=6, mtime=0))  # (R's gzfile level)
    _write(out / "PACKAGES.rds", packages_rds(stanzas))
    listing = {"current": [r.filename for r in current], "archive": archive if subdir == SRC_SUBDIR else {}}
    _write(out / LISTING, orjson.dumps(listing))
    return len(current) + len(listing["archive"])


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# -- the artifact views -------------------------------------------------------------------------
async def available(db, channel_id: int, records: Iterable[Mapping]) -> dict[str, dict[str, list]]:  # noqa: ANN001
    """The channel's current R packages that ``records`` name as dependencies: subdir → name →
    [(subdir, filename, version)] (what dependencies_report() resolves against)."""
    from ..store.closure import named_rows

    names = {n for rec in records for kind in DEPENDENCY_FIELDS
             for n, _ in parse_dependencies(rec.get(kind, "") or "")} - BASE_PACKAGES
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    async with db.read() as conn:
        rows = await named_rows(conn, channel_id, "cran", names,
                                columns=(files.c.subdir, files.c.filename, files.c.name, files.c.version))
    for subdir, filename, name, version in rows:
        out[subdir][name].append((subdir, filename, version))
    return out


def dependencies_item(rec: Mapping, available_here: Mapping[str, list] | None) -> dict:
    """One R file's entry of the dependencies views: ``depends`` (what installing needs:
    Depends, Imports, LinkingTo) in the shape conda files have, and with ``available_here`` every
    field's dependencies resolved in the file's subdir."""
    item: dict = {"depends": [{"spec": s, "name": n, "constraint": c}
                              for n, c in _pairs(rec, NEEDED) for s in [f"{n} ({c})" if c else n]],
                  "constrains": []}
    if available_here is not None:
        item["r_dependencies"] = dependencies_report(rec, available_here)
    return item


def _pairs(rec: Mapping, kinds: Iterable[str]) -> list[tuple[str, str]]:
    return [p for kind in kinds for p in parse_dependencies(rec.get(kind, "") or "")]


async def closure(db, channel_id: int, subdir: str, filename: str, record: Mapping) -> list[tuple]:  # noqa: ANN001
    """What installing an R file pulls in, transitively (Depends, Imports, LinkingTo): for each
    dependency the newest of the channel's current files of the subdir that satisfies it
    (store/closure.py's shape). Unsatisfied ones are left out."""
    from ..store.closure import closure_of, reachable

    found = await reachable(db, channel_id, "cran", needed_names(record), needed_names, subdir)
    index = CranDependencyIndex((s, f, rec) for s, f, rec, _ in found)
    index.records.setdefault((subdir, filename), record)
    return closure_of(index, {(s, f): about for s, f, _, about in found}, (subdir, filename))


def needed(record: Mapping) -> list[str]:
    """What installing an R file needs from a repository: its ``depends`` (Depends, Imports,
    LinkingTo as ``"name (>= x)"``) without R's own packages."""
    return [d for d in record.get("depends") or () if d.split(" ")[0] not in BASE_PACKAGES]


def needed_names(record: Mapping) -> set[str]:
    return {d.split(" ")[0] for d in needed(record)}


def spec_constraint(spec: str) -> str:
    """``"xtable (>= 1.8)"`` → ``">= 1.8"``; ``""`` for any version."""
    return spec.partition(" ")[2].strip().removeprefix("(").removesuffix(")").strip()


def dependent_entries(record: Mapping) -> list[tuple[str, str]]:
    """(name, spec) of what an R file needs, for the dependents index: names as R spells them
    (R's package names are case-sensitive)."""
    return [(d.split(" ")[0], d) for d in needed(record)]


class CranDependencyIndex(DependencyIndex):
    """R records resolved among a channel's R files (the dependency report of a cran mirror):
    ``depends`` holds Depends/Imports/LinkingTo as ``"name (>= x)"``; a dependency is satisfied
    by a file of that package in the same subdir whose version meets the constraint; R's own
    packages need nothing."""

    def depends(self, key: Key) -> list[str]:
        return needed(self.records[key])

    def _find(self, spec: str, subdir: str) -> list[Key]:
        name, constraint = spec.partition(" ")[0], spec_constraint(spec)
        return [k for k in self._by_name.get(name.lower(), ())
                if k[0] == subdir and self.records[k].get("name") == name
                and satisfies(str(self.records[k]["version"]), constraint)]

    def _newest(self, keys: list[Key]) -> Key:
        return max(keys, key=lambda k: r_version_key(str(self.records[k]["version"])))
