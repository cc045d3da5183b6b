"""Policies: named, versioned rules that decide which package records a channel or mirror
offers, and why each excluded one is excluded (pure; the server and the conda plugin share it).

A policy is a list of rules. Each rule kind excludes records for one reason:

========== ===============================================================================
kind       excludes
========== ===============================================================================
subdir     records of subdirs not in ``allow``
name       names matching an ``exclude`` glob, or matching no ``include`` glob
signature  records without a signature (or, with ``key_mgr``, without a valid one)
age        records newer than ``min_days`` days (a cooldown), or older than ``not_before``
version    records matching a ``deny`` spec, or not matching the ``allow`` specs of their name
           (conda MatchSpecs with py-rattler, or PEP 440 requirements with ``syntax: pep440``)
license    licenses (normalised SPDX expressions) or families denied, or not allowed; unknown
           licenses per ``unknown``
cve        records affected by an advisory with a CVSS base score >= ``min_score`` or a
           severity >= ``min_severity`` (except ``ignore``d ids; with ``only_fixed``, only
           when a fixed version exists)
keep_newest every version of a name but the ``count`` newest (among records the other rules pass)
========== ===============================================================================

A record's verdict is the first rule that excludes it, in the order of the table (cheap and
certain reasons first), then in the policy's order; ``keep_newest`` comes last so that it keeps
K versions that are actually offered. Inside a license rule, deny wins over allow.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import gc
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version
from rattler import MatchSpec, Version, VersionSpec

from .cves import SEVERITIES, CveIndex, severity_rank
from .errors import BadRequest
from .licenses import FAMILIES, normalize, parsed_expression, satisfiable, spdx_list
from .names import check_subdir, subdir_type
from .versions import version_key

#: evaluation order of rule kinds (see the module docstring)
KINDS = ("subdir", "name", "signature", "age", "version", "license", "cve", "keep_newest")
DAY = 86400.0
_MISS = object()


@dataclass(frozen=True)
class Verdict:
    """Why a record is excluded: the rule kind and a sentence for people. The sentence names the
    cause, not the record (which travels beside it), so that records excluded for the same cause
    share one reason and can be counted per reason."""

    rule: str
    reason: str

    def to_json(self) -> dict:
        return {"rule": self.rule, "reason": self.reason}


# -- rule definitions (validated JSON) --------------------------------------------------------------
def _strings(doc: Mapping, key: str, what: str) -> list[str]:
    value = doc.get(key, [])
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f"{what}: '{key}' must be a list of non-empty strings")
    return [v.strip() for v in value]


def _number(doc: Mapping, key: str, what: str, *, minimum: float = 0, integer: bool = False) -> Any:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BadRequest(f"{what}: '{key}' must be a number >= {minimum}")
    if integer and int(value) != value:
        raise BadRequest(f"{what}: '{key}' must be a whole number")
    return int(value) if integer else float(value)


def _choice(doc: Mapping, key: str, choices: tuple[str, ...], default: str, what: str) -> str:
    value = doc.get(key, default)
    if value not in choices:
        raise BadRequest(f"{what}: '{key}' must be one of {', '.join(choices)}")
    return value


def _date(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{what}: 'not_before' must be a date like 2024-01-31")
    try:
        d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what}: 'not_before' must be a date like 2024-01-31, not {value!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


_FIELDS = {
    "subdir": {"allow"},
    "name": {"include", "exclude"},
    "signature": {"key_mgr"},
    "age": {"min_days", "not_before"},
    "version": {"allow", "deny", "syntax"},
    "license": {"allow", "deny", "allow_families", "deny_families", "unknown"},
    "cve": {"min_score", "min_severity", "ignore", "only_fixed", "unscored"},
    "keep_newest": {"count"},
}


def validate_rule(doc: Any, index: int) -> dict:
    """A rule as JSON, checked and normalised (unknown kinds and fields are a 400)."""
    what = f"rule {index + 1}"
    if not isinstance(doc, Mapping):
        raise BadRequest(f"{what} must be an object with a 'kind'")
    kind = doc.get("kind")
    if kind not in _FIELDS:
        raise BadRequest(f"{what}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    what = f"rule {index + 1} ({kind})"
    unknown = set(doc) - _FIELDS[kind] - {"kind", "description"}
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(_FIELDS[kind]))}")
    out: dict[str, Any] = {"kind": kind}
    if isinstance(doc.get("description"), str) and doc["description"]:
        out["description"] = doc["description"]
    if kind == "subdir":
        out["allow"] = [check_subdir(s) for s in _strings(doc, "allow", what)]
        if not out["allow"]:
            raise BadRequest(f"{what}: 'allow' needs at least one subdir")
    elif kind == "name":
        out["include"] = [s.lower() for s in _strings(doc, "include", what)]
        out["exclude"] = [s.lower() for s in _strings(doc, "exclude", what)]
        if not out["include"] and not out["exclude"]:
            raise BadRequest(f"{what}: give 'include' and/or 'exclude' globs")
    elif kind == "signature":
        if doc.get("key_mgr") is not None:
            if not isinstance(doc["key_mgr"], Mapping) or "signed" not in doc["key_mgr"]:
                raise BadRequest(f"{what}: 'key_mgr' must be signed key_mgr metadata (with 'signed')")
            out["key_mgr"] = dict(doc["key_mgr"])
    elif kind == "age":
        out["min_days"] = _number(doc, "min_days", what)
        out["not_before"] = doc.get("not_before")
        _date(out["not_before"], what)
        if out["min_days"] is None and out["not_before"] is None:
            raise BadRequest(f"{what}: give 'min_days' (a cooldown) and/or 'not_before' (a date)")
    elif kind == "version":
        out["syntax"] = _choice(doc, "syntax", ("conda", "pep440"), "conda", what)
        out["allow"] = _strings(doc, "allow", what)
        out["deny"] = _strings(doc, "deny", what)
        if not out["allow"] and not out["deny"]:
            raise BadRequest(f"{what}: give 'allow' and/or 'deny' specs")
        for spec in out["allow"] + out["deny"]:
            _parse_spec(spec, out["syntax"], what)
    elif kind == "license":
        for key in ("allow", "deny"):
            out[key] = [_check_license(s, what) for s in _strings(doc, key, what)]
        for key in ("allow_families", "deny_families"):
            out[key] = [s.upper() for s in _strings(doc, key, what)]
            bad = [f for f in out[key] if f not in FAMILIES]
            if bad:
                raise BadRequest(f"{what}: unknown license family {bad[0]!r}; known: {', '.join(FAMILIES)}")
        out["unknown"] = _choice(doc, "unknown", ("allow", "deny"), "allow", what)
    elif kind == "cve":
        out["min_score"] = _number(doc, "min_score", what)
        if out["min_score"] is not None and out["min_score"] > 10:
            raise BadRequest(f"{what}: 'min_score' is a CVSS score, 0 to 10")
        sev = doc.get("min_severity")
        if sev is not None:
            if not isinstance(sev, str) or sev.lower() not in SEVERITIES:
                raise BadRequest(f"{what}: 'min_severity' must be one of {', '.join(SEVERITIES)}")
            sev = sev.lower()
        out["min_severity"] = sev
        out["ignore"] = _strings(doc, "ignore", what)
        only_fixed = doc.get("only_fixed", False)
        if not isinstance(only_fixed, bool):
            raise BadRequest(f"{what}: 'only_fixed' must be true or false")
        out["only_fixed"] = only_fixed
        out["unscored"] = _choice(doc, "unscored", ("ignore", "exclude"), "ignore", what)
    elif kind == "keep_newest":
        out["count"] = _number(doc, "count", what, minimum=1, integer=True)
        if out["count"] is None:
            raise BadRequest(f"{what}: 'count' is required")
    return out


def _check_license(text: str, what: str) -> str:
    """An allow/deny entry: an SPDX id or expression (normalised), e.g. ``GPL-3.0-only``."""
    info = normalize(text)
    if info.spdx is None:
        raise BadRequest(f"{what}: {text!r} is not an SPDX license id or expression")
    return info.spdx


@dataclass(frozen=True)
class Policy:
    """A named, versioned list of rules, as stored and as the API shows it."""

    name: str
    rules: tuple[dict, ...]
    version: int = 1
    description: str = ""

    @classmethod
    def from_json(cls, doc: Mapping, *, name: str | None = None, version: int = 1) -> Policy:
        if not isinstance(doc, Mapping):
            raise BadRequest("a policy is a JSON object with 'name' and 'rules'")
        name = name or doc.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise BadRequest("a policy needs a 'name' of letters, digits, '.', '_' and '-' (at most 100)")
        rules = doc.get("rules", [])
        if not isinstance(rules, list):
            raise BadRequest("'rules' must be a list of rule objects")
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise BadRequest("'description' must be a string")
        return cls(name, tuple(validate_rule(r, i) for i, r in enumerate(rules)), version, description)

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "description": self.description,
                "rules": [dict(r) for r in self.rules]}

    @property
    def kinds(self) -> set[str]:
        return {r["kind"] for r in self.rules}

    def digest(self) -> str:
        body = orjson.dumps({"rules": list(self.rules), "version": self.version, "name": self.name},
                            option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()[:16]

    def compile(self, *, cves: CveIndex | None = None, now: float | None = None) -> CompiledPolicy:
        return CompiledPolicy(self, cves=cves, now=now)


# -- evaluation ------------------------------------------------------------------------------------
#: (filename, record, signatures, subdir): the CVE rule reads records of "pypi" as PyPI packages
#: and of "cran-*" as CRAN ones
Check = Callable[[str, Mapping, Mapping | None, str], Verdict | None]


@lru_cache(maxsize=100_000)
def _conda_version(v: str) -> Version | None:
    try:
        return Version(v)
    except Exception:  # noqa: BLE001 - rattler raises its own parse error
        return None


@dataclass(frozen=True)
class _Spec:
    text: str
    name: str
    matches: Callable[[str, str, int], bool]  # (version, build, build_number)


def _build_number_check(spec: str | None) -> Callable[[int], bool]:
    if spec is None:
        return lambda _n: True
    m = re.fullmatch(r"\s*(>=|<=|==|!=|>|<|=)?\s*(\d+)\s*", str(spec))
    if not m:
        raise BadRequest(f"cannot read build number constraint {spec!r}")
    op, n = m.group(1) or "==", int(m.group(2))
    return {">=": lambda x: x >= n, "<=": lambda x: x <= n, ">": lambda x: x > n, "<": lambda x: x < n,
            "!=": lambda x: x != n}.get(op, lambda x: x == n)


@lru_cache(maxsize=4096)
def _parse_spec(text: str, syntax: str, what: str = "version rule") -> _Spec:
    if syntax == "pep440":
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            raise BadRequest(f"{what}: {text!r} is not a PEP 440 requirement: {e}") from None
        specifier = req.specifier

        def pep440(version: str, _build: str, _bn: int) -> bool:
            try:
                return specifier.contains(Pep440Version(version), prereleases=True)
            except InvalidVersion:
                return False

        return _Spec(text, canonicalize_name(req.name), pep440)
    try:
        ms = MatchSpec(text)
    except Exception as e:  # noqa: BLE001 - rattler's parse errors
        raise BadRequest(f"{what}: {text!r} is not a conda MatchSpec: {e}") from None
    name = ms.name.normalized if hasattr(ms.name, "normalized") else str(ms.name)
    vspec = VersionSpec(ms.version) if ms.version else None
    build = ms.build
    bn = _build_number_check(ms.build_number)

    def conda(version: str, build_string: str, build_number: int) -> bool:
        if vspec is not None:
            v = _conda_version(version)
            if v is None or not vspec.matches(v):
                return False
        if build is not None and not fnmatch.fnmatchcase(build_string, build):
            return False
        return bn(build_number)

    return _Spec(text, name, conda)


class CompiledPolicy:
    """A policy bound to its context (CVE data, the time): contract A of the project."""

    def __init__(self, policy: Policy, *, cves: CveIndex | None = None, now: float | None = None):
        import time

        self.policy = policy
        self.name = policy.name
        self.version = policy.version
        self.cves = cves
        self.now = time.time() if now is None else now
        context = [policy.digest()]
        if "cve" in policy.kinds:
            context.append(f"cves:{cves.stamp if cves is not None else 'none'}")
        if any(r["kind"] == "age" and r.get("min_days") is not None for r in policy.rules):
            # cooldowns move with the clock: the hour they are computed at is part of the context
            context.append(f"hour:{int(self.now // 3600)}")
            self.now = (self.now // 3600) * 3600
        self.fingerprint = hashlib.sha256("|".join(context).encode()).hexdigest()[:24]
        ordered = sorted(policy.rules, key=lambda r: KINDS.index(r["kind"]))
        self._subdir_rules = [r for r in ordered if r["kind"] == "subdir"]
        self._checks: list[Check] = [self._compile(r) for r in ordered if r["kind"] not in ("subdir", "keep_newest")]
        self._keep = [r["count"] for r in ordered if r["kind"] == "keep_newest"]
        self.needs_signatures = "signature" in policy.kinds
        #: name -> (the verdict on the name alone, or the record checks that concern that name)
        self._plans: dict[str, tuple[Verdict | None, tuple[Check, ...]]] = {}

    def _plan(self, name: str) -> tuple[Verdict | None, tuple[Check, ...]]:
        """Most rules decide by name, or concern few names (version specs, advisories): each name
        is judged once and its records run only the checks that can exclude them."""
        plan = self._plans.get(name)
        if plan is not None:
            return plan
        checks: list[Check] = []
        verdict = None
        for check in self._checks:
            by_name = getattr(check, "by_name", None)
            if by_name is not None:
                verdict = by_name(name)
                if verdict is not None:
                    break
                continue
            concerns = getattr(check, "concerns", None)
            if concerns is None or concerns(name):
                checks.append(check)
        plan = self._plans[name] = (verdict, () if verdict is not None else tuple(checks))
        return plan

    def __repr__(self) -> str:
        return f"CompiledPolicy({self.name!r} v{self.version}, {self.fingerprint})"

    # -- the contract -----------------------------------------------------------------------------
    def exclusions(self, subdir: str, records: Mapping[str, Mapping],
                   signatures: Mapping[str, Mapping] | None = None) -> dict[str, Verdict]:
        """filename → why excluded, for records of ONE subdir (a whole subdir, or all the records
        of one or more names in it: keep_newest works per name, so both give the same answer)."""
        for rule in self._subdir_rules:
            if subdir not in rule["allow"]:
                verdict = Verdict("subdir", f"subdir {subdir} is not allowed (allowed: {', '.join(rule['allow'])})")
                return dict.fromkeys(records, verdict)
        if len(records) < 10_000 or not gc.isenabled():
            return self._exclusions(subdir, records, signatures)
        # A big subdir: the cyclic GC would walk every record dict again and again while the
        # verdicts are built (up to half the time); nothing here makes cycles, so it waits.
        gc.disable()
        try:
            return self._exclusions(subdir, records, signatures)
        finally:
            gc.enable()

    def _exclusions(self, subdir: str, records: Mapping[str, Mapping], signatures: Mapping[str, Mapping] | None
                    ) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        plans = self._plans
        plan_of = self._plan
        keep = self._keep
        passing: dict[str, list[tuple[str, Mapping]]] | None = defaultdict(list) if keep else None
        for fn, rec in records.items():
            name = rec.get("name", "")
            plan = plans.get(name) or plan_of(name)
            if plan[0] is not None:
                out[fn] = plan[0]
                continue
            for check in plan[1]:
                verdict = check(fn, rec, signatures, subdir)
                if verdict is not None:
                    out[fn] = verdict
                    break
            else:
                if passing is not None:
                    passing[name].append((fn, rec))
        if passing:
            count = min(keep)
            verdict = Verdict("keep_newest", f"not among the {count} newest version(s) of its name")
            for items in passing.values():
                versions = sorted({str(r.get("version", "")) for _, r in items}, key=version_key, reverse=True)
                if len(versions) <= count:
                    continue
                kept = set(versions[:count])
                for fn, r in items:
                    if str(r.get("version", "")) not in kept:
                        out[fn] = verdict
        return out

    def blocked(self, name: str) -> Verdict | None:
        """Why every record of ``name`` is excluded by its name alone (a name rule), else None: the
        conda plugin rejects such specs before the solve."""
        return self._plan(name)[0]

    def verdict(self, subdir: str, filename: str, record: Mapping,
                signatures: Mapping[str, Mapping] | None = None) -> Verdict | None:
        """One record alone (keep_newest cannot judge a record alone and is not applied)."""
        for rule in self._subdir_rules:
            if subdir not in rule["allow"]:
                return Verdict("subdir", f"subdir {subdir} is not allowed (allowed: {', '.join(rule['allow'])})")
        name_verdict, checks = self._plan(record.get("name", ""))
        if name_verdict is not None:
            return name_verdict
        for check in checks:
            v = check(filename, record, signatures, subdir)
            if v is not None:
                return v
        return None

    # -- rule compilers ---------------------------------------------------------------------------
    def _compile(self, rule: dict) -> Check:
        return getattr(self, f"_c_{rule['kind']}")(rule)

    def _c_name(self, rule: dict) -> Check:
        include, exclude = rule["include"], rule["exclude"]
        cache: dict[str, Verdict | None] = {}

        def judge(name: str) -> Verdict | None:
            low = name.lower()
            for pat in exclude:
                if fnmatch.fnmatchcase(low, pat):
                    return Verdict("name", f"name matches the excluded pattern {pat!r}")
            if include and not any(fnmatch.fnmatchcase(low, pat) for pat in include):
                return Verdict("name", "name matches none of the included patterns "
                                       f"({', '.join(include)})")
            return None

        def check(_fn: str, rec: Mapping, _sigs: Mapping | None, _subdir: str) -> Verdict | None:
            name = rec.get("name", "")
            try:
                return cache[name]
            except KeyError:
                v = cache[name] = judge(name)
                return v

        check.by_name = judge  # type: ignore[attr-defined] - see _plan
        return check

    def _c_signature(self, rule: dict) -> Check:
        key_mgr = rule.get("key_mgr")
        missing = Verdict("signature", "the record has no signature (the policy requires signed metadata)")

        def check(fn: str, rec: Mapping, sigs: Mapping | None, _subdir: str) -> Verdict | None:
            sig = sigs.get(fn) if sigs else None
            if not sig:
                return missing
            if key_mgr is not None:
                from .trust import TrustError, verify_record

                try:
                    verify_record(rec, sig, key_mgr)
                except TrustError as e:
                    return Verdict("signature", f"the record's signature is not valid: {e}")
            return None

        return check

    def _c_age(self, rule: dict) -> Check:
        newest = self.now - rule["min_days"] * DAY if rule.get("min_days") is not None else None
        oldest = _date(rule.get("not_before"), "age rule")
        days = rule.get("min_days")
        too_new = Verdict("age", f"built less than {days:g} day(s) ago (cooldown)") if days is not None else None
        too_old = Verdict("age", f"built before {rule['not_before']}")
        # repodata timestamps are in milliseconds (old records: seconds)
        newest_ms = newest * 1000 if newest is not None else None
        oldest_ms = oldest * 1000 if oldest is not None else None

        def check(_fn: str, rec: Mapping, _sigs: Mapping | None, _subdir: str) -> Verdict | None:
            ts = rec.get("timestamp")
            if not ts or ts.__class__ not in (int, float):
                return None  # no build time: age rules cannot judge it
            if ts < 1e11:
                ts *= 1000
            if newest_ms is not None and ts > newest_ms:
                return too_new
            if oldest_ms is not None and ts < oldest_ms:
                return too_old
            return None

        return check

    def _c_version(self, rule: dict) -> Check:
        syntax = rule["syntax"]
        deny: dict[str, list[_Spec]] = defaultdict(list)
        allow: dict[str, list[_Spec]] = defaultdict(list)
        for text in rule["deny"]:
            s = _parse_spec(text, syntax)
            deny[s.name].append(s)
        for text in rule["allow"]:
            s = _parse_spec(text, syntax)
            allow[s.name].append(s)
        key_of = canonicalize_name if syntax == "pep440" else (lambda n: n)
        cache: dict[tuple, Verdict | None] = {}

        def judge(name: str, version: str, build: str, bn: int) -> Verdict | None:
            key = key_of(name)
            for s in deny.get(key, ()):
                if s.matches(version, build, bn):
                    return Verdict("version", f"matches the denied spec {s.text!r}")
            specs = allow.get(key)
            if specs and not any(s.matches(version, build, bn) for s in specs):
                return Verdict("version", "matches none of the allowed specs "
                                          f"({', '.join(s.text for s in specs)})")
            return None

        def check(_fn: str, rec: Mapping, _sigs: Mapping | None, _subdir: str) -> Verdict | None:
            name = rec.get("name", "")
            key = key_of(name) if syntax == "pep440" else name
            if key not in deny and key not in allow:
                return None
            ck = (name, rec.get("version", ""), rec.get("build", ""), rec.get("build_number", 0))
            try:
                return cache[ck]
            except KeyError:
                v = cache[ck] = judge(name, str(ck[1]), str(ck[2]), int(ck[3] or 0))
                return v

        check.concerns = lambda name: key_of(name) in deny or key_of(name) in allow  # type: ignore[attr-defined]
        return check

    def _c_license(self, rule: dict) -> Check:
        spdx = spdx_list()
        allow_ids = {k for e in rule["allow"] for k in spdx.licensing.license_keys(parsed_expression(e))}
        deny_ids = {k for e in rule["deny"] for k in spdx.licensing.license_keys(parsed_expression(e))}
        allow_fam, deny_fam = set(rule["allow_families"]), set(rule["deny_families"])
        from .licenses import family_of

        def denied(k: str) -> bool:
            return k in deny_ids or family_of(k) in deny_fam

        def allowed(k: str) -> bool:
            if denied(k):
                return False
            if not allow_ids and not allow_fam:
                return True
            return k in allow_ids or family_of(k) in allow_fam

        unknown_ok = rule["unknown"] == "allow"
        cache: dict[tuple, Verdict | None] = {}

        def judge(text: str | None, family: str | None) -> Verdict | None:
            info = normalize(text, family)
            if info.spdx is None:
                if unknown_ok:
                    # an unmapped string is still judged by its family where the rule names families
                    if info.family in deny_fam:
                        return Verdict("license", f"license {info.original or '(none)'!r} is of the denied "
                                                  f"family {info.family}")
                    return None
                return Verdict("license", f"license {info.original or '(none)'!r} is not a known SPDX license "
                                          "(the policy denies unknown licenses)")
            if satisfiable(parsed_expression(info.spdx), allowed):
                return None
            bad = [k for k in spdx.licensing.license_keys(parsed_expression(info.spdx)) if not allowed(k)]
            why = "denied" if any(denied(k) for k in bad) else "not allowed"
            fams = ", ".join(sorted({family_of(k) for k in bad}))
            return Verdict("license", f"license {info.spdx} is {why} by the policy ({', '.join(bad)}; "
                                      f"family {fams})")

        def check(_fn: str, rec: Mapping, _sigs: Mapping | None, _subdir: str) -> Verdict | None:
            text, family = rec.get("license"), rec.get("license_family")
            ck = text if family is None else (text, family)
            v = cache.get(ck, _MISS)
            if v is _MISS:
                v = cache[ck] = judge(text, family)
            return v

        return check

    def _c_cve(self, rule: dict) -> Check:
        cves = self.cves
        if cves is None or not len(cves):
            return lambda _fn, _rec, _sigs, _subdir: None
        min_score = rule.get("min_score")
        min_sev = severity_rank(rule["min_severity"]) if rule.get("min_severity") else None
        ignore = {i.upper() for i in rule["ignore"]}
        only_fixed = rule["only_fixed"]
        unscored = rule["unscored"] == "exclude"
        cache: dict[tuple, Verdict | None] = {}

        def counts(f) -> bool:  # noqa: ANN001 - a Finding
            a = f.advisory
            if a.id.upper() in ignore or any(x.upper() in ignore for x in a.aliases):
                return False
            if only_fixed and f.fixed is None:
                return False
            if min_score is None and min_sev is None:
                return True
            if a.score is None and a.severity is None:
                return unscored
            if min_score is not None and a.score is not None and a.score >= min_score:
                return True
            return min_sev is not None and severity_rank(a.severity) >= min_sev

        def judge(name: str, version: str, rec: Mapping, subdir: str | None) -> Verdict | None:
            for f in cves.affecting(name, version, rec, subdir):
                if counts(f):
                    a = f.advisory
                    ident = a.cve_ids[0] if a.cve_ids else a.id
                    also = f" ({a.id})" if ident != a.id else ""
                    score = f"score {a.score:g} {a.severity}" if a.score is not None else (
                        f"severity {a.severity}" if a.severity else "no score")
                    fix = f", fixed in {f.fixed}" if f.fixed else ", no fixed version"
                    return Verdict("cve", f"affected by {ident}{also}, {score}{fix}")
            return None

        def check(_fn: str, rec: Mapping, _sigs: Mapping | None, subdir: str) -> Verdict | None:
            name = rec.get("name", "")
            from .cves import is_python_record

            kind = subdir_type(subdir) if subdir else None  # python/cran subdirs: PyPI/CRAN by name
            ck = (name, rec.get("version", ""), kind if kind in ("python", "cran") else
                  name.startswith("r-") or is_python_record(rec))
            try:
                return cache[ck]
            except KeyError:
                v = cache[ck] = judge(name, str(ck[1]), rec, subdir)
                return v

        check.concerns = cves.may_concern  # type: ignore[attr-defined] - see _plan
        return check


def summarize(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Counts per rule kind (what mirror runs and previews report)."""
    counts: dict[str, int] = defaultdict(int)
    for v in verdicts:
        counts[v.rule] += 1
    return dict(sorted(counts.items()))
