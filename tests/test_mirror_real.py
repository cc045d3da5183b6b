"""Mirroring real conda-forge repodata (../shared/data: conda-subchannel's python=3.9 subset, 8
subdirs, the original .zst and .bz2 files only, records with absolute URLs): discovery by probing,
mixed .tar.bz2/.conda, where the bytes would come from, 304s on the next run, a dependency report."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zstandard
from conftest import Api, Server
from test_mirror import BASE, create, repodata, wait_run
from upstream import UpstreamChannel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "repodata" / "conda-forge-subchannel-py39"
SUBDIRS = ["linux-64", "linux-aarch64", "linux-ppc64le", "noarch", "osx-64", "osx-arm64", "win-64", "win-arm64"]

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data missing: {DATA}")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamChannel]:
    root = tmp_path / "up"
    shutil.copytree(DATA, root)
    up = UpstreamChannel(root).start()
    yield up
    up.stop()


def _records(subdir: str) -> dict:
    with (DATA / subdir / "repodata.json.zst").open("rb") as f:
        doc = orjson.loads(zstandard.ZstdDecompressor().stream_reader(f).read())
    return {**doc["packages"], **doc["packages.conda"]}


def test_mirror_real_conda_forge_repodata(server: Server, api: Api, upstream: UpstreamChannel) -> None:
    api.post("/api/channels", 201, json={"name": "team"})
    create(api, upstream.url, run_now=True)
    run = wait_run(api, "up")
    assert run["status"] == "completed", run
    fig = run["figures"]
    assert sorted(fig["subdirs"]) == SUBDIRS  # found by asking (no channeldata.json, no repodata.json)
    assert fig["records_seen"] == fig["records_published"] == 12_132 and fig["records_filtered"] == 0
    assert fig["subdirs"]["linux-64"] == {"index": "fetched", "records": 2709, "published": 2709, "filtered": 0,
                                          "added": 2709, "removed": 0}
    want = _records("linux-64")
    served = repodata(server, "team", "linux-64")
    assert len(served["packages"]) == 2354 and len(served["packages.conda"]) == 355
    fn = "_libgcc_mutex-0.1-conda_forge.tar.bz2"
    assert served["packages"][fn]["sha256"] == want[fn]["sha256"]
    # the bytes would come from conda-forge itself (the records' own URLs): nothing was fetched
    ch = server.call(server.platform.channels.get("team"))
    row = server.call(server.platform.files.get(ch, "linux-64", fn))
    assert row.source_url == f"https://conda.anaconda.org/conda-forge/linux-64/{fn}"
    assert not [p for p in upstream.hits if not p.endswith(("repodata.json", "repodata.json.zst", "channeldata.json"))]

    # unchanged upstream: every index answers 304
    api.post(f"{BASE}/up/run", 202)
    again = wait_run(api, "up")
    assert again["generation"] is None and again["figures"]["upstream_unchanged"] is True
    assert {s["index"] for s in again["figures"]["subdirs"].values()} == {"unchanged"}

    report = api.get(f"{BASE}/up/report").json()
    assert report["roots"] == 12_132
    missing = {m["spec"] for m in report["missing"]}
    # a python=3.9 subset: builds for other pythons cannot be satisfied, python 3.9 ones can
    assert "python >=3.10,<3.11.0a0" in missing and "python 2.7*" in missing
    assert not [spec for spec in missing if spec.startswith("python >=3.9,")]
    needed = {n for m in report["missing"] for n in m["needed_by"]}
    assert needed <= {f"{s}/{f}" for s in SUBDIRS for f in _records(s)}  # real packages need them
