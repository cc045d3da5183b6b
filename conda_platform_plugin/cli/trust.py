"""``trust …``: the server's content-trust keys (``init``, ``rotate``, ``keys``: run on the server host,
on its data directory, like ``serve``) and a conda installation's trust in a server (``enable``,
``disable``, ``status``: they write ``<prefix>/etc/conda/1.root.json`` and the prefix's ``.condarc``,
and need no conda: the prefix is ``--prefix``, else ``$CONDA_PREFIX``, else this Python's prefix)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from .. import trust as content_trust
from ..errors import BadRequest, PlatformError
from .common import client, command, group
from .output import Output


class TrustSetupError(PlatformError):
    status, code = 0, "trust_setup_failed"

DATA_DIR_HELP = "the server's data directory (env CONDA_PLATFORM_DATA_DIR; default ./data)"


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = group(subparsers, "trust", "signed metadata: the server's signing keys, and trusting a server from conda")

    p = command(sub, "init", init, "create the server's root, key_mgr and pkg_mgr keys (on the server host)",
                description="Create the server's content-trust keys in DIR/trust: the root key, the key_mgr key "
                            "and the pkg_mgr key that signs every conda record published; write 1.root.json and "
                            "key_mgr.json. Keep the root key offline: --export-root-key FILE --remove-root-key.")
    _data_dir(p)
    _root_key_options(p)

    p = command(sub, "rotate", rotate, "replace one signing key: pkg_mgr, key_mgr or root (on the server host)",
                description="pkg_mgr: a new signing key and key_mgr.json version (everything is re-signed on the "
                            "next publish). key_mgr: a new root version delegating to a new key_mgr key (needs the "
                            "root key). root: N+1.root.json with a new root key, signed by the old and the new one.")
    p.add_argument("role", choices=("pkg_mgr", "key_mgr", "root"), help="which key to replace")
    _data_dir(p)
    p.add_argument("--root-key", type=Path, metavar="FILE",
                   help="the exported root key, when it is not kept on the server")
    _root_key_options(p)

    p = command(sub, "keys", keys, "show the server's trust metadata: versions, keys, expiry (on the server host)")
    _data_dir(p)

    p = command(sub, "enable", enable, "trust the server's signed metadata in a conda installation",
                description="Fetch the server's root metadata (--url), install it as <prefix>/etc/conda/1.root.json "
                            "and set extra_safety_checks: true and signing_metadata_url_base in <prefix>/.condarc "
                            "(other keys are kept).")
    _prefix(p)
    p = command(sub, "disable", disable, "stop verifying signed metadata (extra_safety_checks: false)")
    _prefix(p)
    p = command(sub, "status", status, "show whether a conda installation trusts a server's signed metadata")
    _prefix(p)


def _prefix(p: argparse.ArgumentParser) -> None:
    # a string, not a Path: under `conda platform` conda's own context reads args.prefix too
    p.add_argument("--prefix", default=None, metavar="DIR",
                   help="the conda installation (default: $CONDA_PREFIX, else this Python's prefix)")


def conda_prefix(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("CONDA_PREFIX") or sys.prefix)


def root_path(prefix: Path) -> Path:
    """Where conda (and the plugin) look for the trusted root: ``<prefix>/etc/conda/1.root.json``."""
    return prefix / "etc" / "conda" / "1.root.json"


def condarc_path(prefix: Path) -> Path:
    return prefix / ".condarc"


def _read_condarc(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, yaml.YAMLError) as e:
        raise TrustSetupError(f"cannot read {path}: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TrustSetupError(f"{path} is not a YAML mapping")
    return doc


def _write_condarc(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, default_flow_style=False, sort_keys=False))
    tmp.replace(path)


def enable(args: argparse.Namespace, out: Output) -> int:
    prefix = conda_prefix(args.prefix)
    root = client(args).request("GET", "/api/trust/1.root.json")
    try:  # a root signs itself: refuse what is not a well-formed, self-consistent root
        content_trust.check_metadata(root, "root")
        keys = root["signed"]["delegations"]["root"]
        content_trust.verify_signable(root, keys["pubkeys"], keys["threshold"])
    except (content_trust.TrustError, KeyError, TypeError) as e:
        raise TrustSetupError(f"the server's 1.root.json is not valid root metadata: {e}") from None
    target = root_path(prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content_trust.canonical_json(root))
    rc = condarc_path(prefix)
    doc = _read_condarc(rc)
    doc["extra_safety_checks"] = True
    doc["signing_metadata_url_base"] = f"{args.url.rstrip('/')}/api/trust"
    plugins = doc.get("plugins") if isinstance(doc.get("plugins"), dict) else {}
    plugins.setdefault("platform_url", args.url.rstrip("/"))
    doc["plugins"] = plugins
    _write_condarc(rc, doc)
    out.result({"prefix": str(prefix), "root": str(target), "root_version": root["signed"]["version"],
                "root_keys": keys["pubkeys"], "condarc": str(rc)},
               f"trusting {args.url}: root installed as {target}; extra_safety_checks and "
               f"signing_metadata_url_base set in {rc}")
    return 0


def disable(args: argparse.Namespace, out: Output) -> int:
    prefix = conda_prefix(args.prefix)
    rc = condarc_path(prefix)
    doc = _read_condarc(rc)
    doc["extra_safety_checks"] = False
    _write_condarc(rc, doc)
    out.result({"prefix": str(prefix), "extra_safety_checks": False, "condarc": str(rc)},
               f"signature verification off in {rc} (the installed root stays: 'trust enable' turns it on again)")
    return 0


def status(args: argparse.Namespace, out: Output) -> int:
    prefix = conda_prefix(args.prefix)
    doc = _read_condarc(condarc_path(prefix))
    root = root_path(prefix)
    info: dict = {"prefix": str(prefix), "extra_safety_checks": bool(doc.get("extra_safety_checks", False)),
                  "signing_metadata_url_base": doc.get("signing_metadata_url_base"), "root": None}
    if root.is_file():
        try:
            signed = yaml.safe_load(root.read_text())["signed"]
            info["root"] = {"path": str(root), "version": signed["version"], "expires": signed["expiration"],
                            "keys": signed["delegations"]["root"]["pubkeys"]}
        except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
            raise TrustSetupError(f"{root} is not root metadata: {e}") from None
    info["enabled"] = info["extra_safety_checks"] and info["root"] is not None \
        and bool(info["signing_metadata_url_base"])
    if out.json_mode:
        out.json(info)
        return 0
    out.fields([
        ("prefix", info["prefix"]),
        ("verification", "on" if info["enabled"] else "off"),
        ("extra_safety_checks", info["extra_safety_checks"]),
        ("signing_metadata_url_base", info["signing_metadata_url_base"]),
        ("trusted root", f"version {info['root']['version']} ({root}), expires {info['root']['expires']}"
         if info["root"] else "not installed"),
    ])
    return 0


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR", help=DATA_DIR_HELP)


def _root_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export-root-key", type=Path, metavar="FILE",
                   help="write the (new) root private key to FILE (mode 0600) for offline keeping")
    p.add_argument("--remove-root-key", action="store_true",
                   help="do not keep the root key on the server (export it first)")


def _store(args: argparse.Namespace):  # noqa: ANN202 - a proxy TrustStore
    # a server-host command: like `serve`, the only places this package imports the server (lazily)
    from proxy.config import Config
    from proxy.store.signing import TrustStore

    config = Config(data_dir=args.data_dir) if args.data_dir is not None else Config()
    return TrustStore(config.data_dir / "trust")


def _check_export(args: argparse.Namespace) -> None:
    if args.remove_root_key and args.export_root_key is None:
        raise BadRequest("--remove-root-key without --export-root-key would lose the root key for good")


def _report(out: Output, status: dict, directory: Path) -> None:
    if out.json_mode:
        out.json({**status, "directory": str(directory)})
        return
    if not status.get("initialized"):
        out.console.print(f"no trust metadata in {directory} (run 'conda-platform trust init')", markup=False)
        return
    out.fields([
        ("directory", str(directory)),
        ("root", f"version {status['root_version']}, expires {status['root_expires']}"),
        ("root keys", status["root_keys"]),
        ("root key on server", status["root_key_on_server"]),
        ("key_mgr", f"version {status['key_mgr_version']}, expires {status['key_mgr_expires']}"),
        ("key_mgr keys", status["key_mgr_keys"]),
        ("pkg_mgr keys (signing)", status["pkg_mgr_keys"]),
    ])


def init(args: argparse.Namespace, out: Output) -> int:
    _check_export(args)
    store = _store(args)
    status = store.init(export_root_key=args.export_root_key, keep_root_key=not args.remove_root_key)
    _report(out, status, store.dir)
    return 0


def rotate(args: argparse.Namespace, out: Output) -> int:
    _check_export(args)
    store = _store(args)
    status = store.rotate(args.role, root_key_file=args.root_key, export_root_key=args.export_root_key,
                          keep_root_key=not args.remove_root_key)
    _report(out, status, store.dir)
    return 0


def keys(args: argparse.Namespace, out: Output) -> int:
    store = _store(args)
    _report(out, store.status(), store.dir)
    return 0
