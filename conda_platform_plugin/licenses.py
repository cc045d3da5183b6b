"""License strings of package records, normalised to SPDX expressions (pure, cached).

Repodata ``license`` fields are free text: ``BSD 3-Clause``, ``GPL (>= 2) | file LICENSE``,
``Apache 2.0 or BSD 3-Clause, PSF 2``. Policies and license views need a canonical form, so each
string is split into its operators, each part is looked up in the SPDX License List (ids, names
and the usual spellings seen in conda, CRAN and PyPI metadata) and the result is validated with
license-expression. What cannot be mapped stays unknown (``spdx`` is None) but still gets a
family guessed from its words, as conda's ``license_family`` would.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from license_expression import ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol, Licensing

SPDX_DIR = Path(__file__).parent / "data" / "spdx"
#: conda's license families (conda-build's ``license_family`` vocabulary)
FAMILIES = ("AGPL", "LGPL", "GPL3", "GPL2", "GPL", "BSD", "MIT", "APACHE", "PSF", "CC", "MOZILLA", "PUBLIC-DOMAIN",
            "PROPRIETARY", "OTHER", "NONE")
PUBLIC_DOMAIN = "LicenseRef-Public-Domain"
PROPRIETARY = "LicenseRef-Proprietary"


@dataclass(frozen=True)
class LicenseInfo:
    """What a record's license string means: shown by the API, judged by license rules."""

    original: str
    spdx: str | None  # the normalised SPDX expression, None when the string could not be mapped
    family: str  # one of FAMILIES (of the first license of the expression)
    families: tuple[str, ...]  # families of every license in the expression
    osi_approved: bool  # the expression can be satisfied with OSI-approved licenses only
    fsf_libre: bool  # ... with FSF free licenses only
    deprecated: bool = False  # the string used a deprecated SPDX id (mapped to its successor)

    @property
    def known(self) -> bool:
        return self.spdx is not None

    def to_json(self) -> dict:
        out = asdict(self)
        out["families"] = list(self.families)
        out["known"] = self.known
        return out


@dataclass(frozen=True)
class SpdxLicense:
    id: str
    name: str
    osi: bool
    fsf: bool


class SpdxList:
    """The SPDX License List and a lookup of every spelling we accept for its entries."""

    def __init__(self, directory: Path = SPDX_DIR):
        lic = json.loads((directory / "licenses.json").read_bytes())
        exc = json.loads((directory / "exceptions.json").read_bytes())
        self.version = lic.get("licenseListVersion", "")
        self.licenses: dict[str, SpdxLicense] = {}
        self.deprecated: set[str] = set()
        for entry in lic["licenses"]:
            sid = entry["licenseId"]
            self.licenses[sid] = SpdxLicense(sid, entry.get("name", ""), bool(entry.get("isOsiApproved")),
                                             bool(entry.get("isFsfLibre")))
            if entry.get("isDeprecatedLicenseId"):
                self.deprecated.add(sid)
        self.exceptions = {e["licenseExceptionId"]: e.get("name", "") for e in exc["exceptions"]}
        self.by_lower = {k.lower(): k for k in self.licenses}
        self.exc_by_lower = {k.lower(): k for k in self.exceptions}
        self.by_key: dict[str, str] = {}
        for sid, item in self.licenses.items():
            target = _successor(sid) if sid in self.deprecated else sid
            self.by_key.setdefault(_key(sid), target)
            self.by_key.setdefault(_key(item.name), target)
        symbols = [LicenseSymbol(k) for k in self.licenses if k not in self.deprecated]
        symbols += [LicenseSymbol(k, is_exception=True) for k in self.exceptions]
        symbols += [LicenseSymbol(PUBLIC_DOMAIN), LicenseSymbol(PROPRIETARY)]
        self.licensing = Licensing(symbols)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", text.lower())


