"""``policy …``: create, list, show, edit, delete, apply, detach and preview policies."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..client import LocalFileError
from ..errors import BadRequest
from .common import client, command, confirm, group
from .output import Output, one_line

RULES_HELP = ("a JSON or YAML file with the rules: a list of rule objects, or an object with 'rules' (and "
              "'description'); see docs/policies.md")


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = group(subparsers, "policy", "manage policies: the rules that decide what channels and mirrors publish")

    p = command(sub, "create", create, "create a policy from a rules file (or --rule objects)")
    p.add_argument("name", metavar="NAME", help="policy name")
    _rules_options(p)

    command(sub, "list", list_, "list policies and where they are applied")

    p = command(sub, "show", show, "show a policy: rules, versions, where it is applied")
    p.add_argument("name", metavar="NAME")

    p = command(sub, "edit", edit, "replace a policy's rules or description (a new version; channels republish)")
    p.add_argument("name", metavar="NAME")
    _rules_options(p)

    p = command(sub, "delete", delete, "delete a policy that is applied nowhere")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    for name, func, verb in (("apply", apply, "apply the policy to"), ("detach", detach, "detach the policy from")):
        p = command(sub, name, func, f"{verb} a channel (republished at once) or one of its mirrors")
        p.add_argument("name", metavar="NAME")
        p.add_argument("-c", "--channel", required=True, help="channel: CH or CH/SUB")
        p.add_argument("--mirror", help="a mirror of the channel instead of the channel itself")

    p = command(sub, "preview", preview, "dry run: what the policy would exclude, and what becomes uninstallable")
    p.add_argument("name", metavar="NAME", help="a policy (or, with --file/--rule, the name of a draft)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--channel", help="a channel of this server (CH or CH/SUB)")
    src.add_argument("--source-url", dest="source_url", help="an upstream conda channel URL")
    p.add_argument("--subdir", action="append", dest="subdirs", help="only this subdir (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="records listed per section (default 50; counts are full)")
    _rules_options(p, required=False)


def _rules_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-f", "--file", type=Path, help=RULES_HELP)
    p.add_argument("--rule", action="append", default=[], metavar="JSON",
                   help='one rule as JSON, e.g. \'{"kind": "license", "deny_families": ["GPL3"]}\' (repeatable)')
    p.add_argument("--description", help="what the policy is for")


def _rules(args: argparse.Namespace) -> tuple[list | None, str | None]:
    """(rules, description) from --file and --rule; None when neither was given."""
    rules: list | None = None
    description = args.description
    if args.file is not None:
        try:
            text = args.file.read_text()
        except OSError as e:
            raise LocalFileError(f"cannot read {args.file}: {e.strerror or e}") from None
        try:
            doc = yaml.safe_load(text)  # JSON is YAML too
        except yaml.YAMLError as e:
            raise BadRequest(f"{args.file} is neither JSON nor YAML: {one_line(str(e))}") from None
        if isinstance(doc, dict):
            rules = doc.get("rules", [])
            description = description if description is not None else doc.get("description")
        elif isinstance(doc, list):
            rules = doc
        else:
            raise BadRequest(f"{args.file} must hold a list of rules or an object with 'rules'")
    for text in args.rule:
        try:
            rule = json.loads(text)
        except ValueError as e:
            raise BadRequest(f"--rule {text!r} is not JSON: {e}") from None
        rules = (rules or []) + [rule]
    return rules, description


def _usage(p: dict) -> str:
    where = [*p.get("channels", []), *(f"mirror {m}" for m in p.get("mirrors", []))]
    return ", ".join(where) or "-"


def _rule_text(rule: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in rule.items() if k != "kind" and v not in (None, [], "", False))


def create(args: argparse.Namespace, out: Output) -> int:
    rules, description = _rules(args)
    p = client(args).create_policy({"name": args.name, "rules": rules or [], "description": description or ""})
    out.result(p, f"created policy {p['name']} (version {p['version']}, {len(p['rules'])} rule(s))")
    return 0


def list_(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_policies()
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(p["name"], p["version"], ", ".join(r["kind"] for r in p["rules"]) or "-", _usage(p),
             one_line(p.get("description") or "")) for p in data["items"]]
    out.table(["NAME", "VERSION", "RULES", "APPLIED TO", "DESCRIPTION"], rows, empty="no policies yet")
    return 0


def show(args: argparse.Namespace, out: Output) -> int:
    p = client(args).get_policy(args.name)
    if out.json_mode:
        out.json(p)
        return 0
    out.fields([("name", p["name"]), ("version", p["version"]), ("description", p.get("description")),
                ("channels", p.get("channels")), ("mirrors", p.get("mirrors")), ("updated", p.get("updated_at"))])
    out.table(["#", "KIND", "SETTINGS"], [(i + 1, r["kind"], _rule_text(r)) for i, r in enumerate(p["rules"])],
              empty="no rules: the policy excludes nothing")
    return 0


def edit(args: argparse.Namespace, out: Output) -> int:
    rules, description = _rules(args)
    changes: dict = {}
    if rules is not None:
        changes["rules"] = rules
    if description is not None:
        changes["description"] = description
    if not changes:
        raise BadRequest("nothing to change: give --file, --rule or --description")
    p = client(args).update_policy(args.name, **changes)
    out.result(p, f"policy {p['name']} is now version {p['version']}")
    return 0


def delete(args: argparse.Namespace, out: Output) -> int:
    confirm(args, f"delete policy {args.name}?", f"delete policy {args.name}")
    out.result(client(args).delete_policy(args.name), f"deleted policy {args.name}")
    return 0


def _target(args: argparse.Namespace) -> str:
    return f"mirror {args.mirror} of {args.channel}" if args.mirror else f"channel {args.channel}"


def apply(args: argparse.Namespace, out: Output) -> int:
    r = client(args).apply_policy(args.name, args.channel, args.mirror)
    extra = f" (generation {r['generation']})" if r.get("generation") is not None and not args.mirror else ""
    state = "applied" if r.get("changed", True) else "was already applied"
    out.result(r, f"policy {args.name} {state} to {_target(args)}{extra}")
    return 0


def detach(args: argparse.Namespace, out: Output) -> int:
    r = client(args).apply_policy(args.name, args.channel, args.mirror, detach=True)
    out.result(r, f"policy {args.name} detached from {_target(args)}")
    return 0


def preview(args: argparse.Namespace, out: Output) -> int:
    rules, _ = _rules(args)
    r = client(args).preview_policy(args.name, channel=args.channel, url=args.source_url, subdirs=args.subdirs,
                                    rules=rules, limit=max(0, args.limit))
    if out.json_mode:
        out.json(r)
        return 0
    source = r["source"].get("channel") or r["source"].get("url")
    by_rule = ", ".join(f"{k} {v}" for k, v in r["by_rule"].items()) or "none"
    out.fields([("policy", f"{r['policy']} v{r['version']}"), ("source", source), ("subdirs", r["subdirs"]),
                ("records", r["records"]), ("pass", r["passed"]), ("excluded", f"{r['excluded']} ({by_rule})"),
                ("uninstallable", r["uninstallable_count"])])
    if r["excluded_records"]:
        out.console.print()
        out.table(["EXCLUDED", "RULE", "REASON"],
                  [(f"{e['subdir']}/{e['filename']}", e["rule"], e["reason"]) for e in r["excluded_records"]])
    if r["uninstallable"]:
        out.console.print()
        out.table(["UNINSTALLABLE", "FAILING DEPENDENCIES"],
                  [(f"{u['subdir']}/{u['filename']}", ", ".join(u["failing"])) for u in r["uninstallable"]])
    if r.get("truncated"):
        out.console.print(f"(lists cut at {args.limit}; use --limit or --json for more)", markup=False)
    return 0
