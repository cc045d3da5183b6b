"""``upload``, ``search`` and ``package …``: put package files in, find them, inspect and move them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..client import ARTIFACT_TYPES, LocalFileError
from ..errors import BadRequest
from .common import client, command, confirm, group
from .cves import register_package_cves
from .insights import register_package_insights
from .output import Output, human_size

CHANNEL_HELP = "channel: CH or CH/SUB"
REF_HELP = "a package file as SUBDIR/FILENAME, e.g. linux-64/numpy-2.1.0-py312h0_0.conda"
YANK_REF_HELP = "a python file as SUBDIR/FILENAME, e.g. pypi/mytool-1.2-py3-none-any.whl"


def _page(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _type(p: argparse.ArgumentParser) -> None:
    # the server decides which types it knows: no client-side choices to fall out of date
    p.add_argument("--type", default="conda", metavar="TYPE",
                   help=f"artifact type: {', '.join(ARTIFACT_TYPES)} (default: conda)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(subparsers, "upload", upload, "upload package files to a channel (all or nothing)")
    p.add_argument("files", metavar="FILE", nargs="+", type=Path, help="a .conda or .tar.bz2 package file")
    p.add_argument("-c", "--channel", required=True, help=CHANNEL_HELP)
    p.add_argument("--subdir", help="reject files that are not for this subdir (e.g. linux-64)")

    p = command(subparsers, "search", search, "search packages by name (substring or glob) across channels")
    p.add_argument("query", metavar="QUERY", nargs="?", default="", help="name substring or glob (*, ?, [..])")
    p.add_argument("-c", "--channel", help="only this channel (CH or CH/SUB)")
    p.add_argument("--type", metavar="TYPE", help=f"only this artifact type ({', '.join(ARTIFACT_TYPES)})")
    p.add_argument("--subdir", help="only files for this subdir")
    p.add_argument("--license", help="only licenses containing this text")
    p.add_argument("--page", type=_page, default=1, help="page number (default 1)")
    p.add_argument("--per-page", type=_page, default=50, help="results per page (default 50, at most 1000)")

    sub = group(subparsers, "package", "inspect, download, copy, move, yank and delete packages")

    p = command(sub, "list", list_, "list the packages (artifacts) of a channel")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)

    p = command(sub, "show", show, "show a package: versions, subdirs, license, description")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("name", metavar="NAME", help="package name")
    _type(p)

    p = command(sub, "files", files, "list a package's files")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("name", metavar="NAME", help="package name")
    _type(p)

    p = command(sub, "deps", deps, "show a package's dependencies (newest version by default)")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("name", metavar="NAME", help="package name")
    p.add_argument("--version", help="this version instead of the newest")
    _type(p)

    register_package_cves(sub, CHANNEL_HELP, _type)
    register_package_insights(sub, CHANNEL_HELP, REF_HELP, _type)

    p = command(sub, "download", download, "download package files, verified against their sha256")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("refs", metavar="SUBDIR/FILENAME", nargs="+", help=REF_HELP)
    p.add_argument("-o", "--output-dir", type=Path, default=Path("."), metavar="DIR",
                   help="directory to save into (default: the current one)")

    for name, func, verb in (("copy", copy, "copy"), ("move", move, "move")):
        p = command(sub, name, func, f"{verb} package files to another channel or subchannel (all or nothing)")
        p.add_argument("channel", metavar="CH", help=f"{CHANNEL_HELP} to {verb} from")
        p.add_argument("refs", metavar="SUBDIR/FILENAME", nargs="+", help=REF_HELP)
        p.add_argument("--to", required=True, metavar="TARGET", help="target channel: CH or CH/SUB")

    p = command(sub, "yank", yank, "yank a python file (PEP 592): pip and uv skip it unless pinned with ==",
                description="Yank a python file (PEP 592): it stays in the index and downloadable, but pip and "
                            "uv skip it unless a requirement pins its version with ==. Undo with 'unyank'.")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("ref", metavar="SUBDIR/FILENAME", help=YANK_REF_HELP)
    p.add_argument("--reason", help="why, shown by installers (at most 500 characters)")

    p = command(sub, "unyank", unyank, "un-yank a python file: installers pick it again")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("ref", metavar="SUBDIR/FILENAME", help=YANK_REF_HELP)

    p = command(sub, "delete", delete, "delete package files (all or nothing), or a whole package with --artifact",
                description="Delete package files, all or nothing: either the listed SUBDIR/FILENAME files, "
                            "or every file of one package with --artifact NAME.")
    p.add_argument("channel", metavar="CH", help=CHANNEL_HELP)
    p.add_argument("refs", metavar="SUBDIR/FILENAME", nargs="*", help=REF_HELP)
    p.add_argument("--artifact", metavar="NAME", help="delete every file of this package")
    _type(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


# -- upload and search -------------------------------------------------------------------------
def upload(args: argparse.Namespace, out: Output) -> int:
    api = client(args)
    total = sum(f.stat().st_size for f in args.files if f.is_file())
    label = args.files[0].name if len(args.files) == 1 else f"{len(args.files)} files"
    with out.progress(f"uploading {label} ({human_size(total)})") as progress:
        data = api.upload(args.channel, args.files, subdir=args.subdir, progress=progress)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(f"{f['subdir']}/{f['filename']}", f["name"], f["version"], human_size(f["size"]),
             "added" if f["created"] else "already there") for f in data["files"]]
    out.table(["FILE", "NAME", "VERSION", "SIZE", "STATUS"], rows)
    if data.get("generation") is None:
        out.console.print(f"nothing new in {args.channel}: every file was already there", markup=False)
    else:
        out.console.print(f"uploaded to {args.channel} (generation {data['generation']})", markup=False)
    return 0


def search(args: argparse.Namespace, out: Output) -> int:
    data = client(args).search(args.query, channel=args.channel, type=args.type, subdir=args.subdir,
                               license=args.license, page=args.page, per_page=args.per_page)
    if out.json_mode:
        out.json(data)
        return 0
    items = data["items"]
    rows = [(i["channel"], i["name"], i["type"], i.get("file_count"), i.get("license"), i.get("summary"))
            for i in items]
    first, total = (data["page"] - 1) * data["per_page"], data["total"]
    last = first + len(items)
    footer = None
    if items and (first or last < total):  # say so when the results span more than one page
        footer = f"{first + 1}-{last} of {total}" + (f": more with --page {data['page'] + 1}" if last < total else "")
    empty = "no packages found" if data["total"] == 0 or data["page"] == 1 else f"no results on page {data['page']}"
    out.table(["CHANNEL", "NAME", "TYPE", "FILES", "LICENSE", "SUMMARY"], rows, empty=empty, footer=footer)
    return 0


# -- package … ---------------------------------------------------------------------------------
def list_(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_artifacts(args.channel)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(a["name"], a["type"], a.get("file_count")) for a in data["items"]]
    out.table(["NAME", "TYPE", "FILES"], rows, empty=f"no packages in {args.channel}")
    return 0


def _spdx(info: dict | None) -> str | None:
    """``MIT (family MIT, OSI)`` — the normalised license, as the server reads the record's string."""
    if not info:
        return None
    flags = ", OSI" if info.get("osi_approved") else ""
    return f"{info.get('spdx') or 'unknown'} (family {info.get('family')}{flags})"


