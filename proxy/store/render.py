"""Render a conda subdir's indexes for one generation: repodata.json (+ .zst), current_repodata.json
(+ .zst) and CEP-16 shards.

Records arrive grouped by package name. Each name's entries are written as one contiguous chunk per
section, and ``layout.msgpack`` keeps each chunk's length (int64 arrays: where a chunk starts follows
from the lengths before it), so the next generation renders only the names that changed: every
unchanged run of names is copied from the previous files with ``sendfile`` (kernel side) and its
layout columns are array slices. Publishing one upload into a 500,000-record subdir then costs a file
copy and a zstd pass, not a re-serialisation.

CEP-16 shards are not one file each: creating 37,000 small files took 1.4 s on an idle ext4 disk and
5-10 s on a busy one, more than everything else in a full render. A render appends the shards it makes
to one ``shards.pack`` in its own directory, and the layout keeps each name's shard as (digest, pack
generation, offset, length); unchanged names point into older generations' packs. Serving a shard is
a read of those bytes with the digest as its strong ETag (see ``shard_locations``).

A shard is joined from its records' *shard entries* (``shard_entry``: the record as msgpack, made
once when a file row is stored), so a render without a policy or signatures parses no record; a big
full render may make its shards in another process meanwhile (``render_worker``). Each index file
is compressed by a thread that follows it as it is written (``_Compression``).

All of this is synchronous, CPU- and disk-bound work: callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import msgpack
import msgspec
import orjson
import zstandard

from conda_platform_plugin.versions import version_key

LAYOUT = "layout.msgpack"
LAYOUT_VERSION = 6
PACK = "shards.pack"
SHARD_INDEX = "repodata_shards.msgpack.zst"
SECTIONS = ("packages", "packages.conda", "current.packages", "current.packages.conda", "signatures",
            "current.signatures")
#: each index file's sections, in file order (the signatures section is written only with a signer)
FILE_SECTIONS = (("repodata.json", ("packages", "packages.conda", "signatures")),
                 ("current_repodata.json", ("current.packages", "current.packages.conda", "current.signatures")))
#: repodata.json(.zst) and current_repodata.json(.zst): multi-threaded level 1 is both faster and
#: smaller than level 3 here (conda-forge linux-64 sample: 241 kB against 272 kB; 218 MB synthetic:
#: 0.16 s against 0.30 s).
INDEX_ZSTD_LEVEL = 1
#: shards are a few kB each, where levels -1..3 give the same size (conda-forge sample: 242 kB for
#: 63 shards at -1 and 1, 241 kB at 3) but -1 costs 0.3 s for 37,000 shards against 0.7 s at 3.
SHARD_ZSTD_LEVEL = -1
_COPY = 1 << 30


def shard_records(kept: Sequence[tuple[Row, dict]]) -> tuple[dict, dict, int]:
    """One name's CEP-16 maps ``packages`` and ``packages.conda`` (filename -> record, its digests
    turned into bytes in place, as CEP-16 wants) and the newest record timestamp (0: none).
    Shared by the renderer and the shard worker process, so both make the very same shard bytes."""
    tar: dict = {}
    conda: dict = {}
    newest = 0
    for r, d in kept:
        fn = r[1]
        if fn.endswith(".conda"):
            conda[fn] = d
        else:
            tar[fn] = d
        value = d.get("timestamp")
        if value:
            if value.__class__ is not int:
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    value = 0
            if value > newest:
                newest = value
        value = d.get("sha256")
        if value.__class__ is str:
            try:  # noqa: SIM105 - contextlib.suppress costs 0.2 s per 500,000 records
                d["sha256"] = bytes.fromhex(value)
            except ValueError:
                pass
        value = d.get("md5")
        if value.__class__ is str:
            try:  # noqa: SIM105 - contextlib.suppress costs 0.2 s per 500,000 records
                d["md5"] = bytes.fromhex(value)
            except ValueError:
                pass
    return tar, conda, newest


_encode = msgspec.msgpack.Encoder().encode


def shard_entry(record: bytes) -> tuple[bytes, int]:
    """A stored record as its name's CEP-16 shard holds it (msgpack), and its timestamp (0: none):
    made once at ingest (file rows keep both), so that a full render's shards are byte runs
    (``encoded_shard``) instead of 500,000 records parsed and encoded again."""
    d = orjson.loads(record)
    _, _, timestamp = shard_records([((None, ""), d)])
    return _encode(d), timestamp


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    return b"\xde" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdf" + n.to_bytes(4, "big")


_PACKAGES, _PACKAGES_CONDA, _REMOVED = _encode("packages"), _encode("packages.conda"), _encode("removed") + b"\x90"


def encoded_shard(tar: Sequence[tuple[str, bytes]], conda: Sequence[tuple[str, bytes]]) -> bytes:
    """The msgpack bytes of a shard from its records' shard entries: the very bytes that encoding
    ``{"packages": {...}, "packages.conda": {...}, "removed": []}`` gives (a map of three)."""
    parts = [b"\x83", _PACKAGES, _map_header(len(tar))]
    for fn, entry in tar:
        parts += (_encode(fn), entry)
    parts += (_PACKAGES_CONDA, _map_header(len(conda)))
    for fn, entry in conda:
        parts += (_encode(fn), entry)
    parts.append(_REMOVED)
    return b"".join(parts)


def shard_from_entries(rows: Sequence[Row], at: int) -> tuple[bytes, int]:
    """One name's shard (msgpack, not compressed) and newest record timestamp from its rows' stored
    shard entries (``row[at]``, ``row[at + 1]``: shard_entry, record_ts; a row without one, stored
    before migration 0007, has its record in ``row[2]``)."""
    tar: list = []
    conda: list = []
    newest = 0
    for r in rows:
        entry, timestamp = (r[at], r[at + 1]) if r[at] is not None else shard_entry(r[2])
        (conda if r[1].endswith(".conda") else tar).append((r[1], entry))
        if timestamp > newest:
            newest = timestamp
    return encoded_shard(tar, conda), newest


class ShardPack:
    """Appends one render's new CEP-16 shards to its ``shards.pack``."""

    def __init__(self, path: Path, gen: int):
        self.gen = gen
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.pos = 0
        self._compress = zstandard.ZstdCompressor(level=SHARD_ZSTD_LEVEL).compress
        self._encode = msgspec.msgpack.Encoder().encode

    def add(self, tar: dict, conda: dict, old: tuple[bytes, Sequence[int]] | None = None
            ) -> tuple[bytes, Sequence[int]]:
        """Returns the shard's sha256 and where it is: (pack generation, offset, length); an
        unchanged shard (same digest as ``old``) stays where it was."""
        return self.add_encoded(self._encode({"packages": tar, "packages.conda": conda, "removed": []}), old)

    def add_encoded(self, raw: bytes, old: tuple[bytes, Sequence[int]] | None = None
                    ) -> tuple[bytes, Sequence[int]]:
        """add() of a shard already encoded (msgpack)."""
        data = self._compress(raw)
        digest = hashlib.sha256(data).digest()
        if old is not None and old[0] == digest:
            return digest, old[1]
        self.file.write(data)
        loc = (self.gen, self.pos, len(data))
        self.pos += len(data)
        return digest, loc

    def close(self) -> None:
        self.file.close()



