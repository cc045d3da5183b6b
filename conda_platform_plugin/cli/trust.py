"""``trust …``: the server's content-trust keys (``init``, ``rotate``, ``keys``: run on the server host,
on its data directory, like ``serve``) and a conda installation's trust in a server (``enable``,
``disable``, ``status``: see conda_platform_plugin/trustsetup.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import command, group
from .output import Output

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
    from ..errors import BadRequest

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