_WITH_EXCEPTION = {"GPL-2.0-with-GCC-exception": "GPL-2.0-only WITH GCC-exception-2.0",
                   "GPL-3.0-with-GCC-exception": "GPL-3.0-only WITH GCC-exception-3.1",
                   "GPL-2.0-with-autoconf-exception": "GPL-2.0-only WITH Autoconf-exception-2.0",
                   "GPL-3.0-with-autoconf-exception": "GPL-3.0-only WITH Autoconf-exception-3.0",
                   "GPL-2.0-with-bison-exception": "GPL-2.0-only WITH Bison-exception-2.2",
                   "GPL-2.0-with-classpath-exception": "GPL-2.0-only WITH Classpath-exception-2.0",
                   "GPL-2.0-with-font-exception": "GPL-2.0-only WITH Font-exception-2.0",
                   "wxWindows": "LGPL-2.0-or-later WITH WxWindows-exception-3.1"}


def _successor(sid: str) -> str:
    """GPL-2.0 → GPL-2.0-only, GPL-2.0+ → GPL-2.0-or-later (the SPDX 3 spellings)."""
    if sid in _WITH_EXCEPTION:
        return _WITH_EXCEPTION[sid]
    if sid.endswith("+"):
        return sid[:-1] + "-or-later"
    m = re.fullmatch(r"(A?GPL|LGPL|GFDL)-(\d\.\d)", sid)
    if m:
        return f"{sid}-only"
    return sid


#: spellings seen in conda-forge, defaults, CRAN and PyPI metadata that neither an SPDX id nor an
#: SPDX name covers, keyed by _key() (lowercase, alphanumerics and '+')
ALIASES: dict[str, str] = {
    **dict.fromkeys(["gpl2", "gplv2", "gpl20", "gplversion2", "gnugplv2"], "GPL-2.0-only"),
    **dict.fromkeys(["gpl>=2", "gpl>=20", "gplv2+", "gpl2+", "gnugeneralpubliclicensev2orlatergplv2+"],
                    "GPL-2.0-or-later"),
    "gpl+": "GPL-1.0-or-later",  # Fedora's spelling
    "lgpl+": "LGPL-2.0-or-later",
    **dict.fromkeys(["gpl3", "gplv3", "gpl30", "gplversion3"], "GPL-3.0-only"),
    **dict.fromkeys(["gpl>=3", "gplv3+", "gpl3+", "gnugpl3+"], "GPL-3.0-or-later"),
    **dict.fromkeys(["lgpl2", "lgplv2", "lgpl20"], "LGPL-2.0-only"),
    **dict.fromkeys(["lgpl>=2", "lgplv2+", "lgpl2+"], "LGPL-2.0-or-later"),
    **dict.fromkeys(["lgpl21", "lgplv21", "lgplversion21"], "LGPL-2.1-only"),
    **dict.fromkeys(["lgpl>=21", "lgplv21+"], "LGPL-2.1-or-later"),
    **dict.fromkeys(["lgpl3", "lgplv3", "lgpl30"], "LGPL-3.0-only"),
    **dict.fromkeys(["lgpl>=3", "lgplv3+"], "LGPL-3.0-or-later"),
    **dict.fromkeys(["agpl3", "agplv3", "agpl30"], "AGPL-3.0-only"),
    **dict.fromkeys(["apache", "apache2", "apache20", "apachelicense20", "apachelicense==20", "asl20",
                     "apachesoftwarelicense", "apachelicense", "apachelicenseversion20"], "Apache-2.0"),
    "asl11": "Apache-1.1",
    **dict.fromkeys(["bsd3clause", "3clausebsd", "newbsd", "newbsdlicense", "modifiedbsd", "modifiedbsdlicense",
                     "modifiedbsdlicense3clause", "bsd3", "bsd3clauselicense", "bsdlicense3clause"], "BSD-3-Clause"),
    **dict.fromkeys(["bsd2clause", "2clausebsd", "simplifiedbsd", "freebsd", "bsd2"], "BSD-2-Clause"),
    **dict.fromkeys(["mit", "mitlicense", "expat"], "MIT"),
    **dict.fromkeys(["psf", "psf2", "psf20", "psflicense", "pythonsoftwarefoundationlicense", "psf211"], "PSF-2.0"),
    **dict.fromkeys(["publicdomain", "pd", "publicdomaindedictation", "publicdomaindedication"], PUBLIC_DOMAIN),
    **dict.fromkeys(["proprietary", "commercial"], PROPRIETARY),
    **dict.fromkeys(["cc0", "cc010"], "CC0-1.0"),
    **dict.fromkeys(["mpl2", "mpl20", "mplv20", "mplv2"], "MPL-2.0"),
    **dict.fromkeys(["mpl11", "mplv11"], "MPL-1.1"),
    **dict.fromkeys(["mplv10", "mpl10"], "MPL-1.0"),
    **dict.fromkeys(["zpl21"], "ZPL-2.1"),
    **dict.fromkeys(["eplv10", "epl10"], "EPL-1.0"),
    **dict.fromkeys(["artistic2", "artistic20"], "Artistic-2.0"),
    **dict.fromkeys(["ofl", "ofl11", "silopenfontlicenseversion11"], "OFL-1.1"),
    "zlib": "Zlib",
    "zliblibpng": "Zlib",
    "mitxderivate": "curl",  # how curl's recipes describe the curl license
    "bzip2": "bzip2-1.0.6",
    "zopepublic": "ZPL-2.1",
    "freetype": "FTL",
    "perlartistic": "Artistic-1.0-Perl",
    "netbsd": "BSD-2-Clause",
    "tcltk": "TCL",
    "tcl": "TCL",
    "uiuclicense": "NCSA",
    "uiuc": "NCSA",
    "ubuntufontlicenceversion10": "Ubuntu-font-1.0",
    "wxwidgets": "LGPL-2.0-or-later WITH WxWindows-exception-3.1",
    "perl": "Artistic-1.0-Perl OR GPL-1.0-or-later",
    "perl5": "Artistic-1.0-Perl OR GPL-1.0-or-later",
    "lucentpubliclicense": "LPL-1.02",
    "bsl10": "BSL-1.0",
}
# R's DESCRIPTION spellings: GPL-2, GPL-3, LGPL-2.1, AGPL-3, Apache License (== 2.0) ...
for _v, _only in (("2", "GPL-2.0-only"), ("3", "GPL-3.0-only")):
    ALIASES[f"gpl{_v}"] = _only
