"""What the conda plugin's hooks do, as plain functions over duck-typed specs and records, so that
they run and are tested without conda (plugin.py only adapts conda's objects and errors).

- Pre-solve: specs whose package name the effective policy blocks outright (a name rule) are
  rejected before anything is fetched (``PolicyBlocked``).
- Post-solve: every record about to be linked is judged with the server's own policy code
  (conda_platform_plugin/policy.py); records from platform channels have their content-trust
  signature verified (trust.py) against the server's key_mgr, itself verified against the trusted
  root (the one ``trust enable`` installed, else the server's root 1 as first seen).

The policy of each platform channel in use comes from ``GET /api/channels/<C>/policy``, and for CVE
rules the advisories of the packages in the plan from ``/api/cves`` (as OSV records); both are
cached on disk with a TTL, and when the server cannot be reached the cached copy is used however old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import zstandard

from . import trust
from .client import ClientError, PlatformClient, channel_base
from .cves import CveIndex, parse_advisory
from .errors import NotFound, PlatformError, UpstreamError
from .policy import CompiledPolicy, Policy, Verdict

MODES = ("off", "warn", "enforce")
POLICY_TTL = 300.0
TRUSTED = "(INFO: package metadata is signed by {key} and trusted)"
FAILED = "(WARNING: metadata signature verification failed)"
_REPO = re.compile(r"^(?:/t/[^/]+)?/api/repo/(?P<channel>[^/]+(?:/[^/]+)?)$")
RECORD_FIELDS = ("name", "version", "build", "build_number", "subdir", "depends", "constrains", "license",
                 "license_family", "timestamp", "sha256", "md5", "size", "noarch", "track_features", "features")


class HookError(Exception):
    """A hook's refusal; plugin.py turns it into a CondaError."""


class PolicyBlocked(HookError):
    def __init__(self, blocked: list[tuple[str, Verdict]]):
        self.blocked = blocked
        lines = [f"'{spec}' is blocked by the platform policy: rule {v.rule}: {v.reason}" for spec, v in blocked]
        super().__init__("\n".join(lines))


class PolicyViolations(HookError):
    def __init__(self, violations: list[str]):
        self.violations = violations
        super().__init__("the platform policy forbids this transaction; nothing was changed:\n  "
                         + "\n  ".join(violations))


