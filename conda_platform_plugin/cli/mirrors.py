"""``mirror …``: create, list, show, edit, run, stop, restart, delete mirrors and report their dependencies."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..client import ARTIFACT_TYPES, LocalFileError, PlatformClient
from .common import client, command, confirm, group
from .output import Output, human_size

CH_HELP = "channel name: CH, or CH/SUB for a subchannel"
ENDED = ("completed", "failed", "stopped")
POLL = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = group(subparsers, "mirror", "mirror upstream conda channels into channels")

    p = command(sub, "create", create, "create a mirror of an upstream conda channel",
                description="Create a mirror. The source is any conda channel URL, another conda-platform "
                            "server's https://HOST/api/repo/CHANNEL, or a URL with /t/TOKEN/ in it.")
    _target(p)
    p.add_argument("--source", required=True, metavar="URL",
                   help="the upstream channel URL (python: the simple index URL, e.g. https://pypi.org/simple)")
    p.add_argument("--type", choices=("conda", "python", "cran"), default="conda",
                   help="what the upstream is: a conda channel, a Python simple index or a CRAN repository "
                        "(default: conda)")
    p.add_argument("--mode", choices=("passive", "active"), default="passive",
                   help="passive: metadata now, each package fetched on its first request; "
                        "active: every package downloaded by the run (default: passive)")
    _options(p)
    p.add_argument("--policy", metavar="NAME", help="the mirror's own policy (default: its channel's applies)")
    p.add_argument("--run-now", action="store_true", help="start a run right away")

    p = command(sub, "list", list_, "list the mirrors of a channel (or all you manage)")
    p.add_argument("channel", metavar="CH", nargs="?", help=CH_HELP + " (default: every mirror you manage)")

    p = command(sub, "show", show, "show a mirror: settings, package counts, filtered reasons, recent runs")
    _target(p)
    p.add_argument("--filtered", action="store_true", help="also list the filtered packages and why")
    p.add_argument("--packages", action="store_true",
                   help="also list the published packages (passive: metadata only; active: stored here)")

    p = command(sub, "edit", edit, "change a mirror (anything but its mode)")
    _target(p)
    p.add_argument("--source", metavar="URL", help="a new upstream URL")
    p.add_argument("--rename", metavar="NEW", help="a new name")
    p.add_argument("--all-subdirs", action="store_true", help="mirror every subdir the source has")
    p.add_argument("--mode", choices=("passive", "active"),
                   help="refused unless it is the current mode: delete and create the mirror again to change it")
    pol = p.add_mutually_exclusive_group()
    pol.add_argument("--policy", metavar="NAME", help="give the mirror its own policy")
    pol.add_argument("--channel-policy", action="store_true",
                     help="drop the mirror's own policy: its channel's applies")
    _options(p)

    for name, func, help_ in (("run", run, "run a mirror now"),
                              ("restart", restart, "stop the running run if any and run again from the beginning")):
        p = command(sub, name, func, help_)
        _target(p)
        p.add_argument("--wait", action="store_true", help="follow the run's progress until it ends")

    p = command(sub, "stop", stop, "stop a mirror's run (what is done is kept)")
    _target(p)

    p = command(sub, "delete", delete, "delete a mirror (its packages stay unless --remove-packages)")
    _target(p)
    p.add_argument("--remove-packages", action="store_true", help="also remove the packages it brought")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = command(sub, "report", report, "dependency report of a mirror's packages (or of the whole channel)")
    p.add_argument("channel", metavar="CH", help=CH_HELP)
    p.add_argument("name", metavar="MIRROR", nargs="?", help="the mirror (default: every package of the channel)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    p.add_argument("--type", choices=ARTIFACT_TYPES, default=None,
                   help="the channel's packages of this artifact type (default: conda; a mirror's are its type)")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", metavar="CH", help=CH_HELP)
    p.add_argument("name", metavar="MIRROR", help="the mirror's name")


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subdir", action="append", dest="subdirs", metavar="SUBDIR",
                   help="a subdir to mirror (repeat; default: all the source has; noarch always)")
    p.add_argument("--project", action="append", dest="projects", metavar="REQ",
                   help="python mirrors: a project to mirror, requirements style, e.g. 'requests>=2' (repeat; "
                        "required for python; on edit the list replaces the old one)")
    p.add_argument("--cron", metavar="EXPR", help="when to run: 5-field cron expression in UTC (default '0 0 1 * *')")
    p.add_argument("--concurrency", type=int, metavar="N", help="package downloads at once in active mode")


# -- presentation ------------------------------------------------------------------------------
def _progress_text(run: dict) -> str:
    fig = run.get("figures") or {}
    parts = [f"[{run['status']}] {run.get('description') or run.get('step')}"]
    if fig.get("records_seen"):
        parts.append(f"{fig['records_seen']} seen, {fig.get('records_published', 0)} published, "
                     f"{fig.get('records_filtered', 0)} filtered")
    if fig.get("files_total"):
        parts.append(f"{fig.get('files_done', 0)}/{fig['files_total']} files, "
                     f"{human_size(fig.get('bytes_done', 0))} of {human_size(fig.get('bytes_total', 0))}")
    return " · ".join(parts)


def _run_summary(run: dict | None) -> str:
    if not run:
        return "-"
    text = f"#{run['id']} {run['status']}"
    if run["status"] in ENDED:
        text += f" at {run.get('finished_at')}"
    if run.get("reason") and run["status"] != "completed":
        text += f": {run['reason']}"
    return text


def _policy_text(m: dict) -> str:
    if not m.get("effective_policy"):
        return "none"
    return f"{m['effective_policy']} (the mirror's own)" if m.get("policy_from") == "mirror" else \
        f"{m['effective_policy']} (the channel's)"


def _show(out: Output, m: dict) -> None:
    pairs: list[tuple[str, Any]] = [
        ("name", m["name"]), ("channel", m["channel"]), ("type", m["type"]), ("mode", m["mode"]),
        ("source", m["source_url"]),
        *([("projects", ", ".join(m["projects"]))] if m.get("projects") else
          [("subdirs", m["subdirs"] if m["subdirs"] else "all the source has")]),
        ("schedule (UTC)", m["cron"]), ("next run", m["next_run_at"]), ("concurrency", m["concurrency"]),
        ("policy", _policy_text(m)), ("status", m["status"]),
    ]
    if m.get("current_run"):
        pairs.append(("running", _progress_text(m["current_run"])))
    pairs.append(("last run", _run_summary(m.get("last_run"))))
    pk = m.get("packages")
    if pk:
        pairs.append(("packages", f"{pk['seen']} seen, {pk['published']} published, {pk['filtered']} filtered"))
        for rule, n in sorted(pk["filtered_by_rule"].items()):
            pairs.append((f"  filtered: {rule}", n))
    out.fields(pairs)


# -- commands ----------------------------------------------------------------------------------
def create(args: argparse.Namespace, out: Output) -> int:
    m = client(args).create_mirror(args.channel, args.name, args.source, mode=args.mode, subdirs=args.subdirs,
                                   cron=args.cron, concurrency=args.concurrency, policy=args.policy,
                                   run_now=args.run_now, type=args.type, projects=args.projects)
    out.result(m, f"created {m['mode']} mirror {m['channel']}/{m['name']} of {m['source_url']}; "
                  f"next run {m['next_run_at']}" + (" (running now)" if args.run_now else ""))
    return 0


def list_(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_mirrors(args.channel)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(m["channel"], m["name"], m["mode"], m["source_url"], m["cron"], m["status"], m["next_run_at"])
            for m in data["items"]]
    out.table(["CHANNEL", "NAME", "MODE", "SOURCE", "CRON", "STATUS", "NEXT RUN"], rows, empty="no mirrors")
    return 0


def show(args: argparse.Namespace, out: Output) -> int:
    c = client(args)
    m = c.get_mirror(args.channel, args.name)
    runs = c.mirror_runs(args.channel, args.name, per_page=10)
    filtered = c.mirror_packages(args.channel, args.name, state="filtered", per_page=1000) if args.filtered else None
    published = c.mirror_packages(args.channel, args.name, per_page=1000) if args.packages else None
    if out.json_mode:
        out.json({**m, "runs": runs["items"], **({"filtered": filtered["items"]} if filtered else {}),
                  **({"published": published["items"]} if published else {})})
        return 0
    _show(out, m)
    rows = [(r["id"], r["trigger"], r["status"], r["started_at"], r["finished_at"],
             (r["figures"] or {}).get("records_published"), r.get("reason") or "") for r in runs["items"]]
    out.console.print("")
    out.table(["RUN", "TRIGGER", "STATUS", "STARTED", "FINISHED", "PUBLISHED", "REASON"], rows, empty="no runs yet")
    if published:
        out.console.print("")
        more = published["total"] - len(published["items"])
        out.table(["SUBDIR", "FILE", "SIZE", "STORED"],
                  [(f["subdir"], f["filename"], human_size(f["size"]), f["stored"]) for f in published["items"]],
                  empty="no packages", footer=f"… and {more} more" if more > 0 else None)
    if filtered:
        out.console.print("")
        out.table(["SUBDIR", "FILE", "RULE", "REASON"],
                  [(f["subdir"], f["filename"], f["rule"], f["reason"]) for f in filtered["items"]],
                  empty="nothing filtered")
    return 0


def edit(args: argparse.Namespace, out: Output) -> int:
    changes: dict[str, Any] = {}
    if args.source:
        changes["source_url"] = args.source
    if args.rename:
        changes["name"] = args.rename
    if args.all_subdirs:
        changes["subdirs"] = None
    elif args.subdirs:
        changes["subdirs"] = args.subdirs
    if args.projects:
        changes["projects"] = args.projects
    if args.cron:
        changes["cron"] = args.cron
    if args.concurrency is not None:
        changes["concurrency"] = args.concurrency
    if args.mode:
        changes["mode"] = args.mode
    if args.policy:
        changes["policy"] = args.policy
    elif args.channel_policy:
        changes["policy"] = None
    if not changes:
        args.parser.error("nothing to change: give --source, --rename, --subdir, --all-subdirs, --project, --cron, "
                          "--concurrency, --policy or --channel-policy")
    m = client(args).update_mirror(args.channel, args.name, **changes)
    if out.json_mode:
        out.json(m)
    else:
        out.console.print(f"updated mirror {m['channel']}/{m['name']}", markup=False)
        _show(out, m)
    return 0


def _follow(c: PlatformClient, args: argparse.Namespace, out: Output, run: dict) -> int:
    """Follow a run to its end: a live line on a terminal, one plain line per change otherwise."""
    live = not out.json_mode and sys.stderr.isatty()
    status = None
    if live:
        from rich.console import Console

        status = Console(stderr=True).status(_progress_text(run))
        status.start()
    last = None
    try:
        while True:
            text = _progress_text(run)
            if status is not None:
                status.update(text)
            elif not out.json_mode and text != last:
                print(text, flush=True)
            last = text
            if run["status"] in ENDED:
                break
            time.sleep(POLL)
            run = c.mirror_run(args.channel, args.name, run["id"])
    finally:
        if status is not None:
            status.stop()
    if out.json_mode:
        out.json(run)
    else:
        out.console.print(f"run #{run['id']} of {args.channel}/{args.name}: {_run_summary(run)}", markup=False)
    return 0 if run["status"] == "completed" else 1


def _start(args: argparse.Namespace, out: Output, action: str) -> int:
    c = client(args)
    run = c.mirror_action(args.channel, args.name, action)
    if args.wait:
        return _follow(c, args, out, run)
    out.result(run, f"started run #{run['id']} of {args.channel}/{args.name}")
    return 0


def run(args: argparse.Namespace, out: Output) -> int:
    return _start(args, out, "run")


def restart(args: argparse.Namespace, out: Output) -> int:
    return _start(args, out, "restart")


def stop(args: argparse.Namespace, out: Output) -> int:
    r = client(args).mirror_action(args.channel, args.name, "stop")
    out.result(r, f"run #{r['id']} of {args.channel}/{args.name}: {r['status']}")
    return 0


def delete(args: argparse.Namespace, out: Output) -> int:
    what = " and the packages it brought" if args.remove_packages else ""
    confirm(args, f"Delete mirror {args.channel}/{args.name}{what}?", f"delete mirror {args.name}")
    data = client(args).delete_mirror(args.channel, args.name, remove_packages=args.remove_packages)
    out.result(data, f"deleted mirror {args.channel}/{data['deleted']}"
                     + (f" and {data['packages_removed']} package(s)" if args.remove_packages else ""))
    return 0


def report(args: argparse.Namespace, out: Output) -> int:
    fmt = "json" if out.json_mode or args.format in ("json", "table") else "csv"
    data = client(args).dependency_report(args.channel, args.name, fmt, args.type)
    if args.output:
        text = data if isinstance(data, str) else json.dumps(data, indent=2) + "\n"
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise LocalFileError(f"cannot write {args.output}: {e.strerror or e}") from None
        out.result({"written": args.output}, f"wrote {args.output}")
        return 0
    if isinstance(data, str):
        sys.stdout.write(data)
        return 0
    if out.json_mode or args.format == "json":
        out.json(data)
        return 0
    rows = [("missing", m["spec"], m["subdir"], "", ", ".join(m["needed_by"])) for m in data["missing"]]
    rows += [("resolved", d["name"], d["subdir"], d["filename"], ", ".join(d["needed_by"]))
             for d in data["dependencies"]]
    out.table(["STATUS", "DEPENDENCY", "SUBDIR", "RESOLVED TO", "NEEDED BY"], rows, empty="no dependencies")
    verdict = "every dependency is satisfied in the channel" if data["satisfied"] else \
        f"{len(data['missing'])} dependenc{'y' if len(data['missing']) == 1 else 'ies'} cannot be satisfied"
    out.console.print(verdict, markup=False)
    return 0
