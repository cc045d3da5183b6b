"""The subdir renderer on its own: many random incremental renders, each spliced from the previous
one, give the very bytes a full render of the same records gives (repodata.json, current_repodata.json,
the shard index and every shard)."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import orjson
import pytest
import zstandard

from proxy.store.render import PACK, Previous, SubdirRenderer, shard_entry, shard_locations


def _record(name: str, version: str, build: int) -> bytes:
    return orjson.dumps({"name": name, "version": version, "build": f"h{build}_0", "build_number": build,
                         "depends": [], "sha256": f"{build:064x}", "md5": f"{build:032x}", "size": build})


def _render(root: Path, gen: int, files: dict[str, dict[str, tuple[bytes, str]]], changed: set[str] | None,
            entries: bool = False) -> Path:
    """Render ``files`` (name -> filename -> (record, version)); incrementally when ``changed`` is
    given; with ``entries``, from rows that carry their stored shard entries (as the publisher's)."""
    out = root / str(gen)
    previous = Previous.load(root / str(gen - 1)) if changed is not None else None
    renderer = SubdirRenderer(out, gen, "noarch", previous, full=changed is None, entries=entries)
    names = sorted(files) if changed is None else sorted(changed)
    renderer.skip(names)
    for name in names:
        rows = [(name, fn, rec, ver, None, 0.0, 0, "", *shard_entry(rec))
                for fn, (rec, ver) in sorted(files.get(name, {}).items())]
        renderer.feed_name(name, rows)
    renderer.finish()
    return out


def _published(directory: Path) -> dict:
    dctx = zstandard.ZstdDecompressor()
    index = msgpack.unpackb(dctx.decompressobj().decompress((directory / "repodata_shards.msgpack.zst").read_bytes()))
    locations = shard_locations(Previous.load(directory).layout)
    shards = {}
    for name, digest in index["shards"].items():
        pack_gen, offset, length = locations[digest]
        with open(directory.parent / str(pack_gen) / PACK, "rb") as f:
            f.seek(offset)
            shards[name] = msgpack.unpackb(dctx.decompressobj().decompress(f.read(length)))
    return {
        "repodata": (directory / "repodata.json").read_bytes(),
        "current": (directory / "current_repodata.json").read_bytes(),
        "index": index["shards"],
        "shards": shards,
    }


@pytest.mark.parametrize("entries", [False, True], ids=["parsed", "shard-entries"])
def test_random_incremental_renders_equal_full_renders(tmp_path: Path, entries: bool) -> None:
    rng = random.Random(20261121)
    files: dict[str, dict[str, tuple[bytes, str]]] = {}
    serial = 0

    def add(name: str) -> None:
        nonlocal serial
        serial += 1
        version = rng.choice(["1.0", "1.0.0", "2.0", "0.9", "10.1"])
        ext = rng.choice([".conda", ".tar.bz2"])
        files.setdefault(name, {})[f"{name}-{version}-h{serial}_0{ext}"] = (_record(name, version, serial), version)

    pool = [f"pkg{i:03d}" for i in range(120)]
    for name in pool[:80]:
        for _ in range(rng.randint(1, 3)):
            add(name)
    inc, full = tmp_path / "inc", tmp_path / "full"
    _render(inc, 1, files, None, entries)
    for gen in range(2, 14):
        changed = set(rng.sample(pool, rng.randint(1, 6)))
        for name in changed:
            roll = rng.random()
            if roll < 0.2:
                files.pop(name, None)  # the name goes
            elif roll < 0.4 and files.get(name):
                files[name].pop(rng.choice(sorted(files[name])))  # one of its files goes
            else:
                add(name)
        got = _published(_render(inc, gen, files, changed, entries))
        want = _published(_render(full, gen, files, None))  # parsed: both ways give the same bytes
        assert got["repodata"] == want["repodata"], gen
        assert got["current"] == want["current"], gen
        assert got["index"] == want["index"], gen
        assert got["shards"] == want["shards"], gen
        assert orjson.loads(got["repodata"])["packages.conda"].keys() == {
            fn for recs in files.values() for fn in recs if fn.endswith(".conda")}


def test_compressed_while_assembled(tmp_path: Path) -> None:
    """Each .zst is made while its file is assembled: it holds the file's bytes, with their size in
    the frame header (one-shot decompressors need it). A previous render whose file is shorter than
    its layout says fails the render (no hang waiting for bytes) and, aborted, leaves nothing behind."""
    files = {f"pkg{i}": {f"pkg{i}-1.0-h{i}_0.conda": (_record(f"pkg{i}", "1.0", i), "1.0")} for i in range(50)}
    root = tmp_path / "r"
    _render(root, 1, files, None)
    files["pkg7"]["pkg7-2.0-h99_0.tar.bz2"] = (_record("pkg7", "2.0", 99), "2.0")
    _render(root, 2, files, {"pkg7"})
    for gen in (1, 2):
        for name in ("repodata.json", "current_repodata.json"):
            raw = (root / str(gen) / name).read_bytes()
            zst = (root / str(gen) / f"{name}.zst").read_bytes()
            assert zstandard.get_frame_parameters(zst).content_size == len(raw)
            assert zstandard.ZstdDecompressor().decompress(zst) == raw
    with open(root / "2" / "repodata.json", "r+b") as f:
        f.truncate(100)
    renderer = SubdirRenderer(root / "3", 3, "noarch", Previous.load(root / "2"), full=False)
    renderer.skip(["pkg9"])
    renderer.feed_name("pkg9", [("pkg9", "pkg9-2.0-h98_0.conda", _record("pkg9", "2.0", 98), "2.0", None, 0.0, 0)])
    with pytest.raises(OSError):
        try:
            renderer.finish()
        except BaseException:
            renderer.abort()
            raise
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]