ALIASES["gpl>=20"] = "GPL-2.0-or-later"

_URL = re.compile(r"\(?\s*https?://\S+?\s*\)?(?=\s|$|,)")
_R_FILE = re.compile(r"(\+|\|)?\s*file\s+licen[cs]e", re.I)
_OPS = re.compile(r"\s*\b(and|or|with)\b\s*|\s*([&|,()])\s*|\s*/\s*", re.I)


@lru_cache(maxsize=1)
def spdx_list() -> SpdxList:
    return SpdxList()


def _atom(text: str, spdx: SpdxList) -> tuple[str | None, bool]:
    """One license name → (SPDX id or small expression, deprecated?)."""
    text = text.strip().strip(".;").strip()
    if not text:
        return None, False
    sid = spdx.by_lower.get(text.lower())
    if sid is not None:
        return (_successor(sid), True) if sid in spdx.deprecated else (sid, False)
    if text.lower().startswith("licenseref-"):
        return ("LicenseRef-" + text[len("licenseref-"):]), False
    key = _key(text)
    # "GPL (>= 2)" / "LGPL (>= 2.1)" / "GPL (>= 2.0)"
    m = re.fullmatch(r"(a?gpl|lgpl)\(?>=(\d)(?:\.?(\d))?\)?", re.sub(r"[\s]", "", text.lower()))
    if m:
        fam, major, minor = m.groups()
        return f"{fam.upper()}-{major}.{minor or '0'}-or-later", False
    if key in ALIASES:
        return ALIASES[key], False
    key2 = re.sub(r"(license|licence)$", "", key)
    for k in (key, key2, key.replace("v", "", 1)):
        if k in spdx.by_key:
            return spdx.by_key[k], False
        if k in ALIASES:
            return ALIASES[k], False
    return None, False


