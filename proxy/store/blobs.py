"""Content-addressed blob store: ``blobs/<sha256[:2]>/<sha256>``.

A blob is written to a temp file on the same filesystem, fsynced, verified and renamed, so it
either exists whole and verified or not at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conda_platform_plugin.errors import InvalidPackage, TooLarge

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass
class TempBlob:
    """Bytes received but not committed: hashed while they were written."""

    path: Path
    sha256: str
    md5: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class HashingWriter:
    """Write a stream to a temp file while hashing it and enforcing a size limit."""

    def __init__(self, tmp_dir: Path, max_bytes: int, *, md5: bool = True):
        """``md5=False``: bytes whose record already has an md5 (fetches) skip that second hash."""
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.max_bytes = max_bytes
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5() if md5 else None
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise TooLarge(f"file is larger than the limit of {self.max_bytes} bytes", detail={"limit": self.max_bytes})
        self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        self._file.write(chunk)

    def hexdigest(self) -> str:
        """The sha256 of the bytes written so far (a check before the fsync of finish())."""
        return self._sha256.hexdigest()

    def flush(self) -> None:
        """Hand the bytes written so far to the OS, for readers that tail the temp file."""
        self._file.flush()

    def finish(self) -> TempBlob:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return TempBlob(self.path, self._sha256.hexdigest(), self._md5.hexdigest() if self._md5 else "", self.size)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def writer(self, max_bytes: int) -> HashingWriter:
        return HashingWriter(self.tmp, max_bytes)

    def commit(self, blob: TempBlob, *, expect_sha256: str | None = None, expect_size: int | None = None) -> bool:
        """Move a verified temp blob into place; True when this call created the blob."""
        if expect_sha256 is not None and blob.sha256 != expect_sha256:
            blob.discard()
            raise InvalidPackage(f"sha256 mismatch: expected {expect_sha256}, got {blob.sha256}")
        if expect_size is not None and blob.size != expect_size:
            blob.discard()
            raise InvalidPackage(f"size mismatch: expected {expect_size}, got {blob.size}")
        dest = self.path(blob.sha256)
        if dest.exists():
            blob.discard()
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(blob.path, dest)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
