"""``channel …``: create, list, show, update, delete, freeze and unfreeze channels and subchannels."""

from __future__ import annotations

import argparse

from .common import client, command, confirm, group
from .output import Output

NAME_HELP = "channel name: CH, or CH/SUB for a subchannel"


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = group(subparsers, "channel", "manage channels and subchannels")

    p = command(sub, "create", create, "create a channel (or CH/SUB: a subchannel)")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--description", default="", help="a one-line description")
    p.add_argument("--private", action="store_true", help="only users with access can see it (default: public)")

    p = command(sub, "list", list_, "list channels (or the subchannels of CH)")
    p.add_argument("parent", metavar="CH", nargs="?", help="list the subchannels of this channel")

    p = command(sub, "show", show, "show a channel")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)

    p = command(sub, "update", update, "change a channel's description or privacy")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--description", help="new description")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_const", const=True, help="make it private")
    vis.add_argument("--public", dest="private", action="store_const", const=False, help="make it public")

    p = command(sub, "delete", delete, "delete a channel with all its packages and subchannels")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = command(sub, "freeze", freeze, "freeze: clients keep seeing the current contents until unfreeze")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)

    p = command(sub, "unfreeze", unfreeze, "unfreeze and publish everything that changed meanwhile")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)


def _repo_url(args: argparse.Namespace, ch: dict) -> str:
    return args.url.rstrip("/") + ch["url"]


def _show(out: Output, args: argparse.Namespace, ch: dict) -> None:
    pairs = [
        ("name", ch["name"]),
        ("description", ch.get("description")),
        ("private", ch.get("private")),
        ("frozen", ch.get("frozen")),
        ("generation", ch.get("generation")),
        ("published generation", ch.get("published_generation")),
        ("conda channel URL", _repo_url(args, ch)),
        ("created", ch.get("created_at")),
        ("updated", ch.get("updated_at")),
    ]
    if ch.get("subchannels") is not None:
        pairs.append(("subchannels", ch["subchannels"]))
    out.fields(pairs)


def create(args: argparse.Namespace, out: Output) -> int:
    ch = client(args).create_channel(args.name, description=args.description, private=args.private)
    kind = "subchannel" if ch.get("parent") else "channel"
    out.result(ch, f"created {kind} {ch['name']}: {_repo_url(args, ch)}")
    return 0


def list_(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_channels(args.parent)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(c["name"], "private" if c["private"] else "public", "frozen" if c["frozen"] else "",
             c["published_generation"], c["description"]) for c in data["items"]]
    empty = f"channel {args.parent} has no subchannels" if args.parent else "no channels yet"
    out.table(["NAME", "ACCESS", "FROZEN", "GENERATION", "DESCRIPTION"], rows, empty=empty)
    return 0


def show(args: argparse.Namespace, out: Output) -> int:
    ch = client(args).get_channel(args.name)
    if out.json_mode:
        out.json(ch)
    else:
        _show(out, args, ch)
    return 0


def update(args: argparse.Namespace, out: Output) -> int:
    if args.description is None and args.private is None:
        args.parser.error("nothing to update: give --description, --private or --public")
    ch = client(args).update_channel(args.name, description=args.description, private=args.private)
    if out.json_mode:
        out.json(ch)
    else:
        out.console.print(f"updated {ch['name']}", markup=False)
        _show(out, args, ch)
    return 0


def delete(args: argparse.Namespace, out: Output) -> int:
    confirm(args, f"Delete channel {args.name} with all its packages and subchannels?", f"delete channel {args.name}")
    data = client(args).delete_channel(args.name)
    out.result(data, f"deleted channel {data.get('deleted', args.name)}")
    return 0


def freeze(args: argparse.Namespace, out: Output) -> int:
    ch = client(args).freeze_channel(args.name)
    out.result(ch, f"froze {ch['name']}: clients keep generation {ch['published_generation']} until unfreeze")
    return 0


def unfreeze(args: argparse.Namespace, out: Output) -> int:
    ch = client(args).unfreeze_channel(args.name)
    out.result(ch, f"unfroze {ch['name']}: publishing generation {ch['published_generation']}")
    return 0