@dataclass
class Settings:
    """The plugin's settings (conda: ``plugins.platform_*``); ``trust_root``: the installed
    ``<prefix>/etc/conda/1.root.json`` when there is one."""

    url: str | None = None
    token: str | None = None
    policy_mode: str = "off"
    require_signatures: bool = False
    cache_dir: Path | None = None
    ttl: float = POLICY_TTL
    trust_root: Path | None = None
    timeout: float = 10.0
    clock: Callable[[], float] = field(default=time.time)

    def __post_init__(self) -> None:
        if self.policy_mode not in MODES:
            raise ValueError(f"platform_policy_mode must be one of {', '.join(MODES)}, not {self.policy_mode!r}")

    def client(self) -> PlatformClient:
        assert self.url
        return PlatformClient(self.url, token=self.token, timeout=self.timeout)

    def cache(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        from .cli.common import config_dir

        return config_dir() / "cache"


# -- which channels are the platform's -------------------------------------------------------------
def platform_channel(url: str | None, settings: Settings) -> str | None:
    """``CH`` or ``CH/SUB`` when ``url`` (a channel URL, or a package URL under one) is on the
    platform server, else None."""
    if not url or not settings.url:
        return None
    base = settings.url.rstrip("/")
    u = url.rstrip("/")
    if not u.startswith(base + "/"):
        return None
    path = urlsplit(base).path.rstrip("/")
    tail = urlsplit(u).path[len(path):]
    parts = tail.split("/")
    # a package URL: .../<subdir>/<file>
    if parts and parts[-1].endswith((".conda", ".tar.bz2")):
        tail = "/".join(parts[:-2])
    m = _REPO.match(tail)
    return m.group("channel") if m else None


def is_platform_host(url: str, settings: Settings) -> bool:
    """Whether a request to ``url`` goes to the platform server (same scheme, host and port)."""
    if not settings.url:
        return False
    a, b = urlsplit(settings.url), urlsplit(url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


# -- the policy ------------------------------------------------------------------------------------
def _cache_file(settings: Settings, kind: str, key: str) -> Path:
    server = hashlib.sha256(settings.url.rstrip("/").encode()).hexdigest()[:16]  # type: ignore[union-attr]
    return settings.cache() / kind / server / (key.replace("/", "~") + ".json")


def _cached(settings: Settings, path: Path, fetch: Callable[[], Any]) -> Any:
    """``fetch()``'s answer, from the cache file while fresh, else from the server, else (the server
    is unreachable) from the cache file whatever its age."""
    cached = None
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(path.read_text())
    now = settings.clock()
    if cached is not None and now - cached.get("fetched_at", 0) < settings.ttl:
        return cached.get("value")
    try:
        value = fetch()
    except (ClientError, UpstreamError):
        if cached is not None:  # the server is away: the last answer it gave still holds
            return cached.get("value")
        raise
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fetched_at": now, "value": value}))
    tmp.replace(path)
    return value


def channel_policy(settings: Settings, channel: str) -> Policy | None:
    """The channel's policy (None: it has none), cached (see _cached)."""
    def fetch() -> dict | None:
        try:
            return settings.client().request("GET", f"{channel_base(channel)}/policy")
        except NotFound:
            return None

    return _policy(_cached(settings, _cache_file(settings, "policies", channel), fetch))


def advisories(settings: Settings, names: Iterable[str]) -> CveIndex:
    """The OSV records the server has for these package names (what CVE rules need), cached per name."""
    client = settings.client()
    docs: dict[str, dict] = {}
    for name in sorted(set(names)):
        def fetch(name: str = name) -> list[dict]:
            found = client.request("GET", "/api/cves", query={"package": name, "per_page": 200})
            return [client.request("GET", f"/api/cves/{item['id']}", query={"format": "osv"})
                    for item in found.get("items", ())]

        for doc in _cached(settings, _cache_file(settings, "cves", name), fetch) or ():
            docs[str(doc.get("id"))] = doc
    return CveIndex(parse_advisory(d) for d in docs.values())


def _policy(doc: Mapping | None) -> Policy | None:
    if not doc:
        return None
    return Policy.from_json(doc, version=int(doc.get("version", 1)))


def policies(settings: Settings, channels: Iterable[str],
             names: Iterable[str] = ()) -> list[tuple[str, CompiledPolicy]]:
    """(channel, compiled policy) of the platform channels among ``channels`` that have one; a policy
    with CVE rules is compiled with the server's advisories for ``names``."""
    out = []
    seen: set[str] = set()
    cves: CveIndex | None = None
    for url in channels:
        ch = platform_channel(url, settings)
        if ch is None or ch in seen:
            continue
        seen.add(ch)
        policy = channel_policy(settings, ch)
        if policy is None:
            continue
        if "cve" in policy.kinds and cves is None:
            cves = advisories(settings, names)
        out.append((ch, policy.compile(now=settings.clock(), cves=cves if "cve" in policy.kinds else None)))
    return out


# -- pre-solve -------------------------------------------------------------------------------------
def pre_solve(specs: Sequence[Any], channels: Sequence[str], settings: Settings) -> None:
    """PolicyBlocked when a spec names a package the policy blocks outright (enforce mode); in warn
    mode the blocked specs are only printed."""
    if settings.policy_mode == "off" or not settings.url:
        return
    compiled = policies(settings, channels)
    blocked = []
    for spec in specs:
        name = getattr(spec, "name", None)
        if not name or name == "*":
            continue
        for _ch, policy in compiled:
            verdict = policy.blocked(name)
            if verdict is not None:
                blocked.append((str(spec), verdict))
                break
    if blocked:
        if settings.policy_mode == "enforce":
            raise PolicyBlocked(blocked)
        print(str(PolicyBlocked(blocked)).replace("is blocked", "would be blocked"))


# -- post-solve ------------------------------------------------------------------------------------
def record_dict(record: Any) -> dict:
    """The repodata fields of a record (a conda PackageRecord or any object with the attributes)."""
    out = {}
    for key in RECORD_FIELDS:
        value = getattr(record, key, None)
        if value is None or value == "" or value == ():
            continue
        out[key] = list(value) if isinstance(value, tuple | list) else value
    return out


def _record_url(record: Any) -> str | None:
    url = getattr(record, "url", None)
    if url:
        return str(url)
    channel = getattr(record, "channel", None)
    base = getattr(channel, "base_url", None) or (str(channel) if channel else None)
    subdir, fn = getattr(record, "subdir", None), getattr(record, "fn", None)
    return f"{str(base).rstrip('/')}/{subdir}/{fn}" if base and subdir and fn else None


def label(record: Any) -> str:
    return f"{getattr(record, 'name', '?')}-{getattr(record, 'version', '?')}-{getattr(record, 'build', '?')}"


class _Verifier:
    """The server's key_mgr (verified against the trusted root) and each subdir's signatures."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._key_mgr: dict | None = None
        self._key_mgr_error: str | None = None
        self._repodata: dict[tuple[str, str], dict] = {}

    def key_mgr(self, channel: str) -> dict:
        if self._key_mgr is None and self._key_mgr_error is None:
            try:
                self._key_mgr = trusted_key_mgr(self.settings, channel)
            except (trust.TrustError, PlatformError) as e:
                self._key_mgr_error = str(e)
        if self._key_mgr is None:
            raise trust.TrustError(f"no trusted key_mgr: {self._key_mgr_error}")
        return self._key_mgr

    def repodata(self, channel: str, subdir: str) -> dict:
        """The subdir's repodata.json (fetched as .zst: several times smaller), once per solve."""
        key = (channel, subdir)
        if key not in self._repodata:
            raw = self.settings.client().get_bytes(f"/api/repo/{channel}/{subdir}/repodata.json.zst")
            try:
                self._repodata[key] = orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
            except (zstandard.ZstdError, orjson.JSONDecodeError) as e:
                raise trust.TrustError(f"the server's {subdir}/repodata.json.zst cannot be read: {e}") from None
        return self._repodata[key]

    def check(self, channel: str, record: Any) -> tuple[str, dict | None, dict | None]:
        """(the pkg_mgr key that signed it, its repodata record, its signatures); TrustError otherwise."""
        subdir, fn = getattr(record, "subdir", None), getattr(record, "fn", None)
        doc = self.repodata(channel, str(subdir))
        served = (doc.get("packages.conda") or {}).get(fn) or (doc.get("packages") or {}).get(fn)
        if served is None:
            raise trust.TrustError(f"{fn} is not in the server's {subdir}/repodata.json")
        sigs = (doc.get("signatures") or {}).get(fn)
        # the record to be linked must be the signed one (its bytes are checked against this sha256)
        mine = record_dict(record)
        for k in ("sha256", "md5", "size"):
            if mine.get(k) and served.get(k) and str(mine[k]).lower() != str(served[k]).lower():
                raise trust.TrustError(f"{fn}: the record to install differs from the signed one ({k})")
        return trust.verify_record(served, sigs, self.key_mgr(channel)), served, sigs


def trusted_key_mgr(settings: Settings, channel: str) -> dict:
    """key_mgr.json from the server, verified against the root chain from the trusted root."""
    client = settings.client()
    base = f"/api/repo/{channel}/trust"
    if settings.trust_root is not None and settings.trust_root.is_file():
        root = json.loads(settings.trust_root.read_text())
    else:  # no root installed: the server's first root, as first seen (trust on first use)
        root = client.request("GET", f"{base}/1.root.json")
    trust.check_metadata(root, "root")
    n = root["signed"]["version"] + 1
    while True:
        try:
            newer = client.request("GET", f"{base}/{n}.root.json")
        except NotFound:
            break
        root = trust.update_root(root, [newer])
        n += 1
    key_mgr = client.request("GET", f"{base}/key_mgr.json")
    trust.verify_delegation("key_mgr", key_mgr, root, now=_utc(settings.clock()))
    return key_mgr


def _utc(ts: float):  # noqa: ANN202 - a datetime
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc)


@dataclass
class PostSolveReport:
    lines: list[str]  # what was printed: a marker per platform record, violations in warn mode
    violations: list[str]


def post_solve(records: Sequence[Any], channels: Sequence[str], settings: Settings,
               out: Callable[[str], None] = print) -> PostSolveReport:
    """Check every record about to be linked; PolicyViolations (nothing changed yet) in enforce
    mode or for a bad signature with require-signatures; otherwise the findings are printed."""
    if not settings.url or not records:
        return PostSolveReport([], [])
    urls = [_record_url(r) for r in records]
    names = {str(getattr(r, "name", "")) for r in records}
    compiled = (policies(settings, list(channels) + [u for u in urls if u], names)
                if settings.policy_mode != "off" else [])
    verifier = _Verifier(settings)
    lines: list[str] = []
    violations: list[str] = []
    signature_failures: list[str] = []
    for record, url in zip(records, urls):
        channel = platform_channel(url, settings)
        served, sigs = None, None
        if channel is not None:
            try:
                key, served, sigs = verifier.check(channel, record)
                lines.append(f"  {channel}::{label(record)} {TRUSTED.format(key=key)}")
            except (trust.TrustError, PlatformError) as e:
                lines.append(f"  {channel}::{label(record)} {FAILED}")
                signature_failures.append(f"{label(record)}: signature: {e}")
        subdir = str(getattr(record, "subdir", "") or "")
        fn = str(getattr(record, "fn", "") or "")
        data = served if served is not None else record_dict(record)
        for ch, policy in compiled:
            verdict = policy.verdict(subdir, fn, data, {fn: sigs} if sigs else None)
            if verdict is not None:
                violations.append(f"{label(record)}: rule {verdict.rule}: {verdict.reason} (policy of {ch})")
                break
    for line in lines:
        out(line)
    fatal = list(violations) if settings.policy_mode == "enforce" else []
    if settings.require_signatures:
        fatal += signature_failures
    if fatal:
        raise PolicyViolations(fatal)
    for v in violations:
        out(f"warning: platform policy: {v}")
    return PostSolveReport(lines, violations)


# -- settings helpers ------------------------------------------------------------------------------
def prefix_root(prefix: str | os.PathLike[str] | None) -> Path | None:
    """Where ``trust enable`` installs the root: ``<prefix>/etc/conda/1.root.json``."""
    return Path(prefix) / "etc" / "conda" / "1.root.json" if prefix else None


# -- health checks (conda doctor) ----------------------------------------------------------------------
def health(settings: Settings) -> list[tuple[bool, str]]:
    """(ok, sentence) for: the server answers, the token is valid, the trust root is installed."""
    if not settings.url:
        return [(False, "platform_url is not set (conda config --set plugins.platform_url URL)")]
    out: list[tuple[bool, str]] = []
    try:
        me = settings.client().request("GET", "/api/whoami")
        out.append((True, f"the platform server at {settings.url} answers"))
        if not settings.token:
            out.append((False, "no platform token is set (plugins.platform_token): private channels are hidden"))
        elif me.get("anonymous"):
            out.append((False, "the platform token is not accepted"))
        else:
            out.append((True, f"the platform token is valid (user {me.get('name')})"))
    except PlatformError as e:
        if e.status == 401:
            out.append((True, f"the platform server at {settings.url} answers"))
            out.append((False, f"the platform token is not accepted: {e.message}"))
        else:
            out.append((False, f"the platform server at {settings.url} does not answer: {e.message}"))
    root = settings.trust_root
    if root is not None and root.is_file():
        try:
            version = json.loads(root.read_text())["signed"]["version"]
            out.append((True, f"a trust root is installed ({root}, version {version})"))
        except (OSError, ValueError, KeyError, TypeError):
            out.append((False, f"{root} is not root metadata (run 'conda platform trust enable')"))
    else:
        out.append((False, f"no trust root is installed at {root} (run 'conda platform trust enable')"))
    return out
