"""``login``, ``logout``, ``whoami``, ``token …``, ``user …`` and ``audit``: who may do what.

Everything goes through the REST API except ``token create --admin``, which opens the server's
database directly on the server host: the way in when nobody holds a token yet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..client import ClientError, PlatformClient
from ..errors import PlatformError
from .common import client, command, group, remove_login, save_login
from .output import Output

ADMIN_DESCRIPTION = "created with token create --admin"
PERMISSION_HELP = ("channel.read|write|manage:CH[/SUB], or a global attribute such as channels.create, "
                   "users.manage, policies.manage, mirrors.channel.read|write|manage")


class LoginRefused(ClientError):
    status, code = 0, "login_refused"


class AdminTokenFailed(ClientError):
    status, code = 0, "admin_token_failed"


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number above 0, so the server never sees a nonsensical one."""

    def parse(value: str) -> float:
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {'whole ' if kind is int else ''}number") from None
        if n <= 0:
            raise argparse.ArgumentTypeError("must be more than 0")
        return n

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(subparsers, "login", login, "verify a token and remember it (and the server URL) for later commands")
    p.epilog = "Without --token the token is asked for on a terminal; '--token -' reads it from standard input."

    command(subparsers, "logout", logout, "forget the stored login")
    command(subparsers, "whoami", whoami, "show who the token in use belongs to and what it may do")

    sub = group(subparsers, "token", "create, list and revoke API tokens")
    p = command(sub, "create", token_create, "create a token: its secret is printed once")
    p.add_argument("--description", default=None, help="what the token is for")
    p.add_argument("--scope", dest="scopes", action="append", metavar="SCOPE",
                   help=f"limit the token to this permission (repeatable): {PERMISSION_HELP}")
    p.add_argument("--expires-in-days", type=_positive(float), metavar="N", help="expire after N days (default: never)")
    p.add_argument("--user", help="for another user or service account (needs users.manage)")
    p.add_argument("--admin", action="store_true",
                   help="on the server host, without HTTP: a token for the built-in admin, made in the database "
                        "of --data-dir (the way in when nobody has a token)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="with --admin: the server's data directory (env CONDA_PLATFORM_DATA_DIR)")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="with --admin: the server's database, when it is not SQLite in the data dir "
                        "(env CONDA_PLATFORM_DATABASE_URL)")

    p = command(sub, "list", token_list, "list tokens (never their secrets)")
    p.add_argument("--user", help="another user's tokens (needs users.manage)")

    p = command(sub, "revoke", token_revoke, "revoke a token: it stops working at once")
    p.add_argument("id", type=_positive(int), metavar="ID", help="token id, as shown by 'token list'")

    sub = group(subparsers, "user", "manage users, service accounts and their permissions")
    p = command(sub, "create", user_create, "create a user (or a service account with --service)")
    p.add_argument("name", metavar="NAME", help="lowercase letters, digits, '.', '_', '-', '@'")
    p.add_argument("--service", action="store_true", help="a service account, for CI and other machines")
    p.add_argument("--admin", action="store_true", help="an admin, who may do everything")

    command(sub, "list", user_list, "list users and service accounts")

    p = command(sub, "show", user_show, "show a user and their permissions")
    p.add_argument("name", metavar="NAME")

    p = command(sub, "grant", user_grant, "grant a user a permission")
    p.add_argument("name", metavar="NAME")
    p.add_argument("permission", metavar="PERMISSION", help=PERMISSION_HELP)

    p = command(sub, "revoke", user_revoke, "take a permission back from a user")
    p.add_argument("name", metavar="NAME")
    p.add_argument("permission", metavar="PERMISSION", help=PERMISSION_HELP)

    p = command(subparsers, "audit", audit, "show the audit log of every write, newest first (admin)")
    p.add_argument("--actor", help="only this user's actions")
    p.add_argument("--page", type=_positive(int), default=1, help="page number (default 1)")
    p.add_argument("--per-page", type=_positive(int), default=50, help="entries per page (default 50, at most 1000)")