def _tokens(text: str) -> list[str]:
    """Split into atoms and operators (AND, OR, WITH, parentheses)."""
    out: list[str] = []
    pos = 0
    for m in _OPS.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        op = (m.group(1) or m.group(2) or "/").lower()
        out.append({"and": "AND", "&": "AND", ",": "AND", "or": "OR", "|": "OR", "/": "OR", "with": "WITH",
                    "(": "(", ")": ")"}[op])
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return [t.strip() for t in out if t.strip()]


@lru_cache(maxsize=65536)
def normalize(license: str | None, license_family: str | None = None) -> LicenseInfo:
    """The meaning of a record's ``license`` (and ``license_family``) field; cached per string."""
    original = (license or "").strip()
    spdx = spdx_list()
    expression, deprecated = _normalize_expression(original, spdx) if original else (None, False)
    if expression is None:
        fam = _family_of_text(original, license_family)
        return LicenseInfo(original, None, fam, (fam,), False, False, deprecated)
    parsed = spdx.licensing.parse(expression)
    keys = [s.key for s in spdx.licensing.license_symbols(parsed, decompose=True) if not s.is_exception]
    families = tuple(dict.fromkeys(family_of(k) for k in keys))
    return LicenseInfo(original, str(parsed), families[0] if families else "OTHER", families,
                       satisfiable(parsed, lambda k: spdx.licenses.get(k, SpdxLicense(k, "", False, False)).osi),
                       satisfiable(parsed, lambda k: spdx.licenses.get(k, SpdxLicense(k, "", False, False)).fsf),
                       deprecated)


def _normalize_expression(text: str, spdx: SpdxList) -> tuple[str | None, bool]:
    # The string may already be a valid SPDX expression: keep it as written.
    try:
        parsed = spdx.licensing.parse(text, validate=True)
        if parsed is not None:
            return str(parsed), False
    except (ExpressionError, Exception):  # noqa: BLE001 - license-expression raises several kinds
        pass
    cleaned = _URL.sub(" ", text)
    cleaned = _R_FILE.sub(" ", cleaned).strip(" |,")
    if not cleaned:
        return None, False
    whole, dep = _atom(cleaned, spdx)
    if whole is not None:
        return whole, dep
    parts: list[str] = []
    deprecated = False
    tokens = _tokens(cleaned)
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in ("AND", "OR", "(", ")"):
            parts.append(t)
        elif t == "WITH":
            if i + 1 >= len(tokens):
                return None, False
            exc = _exception(tokens[i + 1], spdx)
            if exc is None:
                return None, False
            parts.append(f"WITH {exc}")
            i += 1
        else:
            sid, dep = _atom(t, spdx)
            if sid is None:
                return None, False
            deprecated |= dep
            parts.append(f"({sid})" if " " in sid else sid)
        i += 1
    try:
        parsed = spdx.licensing.parse(" ".join(parts), validate=True)
    except Exception:  # noqa: BLE001
        return None, False
    return (str(parsed), deprecated) if parsed is not None else (None, False)


def _exception(text: str, spdx: SpdxList) -> str | None:
    text = text.strip()
    hit = spdx.exc_by_lower.get(text.lower())
    if hit:
        return hit
    key = _key(text)
    for eid in spdx.exceptions:
        if _key(eid) == key or _key(eid).startswith(key + "exception"):
            return eid
    if "runtime" in key or "gcc" in key:
        return "GCC-exception-3.1"
    return None


