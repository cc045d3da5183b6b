"""Software bills of materials for a conda package file: CycloneDX 1.6 and SPDX 2.3 (JSON).

Pure: the caller resolves the package's dependencies in its channel (dependencies.py) and passes
the package, its dependencies and who needs which; this module only describes them. Packages are
identified by purl (``pkg:conda/<name>@<version>?build=…&channel=…&subdir=…&type=…``, per the
purl spec's conda type; R packages of ``cran-*`` subdirs as ``pkg:cran/<name>@<version>``, python
files as ``pkg:pypi/<name>@<version>?file_name=…``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from .names import PYPI_SUBDIR, is_cran_subdir

TOOL = "conda-platform"


@dataclass(frozen=True)
class SbomPackage:
    """One conda package file as the SBOM describes it."""

    channel: str  # the channel's path, e.g. "team/dev"
    channel_url: str  # where clients get it, e.g. "https://pkgs.example.com/api/repo/team/dev"
    subdir: str
    filename: str
    record: Mapping  # the repodata record
    about: Mapping = field(default_factory=dict)
    spdx_license: str | None = None  # the normalized SPDX expression, when the license normalizes
    #: where the file is below ``channel_url`` when not at SUBDIR/FILENAME (R: cran/src/contrib/FILE)
    path: str = ""

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def version(self) -> str:
        return str(self.record["version"])

    @property
    def ref(self) -> str:
        return f"{self.subdir}/{self.filename}"

    @property
    def download_url(self) -> str:
        return f"{self.channel_url}/{self.path or f'{self.subdir}/{self.filename}'}"

    def purl(self) -> str:
        if is_cran_subdir(self.subdir):  # the purl spec's cran type: pkg:cran/NAME@VERSION
            return PackageURL(type="cran", name=self.name, version=self.version).to_string()
        if self.subdir == PYPI_SUBDIR:  # the purl spec's pypi type: pkg:pypi/NAME@VERSION?file_name=FILE
            return PackageURL(type="pypi", name=self.name, version=self.version,
                              qualifiers={"file_name": self.filename}).to_string()
        kind = "conda" if self.filename.endswith(".conda") else "tar.bz2"
        qualifiers = {"build": str(self.record.get("build", "")), "channel": self.channel_url,
                      "subdir": self.subdir, "type": kind}
        return PackageURL(type="conda", name=self.name, version=self.version, qualifiers=qualifiers).to_string()

    def references(self) -> list[tuple[str, str]]:
        """(kind, url): the package's home, development and documentation pages, and its download."""
        refs = [(k, str(self.about[k])) for k in ("home", "dev_url", "doc_url") if self.about.get(k)]
        return [*refs, ("download", self.download_url)]

    @property
    def raw_license(self) -> str:
        return str(self.record.get("license") or self.about.get("license") or "")


#: a dependency of the SBOM's subject and the refs (SbomPackage.ref) of the packages that need it
Dependency = tuple[SbomPackage, Sequence[str]]

_CDX_REFS = {"home": ExternalReferenceType.WEBSITE, "dev_url": ExternalReferenceType.VCS,
             "doc_url": ExternalReferenceType.DOCUMENTATION, "download": ExternalReferenceType.DISTRIBUTION}


def _component(pkg: SbomPackage) -> Component:
    hashes = [HashType(alg=alg, content=str(pkg.record[key]))
              for alg, key in ((HashAlgorithm.SHA_256, "sha256"), (HashAlgorithm.MD5, "md5")) if pkg.record.get(key)]
    if pkg.spdx_license:
        licenses = [LicenseExpression(pkg.spdx_license)]
    elif pkg.raw_license:
        licenses = [DisjunctiveLicense(name=pkg.raw_license)]
    else:
        licenses = []
    return Component(
        type=ComponentType.LIBRARY, name=pkg.name, version=pkg.version, bom_ref=pkg.ref,
        purl=PackageURL.from_string(pkg.purl()), hashes=hashes, licenses=licenses,
        description=str(pkg.about.get("summary") or "") or None,
        external_references=[ExternalReference(type=_CDX_REFS[k], url=XsUri(u)) for k, u in pkg.references()],
        properties=[Property(name="conda:channel", value=pkg.channel),
                    Property(name="conda:subdir", value=pkg.subdir),
                    Property(name="conda:build", value=str(pkg.record.get("build", "")))],
    )


def cyclonedx(subject: SbomPackage, dependencies: Sequence[Dependency], now: datetime) -> dict:
    """A CycloneDX 1.6 BOM: the subject as metadata.component, its dependencies as components."""
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, subject.purl() + now.isoformat()))
    bom.metadata.timestamp = now
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name=TOOL))
    root = _component(subject)
    bom.metadata.component = root
    comps = {subject.ref: root}
    for pkg, _ in dependencies:
        comps[pkg.ref] = _component(pkg)
        bom.components.add(comps[pkg.ref])
    needs: dict[str, list[Component]] = {ref: [] for ref in comps}
    for pkg, needed_by in dependencies:
        for ref in needed_by:
            if ref in needs:
                needs[ref].append(comps[pkg.ref])
    for ref, comp in comps.items():
        bom.register_dependency(comp, needs[ref])
    return orjson.loads(JsonV1Dot6(bom).output_as_string())


def _spdx_id(ref: str) -> str:
    return "SPDXRef-Package-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in ref)


def _spdx_package(pkg: SbomPackage) -> dict:
    checksums = [{"algorithm": alg, "checksumValue": str(pkg.record[key])}
                 for alg, key in (("SHA256", "sha256"), ("MD5", "md5")) if pkg.record.get(key)]
    out = {
        "SPDXID": _spdx_id(pkg.ref),
        "name": pkg.name,
        "versionInfo": pkg.version,
        "packageFileName": pkg.filename,
        "downloadLocation": pkg.download_url,
        "filesAnalyzed": False,
        "checksums": checksums,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": pkg.spdx_license or "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": pkg.purl()}],
    }
    if pkg.about.get("home"):
        out["homepage"] = str(pkg.about["home"])
    if pkg.about.get("summary"):
        out["summary"] = str(pkg.about["summary"])
    if pkg.raw_license and not pkg.spdx_license:
        out["licenseComments"] = f"declared as {pkg.raw_license!r}, which is not an SPDX expression"
    return out


def spdx(subject: SbomPackage, dependencies: Sequence[Dependency], now: datetime, namespace_base: str) -> dict:
    """An SPDX 2.3 document: the subject DESCRIBED, each dependency with a DEPENDS_ON relationship
    from every package that needs it."""
    packages = [_spdx_package(subject), *(_spdx_package(p) for p, _ in dependencies)]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": _spdx_id(subject.ref)}]
    for pkg, needed_by in dependencies:
        for ref in needed_by:
            relationships.append({"spdxElementId": _spdx_id(ref), "relationshipType": "DEPENDS_ON",
                                  "relatedSpdxElement": _spdx_id(pkg.ref)})
    stamp = now.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{subject.name}-{subject.version}",
        "documentNamespace": f"{namespace_base.rstrip('/')}/{subject.channel}/{subject.ref}-{uuid.uuid4()}",
        "creationInfo": {"created": stamp, "creators": [f"Tool: {TOOL}"]},
        "documentDescribes": [_spdx_id(subject.ref)],
        "packages": packages,
        "relationships": relationships,
    }