def show(args: argparse.Namespace, out: Output) -> int:
    a = client(args).get_artifact(args.channel, args.name, args.type)
    if out.json_mode:
        out.json(a)
        return 0
    out.fields([
        ("name", a["name"]), ("channel", a["channel"]), ("type", a["type"]),
        ("latest version", a["latest_version"]), ("versions", a["versions"]), ("subdirs", a["subdirs"]),
        ("files", a["file_count"]), ("license", a.get("license")),
        ("license (SPDX)", _spdx(a.get("license_info"))), ("summary", a.get("summary")),
        ("home", a.get("home")), ("dev url", a.get("dev_url")), ("doc url", a.get("doc_url")),
        ("last upload", a.get("last_upload")),
    ])
    if a.get("description"):
        out.console.print()
        out.console.print(a["description"], markup=False)
    return 0


def files(args: argparse.Namespace, out: Output) -> int:
    data = client(args).artifact_files(args.channel, args.name, args.type)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(f"{f['subdir']}/{f['filename']}", f["version"], f["build"], human_size(f["size"]), f["sha256"][:12],
             f["uploaded_at"]) for f in data["items"]]
    out.table(["FILE", "VERSION", "BUILD", "SIZE", "SHA256", "UPLOADED"], rows)
    return 0


def deps(args: argparse.Namespace, out: Output) -> int:
    data = client(args).artifact_dependencies(args.channel, args.name, args.type, args.version)
    if out.json_mode:
        out.json(data)
        return 0
    rows = []
    for f in data["files"]:
        specs = [("depends", s) for s in f["depends"]] + [("constrains", s) for s in f["constrains"]]
        if not specs:
            rows.append((f"{f['subdir']}/{f['filename']}", "", "(none)", ""))
        for i, (kind, s) in enumerate(specs):
            rows.append((f"{f['subdir']}/{f['filename']}" if i == 0 else "", kind, s["name"], s["constraint"]))
    out.console.print(f"{data['name']} {data['version']}", markup=False)
    out.table(["FILE", "KIND", "NAME", "CONSTRAINT"], rows)
    return 0


