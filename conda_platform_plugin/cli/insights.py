"""``package dependents|badges|sbom``: who needs a package, its badges' embed snippets, its SBOM."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ..client import LocalFileError
from .common import client, command
from .output import Output

SNIPPET_FORMATS = ("markdown", "html", "rst", "asciidoc")


def register_package_insights(sub: argparse._SubParsersAction, channel_help: str, ref_help: str,
                              add_type) -> None:  # noqa: ANN001
    p = command(sub, "dependents", dependents, "the packages of the channel that depend on a package, and how")
    p.add_argument("channel", metavar="CH", help=channel_help)
    p.add_argument("name", metavar="NAME", help="package name")
    add_type(p)

    p = command(sub, "badges", badges, "embed snippets of a package's badges (version, license, downloads, CVEs …)")
    p.add_argument("channel", metavar="CH", help=channel_help)
    p.add_argument("name", metavar="NAME", help="package name")
    p.add_argument("--format", choices=SNIPPET_FORMATS, default="markdown", help="snippet format (default markdown)")
    p.add_argument("--with-token", action="store_true",
                   help="a private channel's image URLs carry your token (anyone who sees the page can use it)")
    add_type(p)

    p = command(sub, "sbom", sbom, "the SBOM of a package file, its dependencies resolved in the channel")
    p.add_argument("channel", metavar="CH", help=channel_help)
    p.add_argument("ref", metavar="SUBDIR/FILENAME", help=ref_help)
    p.add_argument("--format", choices=("cyclonedx", "spdx"), default="cyclonedx",
                   help="CycloneDX 1.6 JSON (default) or SPDX 2.3 JSON")
    p.add_argument("-o", "--output", type=Path, metavar="OUT", help="write to this file (default: standard output)")


def dependents(args: argparse.Namespace, out: Output) -> int:
    data = client(args).artifact_dependents(args.channel, args.name, args.type)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(d["name"] if i == 0 else "", s["spec"], ", ".join(s["subdirs"]), ", ".join(s["versions"]))
            for d in data["items"] for i, s in enumerate(d["specs"])]
    out.table(["DEPENDENT", "ASKS FOR", "SUBDIRS", "ITS VERSIONS"], rows, empty=f"nothing depends on {args.name}")
    return 0


def badges(args: argparse.Namespace, out: Output) -> int:
    data = client(args).artifact_badges(args.channel, args.name, args.type, with_token=args.with_token)
    if out.json_mode:
        out.json(data)
        return 0
    for b in data["badges"]:
        out.console.print(b["snippets"][args.format], markup=False, highlight=False, soft_wrap=True)
    return 0


def sbom(args: argparse.Namespace, out: Output) -> int:
    doc = client(args).file_sbom(args.channel, args.ref, args.format)
    text = json.dumps(doc, indent=2) + "\n"
    if args.output is None:
        print(text, end="")
        return 0
    target = args.output
    try:  # whole or not at all
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=".sbom-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as e:
        raise LocalFileError(f"cannot write {target}: {e.strerror or e}") from None
    if out.json_mode:
        out.json({"file": args.ref, "format": args.format, "path": str(target)})
    else:
        out.console.print(f"saved the {args.format} SBOM of {args.ref} to {target}", markup=False)
    return 0
