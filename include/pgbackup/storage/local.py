"""Local-directory backend: ``file:///absolute/path``.

Writes go to a hidden temp file in the target directory, are fsynced, re-hashed and
only then renamed into place, so a partial file never carries the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from pgbackup.errors import ConfigError, StorageError
from pgbackup.storage.base import READ_CHUNK, HashingReader, ObjectInfo, Storage

log = logging.getLogger(__name__)

TEMP_PREFIX = ".pgbackup-tmp-"  # in-progress writes; never listed, never a valid key name
_EXPECTED = "expected file:///absolute/directory (e.g. file:///var/backups/pg)"


class LocalStorage(Storage):
    """A directory tree; keys map to relative paths below the URL's directory."""

    scheme = "file"

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise ConfigError(f"storage URL must be a string; {_EXPECTED}")
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ConfigError(f"storage URL {url!r} does not start with file://; {_EXPECTED}")
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"storage URL {url!r} names host {parts.netloc!r}; {_EXPECTED}")
        if parts.query or parts.fragment:
            raise ConfigError(f"storage URL {url!r} must not have a query or fragment; {_EXPECTED}")
        path = unquote(parts.path)
        if not path.startswith("/") or any(seg in (".", "..") for seg in path.split("/")):
            raise ConfigError(f"storage URL {url!r} is not an absolute, normalized path; {_EXPECTED}")
        super().__init__(url)
        self.root = Path(path.rstrip("/") or "/")

    def _path(self, key: str) -> Path:
        if PurePosixPath(key).name.startswith(TEMP_PREFIX):
            raise ConfigError(f"storage key {key!r} must not start with {TEMP_PREFIX!r} (reserved)")
        return self.root.joinpath(*key.split("/"))

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(READ_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            # Read the bytes back from the file system before they get the final name.
            found_size, found_sha = _hash_file(tmp)
            if (found_size, found_sha) != (reader.size, reader.sha256):
                raise self._mismatch(
                    key, "sha256/size", f"{reader.sha256} ({reader.size} bytes)", f"{found_sha} ({found_size} bytes)"
                )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)  # make the rename itself durable
        return "local:sha256"

    def _open(self, key: str) -> BinaryIO | None:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            return None

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _is_regular(info.st_mode):
            return None
        return ObjectInfo(key=key, size=info.st_size, updated=datetime.fromtimestamp(info.st_mtime, UTC))

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise StorageError(f"list failed for {self.url}: directory {self.root} does not exist")
        # Start at the deepest directory the prefix names completely; filter the rest.
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not start.is_dir():
            return
        yield from self._walk(start, prefix)

    def _walk(self, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        with os.scandir(directory) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            rel = Path(entry.path).relative_to(self.root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if rel.startswith(prefix[: len(rel)]):
                    yield from self._walk(Path(entry.path), prefix)
                continue
            if not rel.startswith(prefix):
                continue
            info = entry.stat()
            if _is_regular(info.st_mode):
                yield ObjectInfo(key=rel, size=info.st_size, updated=datetime.fromtimestamp(info.st_mtime, UTC))

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