def family_of(spdx_id: str) -> str:
    """conda's license family of one SPDX license id."""
    s = spdx_id.upper()
    if s.startswith("AGPL"):
        return "AGPL"
    if s.startswith("LGPL"):
        return "LGPL"
    if s.startswith("GPL-3"):
        return "GPL3"
    if s.startswith("GPL-2"):
        return "GPL2"
    if s.startswith("GPL"):
        return "GPL"
    if s.startswith(("BSD", "0BSD")):
        return "BSD"
    if s in ("MIT", "X11", "MIT-0", "CURL") or s.startswith("MIT-"):
        return "MIT"
    if s.startswith("APACHE"):
        return "APACHE"
    if s.startswith(("PSF", "PYTHON")):
        return "PSF"
    if s.startswith("MPL"):
        return "MOZILLA"
    if s in (PUBLIC_DOMAIN.upper(), "UNLICENSE", "CC0-1.0"):
        return "PUBLIC-DOMAIN"
    if s.startswith("CC-") or s.startswith("CC0"):
        return "CC"
    if s == PROPRIETARY.upper() or "PROPRIETARY" in s:
        return "PROPRIETARY"
    return "OTHER"


_WORD_FAMILIES = (
    (r"\bagpl", "AGPL"), (r"\blgpl|lesser general public", "LGPL"), (r"gpl[-\s]?v?3|gpl \(>= 3\)", "GPL3"),
    (r"gpl[-\s]?v?2|gpl \(>= 2\)", "GPL2"), (r"\bgpl|general public licen", "GPL"), (r"\bbsd", "BSD"),
    (r"\bmit\b", "MIT"), (r"apache", "APACHE"), (r"\bpsf|python software", "PSF"), (r"\bmpl|mozilla", "MOZILLA"),
    (r"public[-\s]?domain", "PUBLIC-DOMAIN"), (r"\bcc\b|creative commons", "CC"),
    (r"proprietary|commercial", "PROPRIETARY"),
)


def _family_of_text(text: str, declared: str | None) -> str:
    if declared and declared.strip().upper() in FAMILIES:
        return declared.strip().upper()
    if not text or text.lower() in ("none", "unknown"):
        return "NONE"
    low = text.lower()
    hits = [(m.start(), i, fam) for i, (pattern, fam) in enumerate(_WORD_FAMILIES)
            if (m := re.search(pattern, low))]
    return min(hits)[2] if hits else "OTHER"


def satisfiable(parsed, accept) -> bool:  # noqa: ANN001 - a license-expression node and a key predicate
    """Whether the expression can be honoured with licenses ``accept`` says yes to:
    OR needs one acceptable alternative, AND needs all parts, ``X WITH e`` is judged by X."""
    if isinstance(parsed, LicenseWithExceptionSymbol):
        return accept(parsed.license_symbol.key)
    if isinstance(parsed, LicenseSymbol):
        return accept(parsed.key)
    op = type(parsed).__name__
    results = (satisfiable(a, accept) for a in parsed.args)
    return any(results) if op == "OR" else all(results)


@lru_cache(maxsize=65536)
def parsed_expression(expression: str):  # noqa: ANN201 - a license-expression node
    return spdx_list().licensing.parse(expression)


def license_matches(text: str | None, query: str | None, family: str | None = None) -> bool:
    """Search by meaning: ``query`` matches when every license of its SPDX normalisation appears in
    the text's normalised expression, or as a substring of the original text; ``family`` a family."""
    info = normalize(text)
    if family and family.upper() not in info.families and family.upper() != info.family:
        return False
    if not query:
        return True
    if query.lower() in (text or "").lower():
        return True
    wanted = normalize(query)
    if wanted.spdx is None or info.spdx is None:
        return False
    keys = {k.lower() for k in spdx_list().licensing.license_keys(parsed_expression(info.spdx))}
    return all(k.lower() in keys for k in spdx_list().licensing.license_keys(parsed_expression(wanted.spdx)))
