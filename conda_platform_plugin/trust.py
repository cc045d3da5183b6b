"""Signed metadata in the conda-content-trust format, implemented with ``cryptography``.

conda-content-trust is not installable from the package index, so its format is reproduced here
exactly (it is the format stock conda verifies): a *signable* is ``{"signed": …, "signatures":
{<public key hex>: {"signature": <hex>}}}``; signatures are ed25519 over the canonical JSON of
``signed`` (``json.dumps(indent=2, sort_keys=True)``, UTF-8); root metadata may carry OpenPGP
signatures (``{"other_headers", "signature"}``: ed25519 over the SHA-256 of data + OpenPGP v4
hashed headers + trailer, RFC 4880 §5.2.4). Trust flows root → key_mgr → pkg_mgr; a package
record is signed by a pkg_mgr key, and repodata keeps the signatures beside the records:
``repodata["signatures"][<filename>] = {<pkg_mgr key>: {"signature": …}}``.

Pure: no I/O; times are passed in.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SPEC_VERSION = "0.6.0"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DELEGATING_TYPES = ("root", "key_mgr")


class TrustError(ValueError):
    """Metadata that is malformed, expired, or not signed by enough of the expected keys."""


# -- primitives ----------------------------------------------------------------------------------
def canonical_json(obj: object) -> bytes:
    """The bytes that are signed (conda-content-trust's ``canonserialize``; stdlib json on purpose:
    orjson escapes and formats differently, and a single byte of difference breaks signatures)."""
    return json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")


def new_private_key() -> str:
    """A fresh ed25519 private key as 64 hex characters (the raw 32-byte seed)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption()).hex()