#: rows fed per name: (name, filename, record JSON, version, mirror_id, ...)
Row = Sequence
#: the publish-time policy hook: {filename: record} of one name's local files -> filenames to leave out
Exclude = Callable[[Mapping[str, dict]], Iterable[str]]
#: content-trust signing (proxy/store/signing.py Signer.signatures): [(stored record bytes, parsed
#: record)] -> the JSON value of each record's entry in repodata's "signatures" section
Sign = Callable[[Sequence[tuple[bytes, dict]]], list[bytes]]


class _Section:
    """One JSON object body (``"fn":{...},"fn":{...}``) of an index file, as byte runs.

    New bytes are written in blocks; unchanged spans of the previous render are copied kernel side
    (adjacent spans become one copy). The first section of a file goes straight into the file
    (``out_fd``); the second is spilled to a file of its own and copied in by ``copy_into`` once the
    first is complete, so each byte is written once, or twice for the second section of a full render.
    """

    def __init__(self, old_fd: int | None, old_base: int, out_fd: int | None = None, spill: Path | None = None):
        self.direct = out_fd is not None
        self.spill = spill
        self.fd = out_fd if out_fd is not None else os.open(spill, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.pos = 0  # length of the section so far
        self.spilled = 0  # bytes in the spill file (and its buffer)
        self.buffer: list[bytes] = []  # written in blocks: one write per chunk cost 1 s in a full render
        self.buffered = 0
        self.old_fd, self.old_base = old_fd, old_base
        self.runs: list[list] = []  # [from_old_file, start, end]; direct: only the last, not yet copied

    def _flush(self) -> None:
        if self.buffer:
            _write_all(self.fd, b"".join(self.buffer))
            self.buffer = []
            self.buffered = 0

    def _emit(self) -> None:
        """Direct: put the pending old run into the file."""
        if self.direct and self.runs:
            self._flush()
            _, start, end = self.runs.pop()
            _copy_range(self.old_fd, self.fd, start, end - start)

    def _write(self, data: bytes) -> None:
        if self.direct:
            self._emit()
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered >= 1 << 20:
            self._flush()
        self.pos += len(data)
        if not self.direct:
            start = self.spilled
            self.spilled += len(data)
            last = self.runs[-1] if self.runs else None
            if last is not None and not last[0] and last[2] == start:
                last[2] = self.spilled
            else:
                self.runs.append([False, start, self.spilled])

    def add(self, chunk: bytes) -> int:
        """Append a new chunk; returns its start in the section."""
        if self.pos:
            self._write(b",")
        self._write(chunk)
        return self.pos - len(chunk)

    def keep(self, start: int, end: int) -> int:
        """Keep an unchanged span of the previous render; returns its new start. Adjacent spans
        become one copy (the comma between them comes along from the old file)."""
        src_start, src_end = self.old_base + start, self.old_base + end
        last = self.runs[-1] if self.runs else None
        if last is not None and last[0] and last[2] + 1 == src_start:
            last[2] = src_end
            self.pos += 1
        else:
            if self.pos:
                self._write(b",")
            self._emit()
            self.runs.append([True, src_start, src_end])
        new_start = self.pos
        self.pos += src_end - src_start
        return new_start

    def finish(self) -> None:
        """Direct: everything is in the file now."""
        self._emit()
        self._flush()

    def copy_into(self, out_fd: int) -> None:
        """Spilled: copy the section into the file, at its end."""
        self._flush()
        for from_old, start, end in self.runs:
            _copy_range(self.old_fd if from_old else self.fd, out_fd, start, end - start)

    def close(self) -> None:
        if self.spill is not None and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.spill.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_range(src_fd: int | None, dst_fd: int, offset: int, count: int) -> None:
    assert src_fd is not None
    while count:
        # sendfile, not copy_file_range: the same kernel-side copy, but copy_file_range is 6x
        # slower on tmpfs (0.49 s against 0.08 s for 217 MB) and refuses to cross filesystems.
        n = os.sendfile(dst_fd, src_fd, offset, min(count, _COPY))
        if n <= 0:
            raise OSError("sendfile copied nothing")
        offset += n
        count -= n


_UPLOADED = itemgetter(5)


def _uploaded_first(pair: tuple[Row, dict | None]) -> float:
    return pair[0][5]


@dataclass
class Previous:
    """The render this one builds on: its directory and layout."""

    directory: Path
    layout: dict

    @classmethod
    def load(cls, directory: Path) -> Previous | None:
        path = directory / LAYOUT
        if not path.is_file():
            return None
        layout = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
        if not isinstance(layout, dict) or layout.get("version") != LAYOUT_VERSION:
            return None  # an older layout: the next render is a full one
        return cls(directory, _decode_layout(layout))

    @property
    def names(self) -> list[str]:
        return self.layout["names"]

    @property
    def policy(self) -> str | None:
        return self.layout.get("policy")


@dataclass
class RenderStats:
    records: int = 0
    names: int = 0
    rendered_names: int = 0
    copied_names: int = 0
    shards_written: int = 0
    excluded: int = 0


class SubdirRenderer:
    """Feed it the rows of the names that changed (all names for a full render), then finish()."""

    def __init__(self, out_dir: Path, gen: int, subdir: str, previous: Previous | None, full: bool,
                 exclude: Exclude | None = None, policy: str | None = None, sign: Sign | None = None,
                 external_shards: bool = False, entries: bool = False):
        """``external_shards``: a full render whose shards (the pack written to ``tmp / PACK``)
        another process makes at the same time (``render_worker``); ``adopt_shards`` takes that
        process's result before ``finish``. Without a policy only: the exclusions must be known to
        both. ``entries``: rows carry their stored shard entry and record timestamp (``row[8]``,
        ``row[9]``), so shards are joined from those. Either way, without a policy or signatures the
        records are not parsed here."""
        assert not external_shards or (full and exclude is None)
        self.external = external_shards
        self.entries = entries
        self.subdir = subdir
        self.sign = sign
        self.gen = gen
        self.out_dir = out_dir
        self.previous = None if full else previous
        self.exclude = exclude
        self.policy = policy
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".render-"))
        self._old_files: dict[str, int] = {}
        bases = {s: (None, 0) for s in SECTIONS}
        self._old: dict = _empty_layout()
        if self.previous is not None:
            lay = self.previous.layout
            self._old = lay
            for fname, secs in FILE_SECTIONS:
                fd = os.open(self.previous.directory / fname, os.O_RDONLY)
                self._old_files[fname] = fd
                for s in secs:
                    bases[s] = (fd, lay["bases"][s])
        # each index file is written as the render goes: its head and first section now, the rest in finish()
        self._out: dict[str, int] = {}
        self.sections = {}
        head = b'{"info":' + orjson.dumps({"subdir": self.subdir}) + b',"packages":{'
        self._head = len(head)
        for fname, (a, b, c) in FILE_SECTIONS:
            fd = os.open(self.tmp / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._out[fname] = fd
            _write_all(fd, head)
            self.sections[a] = _Section(*bases[a], out_fd=fd)
            self.sections[b] = _Section(*bases[b], spill=self.tmp / f"{b}.part")
            self.sections[c] = _Section(*bases[c], spill=self.tmp / f"{c}.part")
        self._old_i = 0
        self._cursor: dict[str, tuple[int, int]] = {}  # section -> (old chunk index, its start)
        # the new layout: per name (in name order) its chunk length in each section (its place follows
        # from the lengths before it), its shard's sha256 (32 bytes each, in one blob), where that shard
        # is (pack generation, offset, length: three ints each) and its record count
        new = _empty_layout()
        self.names: list[str] = new["names"]
        self.lens: dict[str, array] = new["lens"]
        self.shards: bytearray = new["shards"]
        self.locs: array = new["locs"]
        self.counts: array = new["counts"]
        self.stats = RenderStats()
        self._cctx = zstandard.ZstdCompressor(level=SHARD_ZSTD_LEVEL)
        self._done: set[str] = set()
        self.version_keys: dict[str, tuple] = {}
        self.current: set[str] = set()  # the version strings that are current in the last name fed
        #: (row, record or None) of the last name fed: the newest upload of its current version
        self.newest: tuple[Row, dict | None] | None = None
        self.timestamp = 0  # the newest record timestamp of the last name fed
        self._pack = None if external_shards else ShardPack(self.tmp / PACK, gen)

    # -- unchanged names -----------------------------------------------------------------------
    def _keep_old_until(self, name: str | None) -> None:
        """Copy the old names that sort before ``name`` (all when None), skipping changed ones."""
        names = self._old["names"]
        i = self._old_i
        j = len(names) if name is None else bisect_left(names, name, i)
        while i < j:
            k = i
            while k < j and names[k] not in self._done:
                k += 1
            if k > i:
                self._copy_run(i, k)
            i = k + 1 if k < j else j
        self._old_i = max(self._old_i, j)

    def _copy_run(self, i: int, j: int) -> None:
        """Old names i..j-1, unchanged: one byte run per section; their layout columns as slices."""
        old = self._old
        for s in SECTIONS:
            lens = old["lens"][s]
            first = next((k for k in range(i, j) if lens[k]), None)
            if first is not None:
                last = next(k for k in range(j - 1, first - 1, -1) if lens[k])
                a = self._old_start(s, first)
                self.sections[s].keep(a, self._old_start(s, last) + lens[last])
            self.lens[s].extend(lens[i:j])
        self.names.extend(old["names"][i:j])
        self.shards += old["shards"][32 * i : 32 * j]
        self.locs.extend(old["locs"][3 * i : 3 * j])
        counts = old["counts"][i:j]
        self.counts.extend(counts)
        self.stats.records += sum(counts)
        self.stats.copied_names += j - i

    def _old_start(self, section: str, k: int) -> int:
        """Where old chunk ``k`` (not empty) starts in its section: the chunks before it, each
        non-empty one followed by a comma. Runs are copied in order, so a cursor per section moves
        forward only and the whole render sums each length once (in C)."""
        at, pos = self._cursor.get(section, (0, 0))
        if k < at:
            at, pos = 0, 0
        gap = self._old["lens"][section][at:k]
        pos += sum(gap) + len(gap) - gap.count(0)
        self._cursor[section] = (k, pos)
        return pos

    def skip(self, names: Iterable[str]) -> None:
        """Names that changed: their old spans are dropped even when no rows come for them."""
        self._done.update(names)

    # -- changed names -------------------------------------------------------------------------
    def feed_name(self, name: str, rows: Sequence[Row]) -> Sequence:
        """All rows of one package name, sorted by filename. Returns something empty when none of
        them made it into the indexes (the (row, record) pairs kept, when parsed); the newest version's spellings are then in ``current``, the newest upload
        of it in ``newest`` (row, parsed record or None), the newest record timestamp in
        ``timestamp``."""
        self._done.add(name)
        self._keep_old_until(name)
        old_names = self._old["names"]
        old_shard = None
        if self._old_i < len(old_names) and old_names[self._old_i] == name:
            k = self._old_i
            old_shard = (bytes(self._old["shards"][32 * k : 32 * k + 32]), self._old["locs"][3 * k : 3 * k + 3])
            self._old_i += 1
        if not rows:
            return []
        if self.sign is None and self.exclude is None and (self.external or self.entries):
            return self._feed_unparsed(name, rows, old_shard)
        loads = orjson.loads
        kept = [(r, loads(r[2])) for r in rows]
        if self.exclude is not None:
            local = {r[1]: d for r, d in kept if r[4] is None}
            dropped = set(self.exclude(local)) if local else set()
            if dropped:
                kept = [(r, d) for r, d in kept if r[1] not in dropped]
                self.stats.excluded += len(dropped)
            if not kept:
                return []
        # "3.0" and "3.0.0" are one version: compare keys, so every spelling of the newest is current;
        # keys are compared per distinct version string (few per name), not per record
        versions = {r[3] for r, _ in kept}
        if len(versions) == 1:
            current = versions
        else:
            vkeys = self.version_keys
            for v in versions:
                if v not in vkeys:
                    vkeys[v] = version_key(v)
            latest = max(vkeys[v] for v in versions)
            current = {v for v in versions if vkeys[v] == latest}
        self.current = current
        self.newest = max((rr for rr in kept if rr[0][3] in current), key=_uploaded_first)
        dumps = orjson.dumps
        # signed before the digests become bytes (shard_records): over the record as repodata shows it
        if self.sign is not None:
            signatures = self.sign([(r[2], d) for r, d in kept])
            sigs = [dumps(r[1]) + b":" + sig for (r, _), sig in zip(kept, signatures)]
            cur_sigs = [sig for (r, _), sig in zip(kept, sigs) if r[3] in current]
        else:
            sigs = cur_sigs = []
        tar: list = []
        conda: list = []
        cur_tar: list = []
        cur_conda: list = []
        for r, _ in kept:
            fn = r[1]
            entry = dumps(fn) + b":" + r[2]
            if fn.endswith(".conda"):
                conda.append(entry)
                if r[3] in current:
                    cur_conda.append(entry)
            else:
                tar.append(entry)
                if r[3] in current:
                    cur_tar.append(entry)
        for s, chunks in zip(SECTIONS, (tar, conda, cur_tar, cur_conda, sigs, cur_sigs)):
            if chunks:
                body = b",".join(chunks)
                self.sections[s].add(body)
                self.lens[s].append(len(body))
            else:
                self.lens[s].append(0)
        self.names.append(name)
        if self._pack is not None:
            shard_tar, shard_conda, self.timestamp = shard_records(kept)
            digest, loc = self._pack.add(shard_tar, shard_conda, old_shard)
            self.shards += digest
            self.locs.extend(loc)
        else:
            self.timestamp = 0  # the shard worker knows it (adopt_shards)
        self.counts.append(len(kept))
        self.stats.records += len(kept)
        self.stats.rendered_names += 1
        return kept

    def _feed_unparsed(self, name: str, rows: Sequence[Row], old_shard: tuple[bytes, array] | None
                       ) -> Sequence:
        """feed_name without a policy or signatures, when the shards come from stored entries or
        the shard worker: no record parsed, as little per-record work as can be (0.5 s for the
        JSON of 500,000 records)."""
        dumps = orjson.dumps
        versions = {r[3] for r in rows}
        tar: list = []
        conda: list = []
        if len(versions) == 1:
            self.current = versions
            for r in rows:
                fn = r[1]
                (conda if fn.endswith(".conda") else tar).append(dumps(fn) + b":" + r[2])
            bodies = [b",".join(tar) if tar else b"", b",".join(conda) if conda else b""]
            bodies += bodies
            newest = max(rows, key=_UPLOADED)
        else:
            vkeys = self.version_keys
            for v in versions:
                if v not in vkeys:
                    vkeys[v] = version_key(v)
            latest = max(vkeys[v] for v in versions)
            current = self.current = {v for v in versions if vkeys[v] == latest}
            cur_tar: list = []
            cur_conda: list = []
            newest = None
            for r in rows:
                fn = r[1]
                entry = dumps(fn) + b":" + r[2]
                if fn.endswith(".conda"):
                    conda.append(entry)
                    if r[3] in current:
                        cur_conda.append(entry)
                        if newest is None or r[5] > newest[5]:
                            newest = r
                else:
                    tar.append(entry)
                    if r[3] in current:
                        cur_tar.append(entry)
                        if newest is None or r[5] > newest[5]:
                            newest = r
            bodies = [b",".join(chunks) if chunks else b"" for chunks in (tar, conda, cur_tar, cur_conda)]
        for section, body in zip(SECTIONS, bodies):
            if body:
                self.sections[section].add(body)
            self.lens[section].append(len(body))
        self.lens["signatures"].append(0)
        self.lens["current.signatures"].append(0)
        self.names.append(name)
        self.newest = (newest, None)
        if self._pack is None:
            self.timestamp = 0  # the shard worker knows it (adopt_shards)
        else:
            raw, self.timestamp = shard_from_entries(rows, 8)
            digest, loc = self._pack.add_encoded(raw, old_shard)
            self.shards += digest
            self.locs.extend(loc)
        self.counts.append(len(rows))
        self.stats.records += len(rows)
        self.stats.rendered_names += 1
        return self.newest  # not empty: the rows were all kept

    def adopt_shards(self, names: list[str], digests: bytes, locs: array) -> None:
        """External shards: the worker's result, for the very names fed here."""
        if names != self.names:
            raise RuntimeError(f"the shard worker saw {len(names)} names, the render {len(self.names)}")
        self.shards += digests
        self.locs.extend(locs)

    # -- finishing -----------------------------------------------------------------------------
    def finish(self) -> RenderStats:
        """Assemble the files, compress them and move the directory into place atomically."""
        self._keep_old_until(None)
        bases: dict[str, int] = {}
        compressing: list[_Compression] = []
        try:
            for fname, (a, b, c) in FILE_SECTIONS:
                fd = self._out.pop(fname)
                sep, tail, end = _SEP, (_TAIL if self.sign is None else _TAIL_SIGNED), (b"" if self.sign is None else b"}}")
                size = self._head + self.sections[a].pos + len(sep) + self.sections[b].pos + len(tail)
                if self.sign is not None:
                    size += self.sections[c].pos + len(end)
                # compressed while it is assembled: the kernel-side copies overlap the compression
                compressing.append(_Compression(self.tmp / fname, size))
                try:
                    self.sections[a].finish()
                    bases[a] = self._head
                    _write_all(fd, sep)
                    bases[b] = os.lseek(fd, 0, os.SEEK_CUR)
                    self.sections[b].copy_into(fd)
                    _write_all(fd, tail)
                    bases[c] = 0
                    if self.sign is not None:
                        bases[c] = os.lseek(fd, 0, os.SEEK_CUR)
                        self.sections[c].copy_into(fd)
                        _write_all(fd, end)
                    if os.lseek(fd, 0, os.SEEK_CUR) != size:
                        raise RuntimeError(f"{fname}: assembled {os.lseek(fd, 0, os.SEEK_CUR)} bytes, not {size}")
                finally:
                    os.close(fd)
                self.sections[b].close()
                self.sections[c].close()
        except BaseException:
            for compression in compressing:
                compression.abandon()
            raise
        for compression in compressing:
            compression.wait()  # raises when a compression failed
        for fd in self._old_files.values():
            os.close(fd)
        self._old_files = {}
        index = {
            "version": 1,
            "info": {"subdir": self.subdir, "base_url": "", "shards_base_url": "./shards/"},
            "shards": dict(zip(self.names, _digests(self.shards))),
        }
        (self.tmp / SHARD_INDEX).write_bytes(self._cctx.compress(msgpack.packb(index)))
        layout = {"version": LAYOUT_VERSION, "bases": bases, "names": self.names, "lens": self.lens,
                  "shards": self.shards, "locs": self.locs, "counts": self.counts, "policy": self.policy}
        (self.tmp / LAYOUT).write_bytes(_encode_layout(layout))
        self.stats.names = len(self.names)
        if self._pack is not None:
            self._pack.close()
        if len(self.shards) != 32 * len(self.names):
            raise RuntimeError("a render without the shards of every name")
        self.stats.shards_written = self.locs[0::3].count(self.gen)
        if self.out_dir.exists():  # a render of this generation that a crash left half-published
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp, self.out_dir)
        return self.stats

    def abort(self) -> None:
        for s in self.sections.values():
            s.close()
        for fd in self._out.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._out = {}
        for fd in self._old_files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._pack is not None:
            self._pack.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def index_compressor() -> zstandard.ZstdCompressor:
    """How repodata.json and current_repodata.json are compressed (the publish benchmark's baseline
    uses it too)."""
    return zstandard.ZstdCompressor(level=INDEX_ZSTD_LEVEL, threads=-1, write_content_size=True)


