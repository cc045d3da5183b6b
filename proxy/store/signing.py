"""The server's content-trust keys and the signing of the conda records it publishes.

Keys live as files in ``<data dir>/trust/`` (no database table: ``trust init`` runs on the server
host like ``serve``, before or beside a running server, and a file of 64 hex characters is what an
operator exports, backs up and deletes):

- ``root.key`` (optional: exported with ``--export-root-key`` and then removed for offline keeping),
  ``key_mgr.key``, ``pkg_mgr.key`` (the key the server signs records with), each mode 0600;
- ``<N>.root.json`` (every root version: clients walk the chain 1 → N) and ``key_mgr.json``.

Signing 500,000 records costs about 30 s (60 µs each: canonical JSON + ed25519), so signatures are
kept in a cache keyed by (sha256 of the stored record bytes, pkg_mgr key): an incremental publish
signs only the records of the names it renders, a full render of already-signed records reads them
back, and a new pkg_mgr key starts a cache of its own (the next publish re-signs everything).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from conda_platform_plugin import trust
from conda_platform_plugin.errors import BadRequest, Conflict, NotFound

ROOT_LIFETIME = timedelta(days=365 * 2)
KEY_MGR_LIFETIME = timedelta(days=365)
ROLES = ("root", "key_mgr", "pkg_mgr")
_ROOT_FILE = re.compile(r"^([1-9][0-9]{0,8})\.root\.json$")


def _write_private(path: Path, data: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(trust.canonical_json(doc))
    tmp.replace(path)


class TrustStore:
    """The key files and metadata of one server (all its channels share them)."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    # -- reading -------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.dir / "key_mgr.json").is_file() and (self.dir / "pkg_mgr.key").is_file()

    def root_versions(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _ROOT_FILE.match(p.name)))

    def root(self, version: int | None = None) -> dict:
        versions = self.root_versions()
        if not versions:
            raise NotFound("this server has no trust metadata (run 'conda-platform trust init' on the server host)")
        n = versions[-1] if version is None else version
        path = self.dir / f"{n}.root.json"
        if not path.is_file():
            raise NotFound(f"root version {n} does not exist")
        return orjson.loads(path.read_bytes())

    def key_mgr(self) -> dict:
        path = self.dir / "key_mgr.json"
        if not path.is_file():
            raise NotFound("this server has no key_mgr.json (run 'conda-platform trust init' on the server host)")
        return orjson.loads(path.read_bytes())

    def file(self, name: str) -> Path | None:
        """A served metadata file (``<N>.root.json`` or ``key_mgr.json``), or None."""
        if name != "key_mgr.json" and not _ROOT_FILE.match(name):
            return None
        path = self.dir / name
        return path if path.is_file() else None

    def private(self, role: str) -> str | None:
        path = self.dir / f"{role}.key"
        return path.read_text().strip() if path.is_file() else None

    def status(self) -> dict:
        if not self.initialized:
            return {"initialized": False}
        root, key_mgr = self.root(), self.key_mgr()
        return {
            "initialized": True,
            "root_version": root["signed"]["version"],
            "root_keys": root["signed"]["delegations"]["root"]["pubkeys"],
            "root_key_on_server": (self.dir / "root.key").is_file(),
            "root_expires": root["signed"]["expiration"],
            "key_mgr_version": key_mgr["signed"]["version"],
            "key_mgr_keys": root["signed"]["delegations"]["key_mgr"]["pubkeys"],
            "key_mgr_expires": key_mgr["signed"]["expiration"],
            "pkg_mgr_keys": key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"],
        }

    # -- writing -------------------------------------------------------------------------------
    def init(self, now: datetime | None = None, export_root_key: Path | None = None,
             keep_root_key: bool = True) -> dict:
        """New root, key_mgr and pkg_mgr keys; ``1.root.json`` and ``key_mgr.json`` version 1."""
        if self.root_versions() or self.initialized:
            raise Conflict(f"trust metadata already exists in {self.dir} (use 'trust rotate')", code="trust_exists")
        now = now or datetime.now(timezone.utc)
        self.dir.mkdir(parents=True, exist_ok=True)
        root_key, key_mgr_key, pkg_mgr_key = (trust.new_private_key() for _ in ROLES)
        self._write_root(1, root_key, [root_key], trust.public_key(key_mgr_key), now)
        self._write_key_mgr(1, key_mgr_key, [trust.public_key(pkg_mgr_key)], now)
        _write_private(self.dir / "key_mgr.key", key_mgr_key)
        _write_private(self.dir / "pkg_mgr.key", pkg_mgr_key)
        self._place_root_key(root_key, export_root_key, keep_root_key)
        return self.status()

    def rotate(self, role: str, now: datetime | None = None, root_key_file: Path | None = None,
               export_root_key: Path | None = None, keep_root_key: bool = True) -> dict:
        """A new key for ``role``. pkg_mgr: a new key_mgr.json version delegating to it and to the
        previous key (what the indexes are signed with until each channel's next publish). key_mgr: a
        new root version delegating to it (signed by the root key) and key_mgr.json signed by it.
        root: ``N+1.root.json`` listing the new root key, signed by the old and the new one."""
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        if not self.initialized:
            raise NotFound("this server has no trust metadata (run 'conda-platform trust init' first)")
        now = now or datetime.now(timezone.utc)
        root, key_mgr = self.root(), self.key_mgr()
        version = root["signed"]["version"]
        pkg_pubs = key_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"]
        if role == "pkg_mgr":
            key = trust.new_private_key()
            self._write_key_mgr(key_mgr["signed"]["version"] + 1, self._need("key_mgr"),
                                [trust.public_key(key), pkg_pubs[0]], now)
            _write_private(self.dir / "pkg_mgr.key", key)
            return self.status()
        old_root = self._root_key(root_key_file)
        if role == "key_mgr":
            key = trust.new_private_key()
            self._write_root(version + 1, old_root, [old_root], trust.public_key(key), now)
            self._write_key_mgr(key_mgr["signed"]["version"] + 1, key, pkg_pubs, now)
            _write_private(self.dir / "key_mgr.key", key)
            self._place_root_key(old_root, export_root_key, keep_root_key and (self.dir / "root.key").is_file())
            return self.status()
        key = trust.new_private_key()
        key_mgr_pub = root["signed"]["delegations"]["key_mgr"]["pubkeys"]
        self._write_root(version + 1, key, [old_root, key], key_mgr_pub[0], now)
        self._place_root_key(key, export_root_key, keep_root_key)
        return self.status()

    def remove_root_key(self) -> None:
        (self.dir / "root.key").unlink(missing_ok=True)

    def _need(self, role: str) -> str:
        key = self.private(role)
        if key is None:
            raise NotFound(f"the {role} key is not in {self.dir}")
        return key

    def _root_key(self, given: Path | None) -> str:
        if given is not None:
            try:
                key = given.read_text().strip()
            except OSError as e:
                raise BadRequest(f"cannot read the root key {given}: {e.strerror or e}") from None
        else:
            key = self.private("root")
            if key is None:
                raise BadRequest("the root key is not on the server: pass the exported one with --root-key FILE")
        pub = trust.public_key(key)
        if pub not in self.root()["signed"]["delegations"]["root"]["pubkeys"]:
            raise BadRequest("that key is not the current root key")
        return key

    def _place_root_key(self, key: str, export: Path | None, keep: bool) -> None:
        if export is not None:
            _write_private(Path(export), key)
        if keep:
            _write_private(self.dir / "root.key", key)
        else:
            self.remove_root_key()

    def _write_root(self, version: int, root_key: str, signers: list[str], key_mgr_pub: str,
                    now: datetime) -> None:
        doc = trust.delegating_metadata(
            "root", {"root": ([trust.public_key(root_key)], 1), "key_mgr": ([key_mgr_pub], 1)},
            version=version, now=now, lifetime=ROOT_LIFETIME)
        for key in signers:  # OpenPGP-style, as conda-content-trust's root signing makes them
            trust.sign_signable(doc, key, openpgp_at=now)
        _write_json(self.dir / f"{version}.root.json", doc)

    def _write_key_mgr(self, version: int, key_mgr_key: str, pkg_mgr_pubs: list[str], now: datetime) -> None:
        """The signing key first; after a rotation the previous one too, so that the records signed
        with it verify until their channel's next publish re-signs them."""
        doc = trust.delegating_metadata("key_mgr", {"pkg_mgr": (pkg_mgr_pubs, 1)},
                                        version=version, now=now, lifetime=KEY_MGR_LIFETIME)
        _write_json(self.dir / "key_mgr.json", trust.sign_signable(doc, key_mgr_key))