def download(args: argparse.Namespace, out: Output) -> int:
    api = client(args)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LocalFileError(f"cannot create {args.output_dir}: {e.strerror or e}") from None
    saved = []
    for ref in args.refs:
        with out.progress(f"downloading {ref.rpartition('/')[2]}") as progress:
            path, record = api.download(args.channel, ref, args.output_dir, progress=progress)
        saved.append({"file": ref, "path": str(path), "size": record["size"], "sha256": record["sha256"]})
        if not out.json_mode:
            out.console.print(f"saved {path} ({human_size(record['size'])}, sha256 verified)", markup=False)
    if out.json_mode:
        out.json({"files": saved})
    return 0


def _transfer(args: argparse.Namespace, out: Output, move: bool) -> int:
    api = client(args)
    data = (api.move_files if move else api.copy_files)(args.channel, args.refs, args.to)
    gen = data.get("target_generation")
    note = f"generation {gen} of {data['target']}" if gen is not None else f"all were already in {data['target']}"
    out.result(data, f"{'moved' if move else 'copied'} {len(data['files'])} file(s) from {data['source']} "
                     f"to {data['target']} ({note})")
    return 0


def copy(args: argparse.Namespace, out: Output) -> int:
    return _transfer(args, out, move=False)


def move(args: argparse.Namespace, out: Output) -> int:
    return _transfer(args, out, move=True)


def _set_yanked(args: argparse.Namespace, out: Output, yanked: bool) -> int:
    data = client(args).yank_file(args.channel, args.ref, reason=getattr(args, "reason", None), yanked=yanked)
    verb = "yanked" if yanked else "un-yanked"
    if data["generation"] is None:
        human = f"{data['file']} in {data['channel']} was already {verb}: nothing changed"
    else:
        why = f": {data['yanked']}" if isinstance(data["yanked"], str) else ""
        human = f"{verb} {data['file']} in {data['channel']}{why} (generation {data['generation']})"
    out.result(data, human)
    return 0


def yank(args: argparse.Namespace, out: Output) -> int:
    return _set_yanked(args, out, yanked=True)


def unyank(args: argparse.Namespace, out: Output) -> int:
    return _set_yanked(args, out, yanked=False)


def delete(args: argparse.Namespace, out: Output) -> int:
    if bool(args.refs) == bool(args.artifact):
        args.parser.error("give either SUBDIR/FILENAME files or --artifact NAME (one of the two)")
    api = client(args)
    if args.artifact:
        confirm(args, f"Delete every file of {args.type}/{args.artifact} from {args.channel}?",
                f"delete {args.type}/{args.artifact} from {args.channel}")
        data = api.delete_artifact(args.channel, args.artifact, args.type)
        out.result(data, f"deleted {data['deleted']} from {data['channel']} (generation {data['generation']})")
        return 0
    for r in args.refs:
        if r.count("/") != 1:
            raise BadRequest(f"invalid file reference {r!r}: use SUBDIR/FILENAME")
    confirm(args, f"Delete {len(args.refs)} file(s) from {args.channel}?",
            f"delete {len(args.refs)} file(s) from {args.channel}")
    data = api.delete_files(args.channel, args.refs)
    out.result(data, f"deleted {len(data['deleted'])} file(s) from {args.channel} (generation {data['generation']})")
    return 0
