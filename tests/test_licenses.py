"""License normalisation on every real license string of shared/data's repodata."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
import zstandard
from builders import SHARED_DATA

from conda_platform_plugin.licenses import license_matches, normalize, spdx_list


def _records(path) -> list[dict]:  # noqa: ANN001
    raw = path.read_bytes()
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    doc = orjson.loads(raw)
    if "packages" in doc or "packages.conda" in doc:
        return [*doc.get("packages", {}).values(), *doc.get("packages.conda", {}).values()]
    return list(doc.values())


@pytest.fixture(scope="module")
def real_licenses() -> Counter:
    counts: Counter = Counter()
    paths = [p for p in (SHARED_DATA / "repodata").rglob("*.json*") if p.suffix in (".zst", ".json")
             and "run_exports" not in p.name]
    for p in paths:
        for r in _records(p):
            if r.get("license"):
                counts[r["license"]] += 1
    assert len(counts) > 150  # every distinct string of ~27,000 real records
    return counts


def test_the_share_of_real_license_strings_that_normalise(real_licenses: Counter) -> None:
    known = {s for s in real_licenses if normalize(s).spdx is not None}
    by_string = len(known) / len(real_licenses)
    by_record = sum(real_licenses[s] for s in known) / sum(real_licenses.values())
    print(f"\nlicense normalisation: {len(known)}/{len(real_licenses)} distinct strings ({by_string:.1%}), "
          f"{by_record:.1%} of {sum(real_licenses.values())} records")
    print("  not normalised (most frequent):",
          ", ".join(repr(s) for s, _ in Counter({s: n for s, n in real_licenses.items() if s not in known})
                    .most_common(8)))
    assert by_string > 0.7 and by_record > 0.8
    # every result is a valid SPDX expression of ids of the SPDX list (or LicenseRef-… references)
    spdx = spdx_list()
    for s in known:
        parsed = spdx.licensing.parse(normalize(s).spdx)
        for key in spdx.licensing.license_keys(parsed):
            assert key in spdx.licenses or key in spdx.exceptions or key.startswith("LicenseRef-"), (s, key)


@pytest.mark.parametrize("text, spdx, family", [
    ("MIT", "MIT", "MIT"),
    ("BSD 3-Clause", "BSD-3-Clause", "BSD"),
    ("BSD_3_clause + file LICENSE", "BSD-3-Clause", "BSD"),
    ("GPL (>= 2)", "GPL-2.0-or-later", "GPL2"),
    ("GPL-2 | GPL-3", "GPL-2.0-only OR GPL-3.0-only", "GPL2"),
    ("GPL-3.0-only WITH GCC-exception-3.1", "GPL-3.0-only WITH GCC-exception-3.1", "GPL3"),
    ("GPL-3.0-with-GCC-exception", "GPL-3.0-only WITH GCC-exception-3.1", "GPL3"),
    ("Apache 2.0", "Apache-2.0", "APACHE"),
    ("Apache License (== 2.0) | file LICENSE", "Apache-2.0", "APACHE"),
    ("Apache 2.0 or BSD 3-Clause, PSF 2", "Apache-2.0 OR (BSD-3-Clause AND PSF-2.0)", "APACHE"),
    ("LGPLv2+ and (LGPLv2+ or MPLv1.1) and Public Domain",
     "LGPL-2.0-or-later AND (LGPL-2.0-or-later OR MPL-1.1) AND LicenseRef-Public-Domain", "LGPL"),
    ("Public-Domain (http://www.sqlite.org/copyright.html)", "LicenseRef-Public-Domain", "PUBLIC-DOMAIN"),
    ("zlib/libpng", "Zlib", "OTHER"),
    ("GPL-2.0", "GPL-2.0-only", "GPL2"),
    ("BSD", None, "BSD"),  # ambiguous: which BSD? stays unknown, with its family
    ("Custom", None, "OTHER"),
    (None, None, "NONE"),
])
def test_known_spellings(text: str | None, spdx: str | None, family: str) -> None:
    info = normalize(text)
    assert (info.spdx, info.family) == (spdx, family)
    assert info.known == (spdx is not None)


def test_osi_and_fsf_flags_follow_the_spdx_list_and_the_expression() -> None:
    assert normalize("MIT").osi_approved and normalize("MIT").fsf_libre
    assert not normalize("LicenseRef-ProprietaryMicrosoft").osi_approved
    # OR: one acceptable alternative is enough; AND: every part must be
    assert normalize("Commercial or AGPLv3").osi_approved
    assert not normalize("MIT and Public Domain").osi_approved
    assert normalize("GPL-2.0").deprecated and not normalize("GPL-2.0-only").deprecated
    ids = spdx_list().licenses
    assert ids["Apache-2.0"].osi and not ids["CC-BY-4.0"].osi


def test_the_declared_family_is_used_when_the_string_is_unknown() -> None:
    assert normalize("Custom", "BSD").family == "BSD"
    assert normalize("Apache-style").family == "APACHE"


def test_license_search_by_meaning() -> None:
    assert license_matches("BSD 3-Clause", "BSD-3-Clause")
    assert license_matches("Apache 2.0 or BSD 3-Clause, PSF 2", "PSF-2.0")
    assert not license_matches("MIT", "BSD-3-Clause")
    assert license_matches("GPL (>= 2)", None, "GPL2")
    assert license_matches("Free software (MIT-like)", "mit-like")  # unknown: a substring search