def _cache(path: Path, table: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # several server processes may share the data dir: wait for another's write rather than fail
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"CREATE TABLE IF NOT EXISTS {table} (digest BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    return db


def _lookup(db: sqlite3.Connection, table: str, digests: list[bytes]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for i in range(0, len(digests), 500):
        part = digests[i : i + 500]
        found.update(db.execute(f"SELECT digest, value FROM {table} WHERE digest IN ({','.join('?' * len(part))})",
                                part))
    return found


class UpstreamSignatures:
    """Mirrored records' signatures from their upstream repodata, by sha256 of the stored record
    bytes: the stored record parses to the upstream's, so its signatures stay valid beside ours."""

    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None  # made by the first mirrored signature
        self._lock = threading.Lock()

    def keep(self, items: Sequence[tuple[bytes, dict]]) -> None:
        rows = [(hashlib.sha256(raw).digest(), orjson.dumps(sigs, option=orjson.OPT_SORT_KEYS)) for raw, sigs in items]
        with self._lock:
            if self._db is None:
                self._db = _cache(self.path, "upstream")
            self._db.executemany("INSERT OR REPLACE INTO upstream VALUES (?, ?)", rows)

    def lookup(self, digests: list[bytes]) -> dict[bytes, bytes]:
        with self._lock:
            if self._db is None:
                if not self.path.is_file():
                    return {}
                self._db = _cache(self.path, "upstream")
            return _lookup(self._db, "upstream", digests)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Signer:
    """Signs records with the pkg_mgr key; signatures cached on disk by (record digest, key)."""

    def __init__(self, private_hex: str, cache_dir: Path, upstream: UpstreamSignatures | None = None):
        self._key = trust._private(private_hex)
        self.public = trust.public_key(private_hex)
        self._prefix = orjson.dumps(self.public) + b':{"signature":"'
        self._db = _cache(cache_dir / f"{self.public[:16]}.sqlite", "sig")
        self._lock = threading.Lock()
        self.upstream = upstream

    def signatures(self, records: Sequence[tuple[bytes, dict]]) -> list[bytes]:
        """The JSON value ``{"<key>":{"signature":"<hex>"}}`` for each (stored bytes, parsed record)."""
        digests = [hashlib.sha256(raw).digest() for raw, _ in records]
        with self._lock:
            found = _lookup(self._db, "sig", digests)
            new = []
            for digest, (_, record) in zip(digests, records):
                if digest not in found:
                    found[digest] = self._key.sign(trust.canonical_json(record))
                    new.append((digest, found[digest]))
            if new:
                self._db.executemany("INSERT OR REPLACE INTO sig VALUES (?, ?)", new)
        prefix = b"{" + self._prefix
        out = [prefix + found[d].hex().encode() + b'"}}' for d in digests]
        theirs = self.upstream.lookup(digests) if self.upstream is not None else {}
        if theirs:  # merged into the same filename's map, ours last (JSON: the last duplicate wins)
            out = [b"{" + theirs[d][1:-1] + b"," + o[1:] if d in theirs and len(theirs[d]) > 2 else o
                   for d, o in zip(digests, out)]
        return out

    def close(self) -> None:
        self._db.close()


class Signing:
    """What the publisher asks before each render: the current signer (None without trust init).
    Reads the key file each time, so a rotation by the CLI reaches a running server."""

    def __init__(self, data_dir: Path):
        self.store = TrustStore(Path(data_dir) / "trust")
        self._signer: Signer | None = None
        self.upstream = UpstreamSignatures(self.store.dir / "signatures" / "upstream.sqlite")

    def signer(self) -> Signer | None:
        key = self.store.private("pkg_mgr")
        if key is None:
            return None
        if self._signer is None or self._signer.public != trust.public_key(key):
            if self._signer is not None:
                self._signer.close()
            self._signer = Signer(key, self.store.dir / "signatures", self.upstream)
        return self._signer

    def close(self) -> None:
        if self._signer is not None:
            self._signer.close()
            self._signer = None
        self.upstream.close()