def _private(private_hex: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
    except ValueError as e:
        raise TrustError("a private key must be 64 hex characters (an ed25519 seed)") from e


def public_key(private_hex: str) -> str:
    return _private(private_hex).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _public(public_hex: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except ValueError as e:
        raise TrustError(f"not an ed25519 public key: {public_hex!r}") from e


def sign(private_hex: str, data: bytes) -> str:
    return _private(private_hex).sign(data).hex()


def _is_hex(value: object, length: int) -> bool:
    if not isinstance(value, str) or len(value) != length:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _openpgp_digest(data: bytes, other_headers_hex: str) -> bytes:
    headers = bytes.fromhex(other_headers_hex)
    return hashlib.sha256(data + headers + b"\x04\xff" + struct.pack(">I", len(headers))).digest()


def signature_valid(public_hex: str, signature: Mapping, data: bytes) -> bool:
    """One signature, raw ed25519 or OpenPGP-wrapped ed25519 (told apart by ``other_headers``)."""
    sig = signature.get("signature") if isinstance(signature, Mapping) else None
    if not _is_hex(public_hex, 64) or not _is_hex(sig, 128):
        return False
    message = data
    if "other_headers" in signature:
        if not isinstance(signature["other_headers"], str):
            return False
        try:
            message = _openpgp_digest(data, signature["other_headers"])
        except ValueError:
            return False
    try:
        _public(public_hex).verify(bytes.fromhex(sig), message)
    except (InvalidSignature, TrustError):
        return False
    return True


def openpgp_sign(private_hex: str, data: bytes, created: datetime) -> dict:
    """An OpenPGP-style root signature (what conda-content-trust's root signing produces with a
    GPG card): v4 signature headers (binary document, EdDSA, SHA-256, issuer fingerprint and
    creation time subpackets) hashed with the data, ed25519 over that digest."""
    pub = bytes.fromhex(public_key(private_hex))
    fingerprint = hashlib.sha1(b"\x99" + struct.pack(">H", len(pub) + 1) + b"\x01" + pub).digest()
    subpackets = (bytes([22, 33, 4]) + fingerprint  # issuer fingerprint (v4)
                  + bytes([5, 2]) + struct.pack(">I", int(created.timestamp())))  # creation time
    headers = bytes([4, 0, 22, 8]) + struct.pack(">H", len(subpackets)) + subpackets
    digest = _openpgp_digest(data, headers.hex())
    return {"other_headers": headers.hex(), "signature": _private(private_hex).sign(digest).hex()}


# -- signables -----------------------------------------------------------------------------------
def sign_signable(signable: dict, private_hex: str, *, openpgp_at: datetime | None = None) -> dict:
    """Add this key's signature over ``signable["signed"]`` (in place; also returned)."""
    data = canonical_json(signable["signed"])
    sig = openpgp_sign(private_hex, data, openpgp_at) if openpgp_at else {"signature": sign(private_hex, data)}
    signable.setdefault("signatures", {})[public_key(private_hex)] = sig
    return signable


def verify_signable(signable: Mapping, authorized: list[str], threshold: int) -> list[str]:
    """The authorized keys with good signatures; TrustError below ``threshold`` of them."""
    if not isinstance(signable, Mapping) or not isinstance(signable.get("signatures"), Mapping) \
            or "signed" not in signable:
        raise TrustError("not signed metadata: expected 'signed' and 'signatures'")
    if not isinstance(threshold, int) or threshold < 1:
        raise TrustError(f"invalid signature threshold {threshold!r}")
    data = canonical_json(signable["signed"])
    good = [key for key, sig in signable["signatures"].items()
            if key in authorized and signature_valid(key, sig, data)]
    if len(good) < threshold:
        raise TrustError(
            f"expected good signatures from {threshold} of {len(authorized)} authorized key(s); "
            f"{len(signable['signatures'])} signature(s) given, {len(good)} good"
        )
    return good


def _delegation(metadata: Mapping, role: str) -> tuple[list[str], int]:
    try:
        d = metadata["signed"]["delegations"][role]
        keys, threshold = list(d["pubkeys"]), int(d["threshold"])
    except (KeyError, TypeError, ValueError) as e:
        raise TrustError(f"the trusted metadata delegates no role {role!r}") from e
    if not all(_is_hex(k, 64) for k in keys):
        raise TrustError(f"the delegation of {role!r} lists a key that is not an ed25519 public key")
    return keys, threshold


def check_metadata(metadata: Mapping, expected_type: str, now: datetime | None = None) -> None:
    """The shape of root/key_mgr metadata, its type, and (when ``now`` is given) its expiry."""
    signed = metadata.get("signed") if isinstance(metadata, Mapping) else None
    if not isinstance(signed, Mapping) or not isinstance(metadata.get("signatures"), Mapping):
        raise TrustError(f"{expected_type} metadata must have 'signed' and 'signatures'")
    if signed.get("type") != expected_type:
        raise TrustError(f"expected {expected_type} metadata, got type {signed.get('type')!r}")
    for key in ("delegations", "expiration", "timestamp", "version", "metadata_spec_version"):
        if key not in signed:
            raise TrustError(f"{expected_type} metadata lacks {key!r}")
    if not isinstance(signed["version"], int) or signed["version"] < 1:
        raise TrustError(f"{expected_type} metadata has an invalid version {signed['version']!r}")
    if not str(signed["metadata_spec_version"]).startswith("0."):
        raise TrustError(f"unsupported metadata spec version {signed['metadata_spec_version']!r}")
    expires = parse_time(signed["expiration"])
    if now is not None and expires <= now:
        raise TrustError(f"{expected_type} metadata version {signed['version']} expired on {signed['expiration']}")


def verify_root(trusted: Mapping, new: Mapping, now: datetime | None = None) -> None:
    """Root N+1 must be signed per root N's rules AND per its own (the TUF root chaining rule)."""
    check_metadata(trusted, "root")
    check_metadata(new, "root", now)
    if new["signed"]["version"] != trusted["signed"]["version"] + 1:
        raise TrustError(
            f"root chaining: version {new['signed']['version']} cannot follow version "
            f"{trusted['signed']['version']}; updates are taken one version at a time"
        )
    verify_signable(new, *_delegation(trusted, "root"))
    verify_signable(new, *_delegation(new, "root"))


def verify_delegation(role: str, untrusted: Mapping, trusted: Mapping, now: datetime | None = None) -> list[str]:
    """Metadata of ``role`` (e.g. key_mgr, signed by root's keys for it) or a package record
    (role pkg_mgr, signed by key_mgr's keys for it)."""
    if role in DELEGATING_TYPES:
        check_metadata(untrusted, role, now)
    return verify_signable(untrusted, *_delegation(trusted, role))


def update_root(trusted: Mapping, chain: list[Mapping], now: datetime | None = None) -> Mapping:
    """Walk a list of newer roots (N+1, N+2, …) from a trusted one; returns the newest trusted."""
    current = trusted
    for new in chain:
        verify_root(current, new, now)
        current = new
    return current


# -- building metadata ---------------------------------------------------------------------------
def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime(TIME_FORMAT)


def parse_time(value: object) -> datetime:
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError as e:
        raise TrustError(f"not an ISO 8601 UTC time like 1999-12-31T23:59:59Z: {value!r}") from e


def delegating_metadata(kind: str, delegations: Mapping[str, tuple[list[str], int]], *, version: int,
                        now: datetime, lifetime: timedelta) -> dict:
    """An unsigned root or key_mgr document."""
    return {
        "signatures": {},
        "signed": {
            "delegations": {role: {"pubkeys": list(keys), "threshold": threshold}
                            for role, (keys, threshold) in delegations.items()},
            "expiration": format_time(now + lifetime),
            "metadata_spec_version": SPEC_VERSION,
            "timestamp": format_time(now),
            "type": kind,
            "version": version,
        },
    }


def sign_record(record: Mapping, private_hex: str) -> dict:
    """``{pkg_mgr public key: {"signature": …}}`` for one repodata record."""
    return {public_key(private_hex): {"signature": sign(private_hex, canonical_json(record))}}


def verify_record(record: Mapping, signatures: Mapping | None, key_mgr: Mapping) -> str:
    """The pkg_mgr key that signed ``record`` (as key_mgr delegates); TrustError otherwise."""
    if not signatures:
        raise TrustError("the record is not signed")
    return verify_delegation("pkg_mgr", {"signed": dict(record), "signatures": signatures}, key_mgr)[0]
