"""The conda-content-trust format against its real test vectors (shared/data/trust), and our own
signatures verified by the same rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from builders import SHARED_DATA

from conda_platform_plugin import trust

VECTORS = SHARED_DATA / "trust" / "conda-content-trust"
NOW = datetime(2026, 11, 21, tzinfo=timezone.utc)
THEN = datetime(2021, 1, 1, tzinfo=timezone.utc)  # while the vectors were valid


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def test_real_root_chain_verifies_one_version_at_a_time() -> None:
    one, two, three = load("1.root.json"), load("2.root.json"), load("3.root.json")
    trust.verify_root(one, two, THEN)
    trust.verify_root(two, three, THEN)
    assert trust.update_root(one, [two, three], THEN) is three
    with pytest.raises(trust.TrustError, match="one version at a time"):
        trust.verify_root(one, three, THEN)
    with pytest.raises(trust.TrustError, match="expired"):
        trust.verify_root(one, two, NOW)


@pytest.mark.parametrize(("trusted", "bad"), [("1.root.json", "2.root_invalid.json"), ("2.root.json", "3.root_invalid.json")])
def test_real_invalid_roots_are_refused(trusted: str, bad: str) -> None:
    with pytest.raises(trust.TrustError, match="good"):
        trust.verify_root(load(trusted), load(bad), THEN)


def test_real_key_mgr_and_package_signatures() -> None:
    root = load("1.root.json")
    key_mgr = load("key_mgr.json")
    assert trust.verify_delegation("key_mgr", key_mgr, root, THEN) == list(key_mgr["signatures"])
    repodata = load("repodata.json")
    key_mgr_verify = load("key_mgr_verify.json")
    records = {**repodata["packages"], **repodata.get("packages.conda", {})}
    sigs = repodata["signatures"]
    pkg_mgr = key_mgr_verify["signed"]["delegations"]["pkg_mgr"]["pubkeys"]
    # conda-content-trust's own expectations for this file: three good, one broken, one unsigned
    for fn in ("first.tar.bz2", "second.conda", "third.conda"):
        assert trust.verify_record(records[fn], sigs[fn], key_mgr_verify) in pkg_mgr
    with pytest.raises(trust.TrustError, match="0 good"):
        trust.verify_record(records["broken-0.0.1-broken.tar.bz2"], sigs["broken-0.0.1-broken.tar.bz2"], key_mgr_verify)
    with pytest.raises(trust.TrustError, match="not signed"):
        trust.verify_record(records["broken-0.0.1-broken.conda"], sigs.get("broken-0.0.1-broken.conda"), key_mgr_verify)
    # one changed field, or a key_mgr that delegates to other keys, fails
    tampered = {**records["first.tar.bz2"], "version": "9.9"}
    with pytest.raises(trust.TrustError):
        trust.verify_record(tampered, sigs["first.tar.bz2"], key_mgr_verify)
    with pytest.raises(trust.TrustError):
        trust.verify_record(records["first.tar.bz2"], sigs["first.tar.bz2"], key_mgr)
    with pytest.raises(trust.TrustError):
        trust.verify_delegation("key_mgr", load("key_mgr_invalid.json"), root, THEN)


def test_our_own_chain_root_key_mgr_pkg_mgr() -> None:
    root_key, key_mgr_key, pkg_key = (trust.new_private_key() for _ in range(3))
    root = trust.delegating_metadata(
        "root", {"root": ([trust.public_key(root_key)], 1), "key_mgr": ([trust.public_key(key_mgr_key)], 1)},
        version=1, now=NOW, lifetime=timedelta(days=365))
    trust.sign_signable(root, root_key, openpgp_at=NOW)
    key_mgr = trust.delegating_metadata("key_mgr", {"pkg_mgr": ([trust.public_key(pkg_key)], 1)},
                                        version=1, now=NOW, lifetime=timedelta(days=90))
    trust.sign_signable(key_mgr, key_mgr_key)
    trust.verify_delegation("key_mgr", key_mgr, root, NOW)
    record = {"name": "zlib", "version": "1.2.11", "build": "h7b6447c_3", "depends": [], "sha256": "ab" * 32}
    sigs = trust.sign_record(record, pkg_key)
    assert trust.verify_record(record, sigs, key_mgr) == trust.public_key(pkg_key)
    # a rotated root (version 2) chains from version 1 with OpenPGP-style signatures, as conda expects
    new_root_key = trust.new_private_key()
    two = trust.delegating_metadata(
        "root", {"root": ([trust.public_key(new_root_key)], 1), "key_mgr": ([trust.public_key(key_mgr_key)], 1)},
        version=2, now=NOW, lifetime=timedelta(days=365))
    trust.sign_signable(two, root_key, openpgp_at=NOW)
    with pytest.raises(trust.TrustError):  # not yet signed under its own rules
        trust.verify_root(root, two, NOW)
    trust.sign_signable(two, new_root_key, openpgp_at=NOW)
    trust.verify_root(root, two, NOW)
    with pytest.raises(trust.TrustError, match="expired"):
        trust.verify_delegation("key_mgr", key_mgr, root, NOW + timedelta(days=91))


def test_canonical_json_is_the_signed_form() -> None:
    assert trust.canonical_json({"b": 1, "a": ["é"]}) == b'{\n  "a": [\n    "\\u00e9"\n  ],\n  "b": 1\n}'