def _warn(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# -- login ---------------------------------------------------------------------------------------
def _read_token(args: argparse.Namespace) -> str:
    """--token TOKEN, --token - (standard input), or a hidden prompt on a terminal."""
    given = args.given_token
    if given == "-":
        token = sys.stdin.readline().strip()
    elif given:
        token = given
    elif sys.stdin.isatty() and not args.json:
        import getpass

        token = getpass.getpass(f"token for {args.url}: ").strip()
    else:
        raise LoginRefused("no token: give --token TOKEN, or --token - to read it from standard input")
    if not token:
        raise LoginRefused("no token: the token is empty")
    return token


def login(args: argparse.Namespace, out: Output) -> int:
    token = _read_token(args)
    me = PlatformClient(args.url, token=token).whoami()
    if me.get("anonymous") or not me.get("name"):
        raise LoginRefused(f"the server at {args.url} did not accept the token as anyone's: not logged in")
    path = save_login(PlatformClient(args.url).url, token)
    out.result({"url": args.url, "name": me["name"], "file": str(path)},
               f"logged in to {args.url} as {me['name']} (saved in {path})")
    return 0


def logout(args: argparse.Namespace, out: Output) -> int:
    path = remove_login()
    if path is None:
        out.result({"removed": None}, "not logged in: nothing to forget")
    else:
        out.result({"removed": str(path)}, f"logged out: removed {path} (the token itself still works until revoked)")
    return 0


def whoami(args: argparse.Namespace, out: Output) -> int:
    me = client(args).whoami()
    if out.json_mode:
        out.json({**me, "url": args.url})
    elif me.get("anonymous"):
        out.console.print(f"anonymous at {args.url}: no token (see 'conda-platform login')", markup=False)
    else:
        scopes = me.get("token_scopes")
        out.fields([
            ("name", me["name"]),
            ("kind", me.get("kind")),
            ("admin", me.get("admin")),
            ("permissions", me.get("permissions")),
            ("token", f"#{me.get('token_id')}"),
            ("token scopes", "all of the user's permissions" if scopes is None else scopes),
            ("server", args.url),
        ])
    return 0


# -- tokens --------------------------------------------------------------------------------------
async def _admin_token(data_dir: Path, database_url: str | None) -> tuple[str, bool]:
    from proxy.config import Config
    from proxy.platform import Platform

    platform = await Platform.open(Config(data_dir=data_dir, database_url=database_url))
    try:
        if platform.bootstrap_token:  # an empty database: Platform.open just made the admin and its token
            return platform.bootstrap_token, True
        return await platform.admin_token(ADMIN_DESCRIPTION), False
    finally:
        await platform.close()


def _token_create_admin(args: argparse.Namespace, out: Output) -> int:
    if args.scopes or args.expires_in_days is not None or args.user or args.description is not None:
        args.parser.error("--admin makes an unscoped, non-expiring token for the built-in admin: "
                          "it takes no --scope, --expires-in-days, --user or --description")
    data_dir = args.data_dir or (Path(os.environ["CONDA_PLATFORM_DATA_DIR"])
                                 if os.environ.get("CONDA_PLATFORM_DATA_DIR") else None)
    if data_dir is None:
        args.parser.error("--admin needs --data-dir DIR (or CONDA_PLATFORM_DATA_DIR): the server's data directory")
    try:
        secret, bootstrap = asyncio.run(_admin_token(data_dir, args.database_url))
    except PlatformError:
        raise
    except Exception as e:  # noqa: BLE001 - a database that cannot be opened, in whatever way: one line
        reason = getattr(e, "strerror", None) or next(iter(str(e).splitlines()), "") or type(e).__name__
        raise AdminTokenFailed(f"cannot open the platform database of {data_dir}: {reason}",
                               detail={"data_dir": str(data_dir)}) from None
    if out.json_mode:
        out.json({"user": "admin", "token": secret, "bootstrap": bootstrap})
    else:
        first = " (the database was empty: created the admin user)" if bootstrap else ""
        _warn(f"created an admin token{first}; it is not shown again: keep it safe")
        print(secret, flush=True)
    return 0


def token_create(args: argparse.Namespace, out: Output) -> int:
    if args.admin:
        return _token_create_admin(args, out)
    if args.data_dir is not None or args.database_url is not None:
        args.parser.error("--data-dir and --database-url go with --admin")
    token = client(args).create_token(description=args.description or "", scopes=args.scopes,
                                      expires_in_days=args.expires_in_days, user=args.user)
    if out.json_mode:
        out.json(token)
    else:
        limits = f", scopes {', '.join(token['scopes'])}" if token.get("scopes") is not None else ""
        expires = f", expires {token['expires_at']}" if token.get("expires_at") else ""
        _warn(f"created token #{token['id']} for {token['user']}{limits}{expires}; "
              "it is not shown again: keep it safe")
        print(token["token"], flush=True)
    return 0


def token_list(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_tokens(args.user)
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(t["id"], t["user"], t["description"], "all" if t["scopes"] is None else ", ".join(t["scopes"]),
             t["created_at"], t["last_used_at"] or "never", t["expires_at"] or "never", t["state"])
            for t in data["items"]]
    out.table(["ID", "USER", "DESCRIPTION", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "STATE"], rows,
              empty="no tokens")
    return 0


def token_revoke(args: argparse.Namespace, out: Output) -> int:
    token = client(args).revoke_token(args.id)
    out.result(token, f"revoked token #{token['id']} of {token['user']}")
    return 0


# -- users ---------------------------------------------------------------------------------------
def _show_user(out: Output, user: dict) -> None:
    out.fields([
        ("name", user["name"]),
        ("kind", user["kind"]),
        ("admin", user["admin"]),
        ("permissions", user["permissions"]),
    ])


def user_create(args: argparse.Namespace, out: Output) -> int:
    user = client(args).create_user(args.name, kind="service" if args.service else "user", admin=args.admin)
    kind = "service account" if user["kind"] == "service" else "admin" if user["admin"] else "user"
    out.result(user, f"created {kind} {user['name']}: give it a token with "
                     f"'conda-platform token create --user {user['name']}'")
    return 0


def user_list(args: argparse.Namespace, out: Output) -> int:
    data = client(args).list_users()
    if out.json_mode:
        out.json(data)
        return 0
    rows = [(u["name"], u["kind"], "yes" if u["admin"] else "", ", ".join(u["permissions"]))
            for u in data["items"]]
    out.table(["NAME", "KIND", "ADMIN", "PERMISSIONS"], rows, empty="no users")
    return 0


def user_show(args: argparse.Namespace, out: Output) -> int:
    user = client(args).get_user(args.name)
    if out.json_mode:
        out.json(user)
    else:
        _show_user(out, user)
    return 0


def user_grant(args: argparse.Namespace, out: Output) -> int:
    user = client(args).grant(args.name, args.permission)
    out.result(user, f"granted {args.permission} to {user['name']}; now: {', '.join(user['permissions']) or '-'}")
    return 0


def user_revoke(args: argparse.Namespace, out: Output) -> int:
    user = client(args).revoke(args.name, args.permission)
    out.result(user, f"revoked {args.permission} from {user['name']}; now: {', '.join(user['permissions']) or '-'}")
    return 0


# -- audit ---------------------------------------------------------------------------------------
def audit(args: argparse.Namespace, out: Output) -> int:
    data = client(args).audit(actor=args.actor, page=args.page, per_page=args.per_page)
    if out.json_mode:
        out.json(data)
        return 0
    items, total = data["items"], data["total"]
    rows = [(e["at"], e["actor"], e["action"], e["target"], e["status"], e["client"]) for e in items]
    first = (data["page"] - 1) * data["per_page"]
    last = first + len(items)
    footer = None
    if items and (first or last < total):
        footer = f"{first + 1}-{last} of {total}" + (f": more with --page {data['page'] + 1}" if last < total else "")
    empty = "the audit log is empty" if total == 0 or data["page"] == 1 else f"nothing on page {data['page']}"
    out.table(["AT", "ACTOR", "ACTION", "TARGET", "STATUS", "CLIENT"], rows, empty=empty, footer=footer)
    return 0