_SEP = b'},"packages.conda":{'
_TAIL = b'},"removed":[],"repodata_version":1}'
_TAIL_SIGNED = b'},"removed":[],"repodata_version":1,"signatures":{'


class _Compression:
    """``<path>.zst`` made in a thread of its own while ``path`` is still being written (up to its
    known final ``size``, which the frame header carries): reads what the writer has written so far."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.fd = os.open(path, os.O_RDONLY)
        self.pos = 0
        self.abandoned = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"compress {path.name}", daemon=True)
        self.thread.start()

    def read(self, n: int = -1) -> bytes:
        """The file's next bytes once written (the compressor's reader)."""
        left = self.size - self.pos
        if left <= 0:
            return b""
        while True:
            if self.abandoned:
                raise OSError(f"{self.path.name} was not completed")
            ready = os.fstat(self.fd).st_size - self.pos
            if ready > 0:
                break
            time.sleep(0.001)
        data = os.pread(self.fd, min(ready, left, n if n > 0 else left), self.pos)
        self.pos += len(data)
        return data

    def _run(self) -> None:
        try:
            with open(str(self.path) + ".zst", "wb") as dst:
                index_compressor().copy_stream(self, dst, size=self.size, read_size=1 << 20, write_size=1 << 20)
        except BaseException as e:  # noqa: BLE001 - handed to wait()
            self.error = e
        finally:
            os.close(self.fd)

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """The writer failed: the reader stops waiting for bytes."""
        self.abandoned = True
        self.thread.join()


def render_empty(out_dir: Path, gen: int, subdir: str, policy: str | None = None,
                 sign: Sign | None = None) -> RenderStats:
    r = SubdirRenderer(out_dir, gen, subdir, None, full=True, policy=policy, sign=sign)
    return r.finish()


def shard_locations(layout: dict) -> dict[bytes, tuple[int, int, int]]:
    """sha256 of each shard of a render -> (pack generation, offset, length); about 4 MB for
    37,000 names."""
    locs = layout["locs"]
    return dict(zip(_digests(layout["shards"]), zip(locs[0::3], locs[1::3], locs[2::3])))


def _digests(blob: bytes | bytearray) -> list[bytes]:
    whole = bytes(blob)  # one copy: slices of bytes are bytes (a bytes() per slice took 2x as long)
    return [whole[i : i + 32] for i in range(0, len(whole), 32)]


def _empty_layout() -> dict:
    return {"names": [], "lens": {s: array("q") for s in SECTIONS}, "shards": bytearray(),
            "locs": array("q"), "counts": array("q")}


# The layout is stored as int64 arrays, one digest blob and the list of names: as msgpack lists of
# 37,000 small lists it took 0.16 s to load, on every incremental publish; this way a few ms.
def _encode_layout(layout: dict) -> bytes:
    return msgpack.packb({
        **layout,
        "lens": {s: v.tobytes() for s, v in layout["lens"].items()},
        "shards": bytes(layout["shards"]),
        "locs": layout["locs"].tobytes(),
        "counts": layout["counts"].tobytes(),
    })


def _decode_layout(raw: dict) -> dict:
    return {
        **raw,
        "lens": {s: array("q", v) for s, v in raw["lens"].items()},
        "shards": raw["shards"],
        "locs": array("q", raw["locs"]),
        "counts": array("q", raw["counts"]),
    }
