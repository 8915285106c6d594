"""Local-directory backend: ``file:///absolute/path``.

Writes go to a hidden temp file in the target directory, are fsynced, re-hashed and
only then get the final name: by ``link()`` (or ``renameat2(RENAME_NOREPLACE)`` where
hard links are not supported), which fails when the name exists, so a partial file
never carries the final name and an existing object is never replaced. The deliberate
rewrite (``replace_bytes``) takes an exclusive ``flock`` on the current file, checks it is
still the version the caller read, then renames over it atomically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
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

from pgbackup.errors import ConfigError, ObjectExistsError, StorageError
from pgbackup.storage.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    READ_CHUNK,
    HashingReader,
    ObjectInfo,
    Storage,
)

log = logging.getLogger(__name__)

TEMP_PREFIX = ".pgbackup-tmp-"  # in-progress writes; never listed, never a valid key name
_EXPECTED = "expected file:///absolute/directory (e.g. file:///var/backups/pg)"


class LocalStorage(Storage):
    """A directory tree; keys map to relative paths below the URL's directory."""

    scheme = "file"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    ) -> None:
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
        # connect/read do not apply to a file system; accepted so every backend takes the same options.
        super().__init__(
            url, connect_timeout=connect_timeout, read_timeout=read_timeout, operation_timeout=operation_timeout
        )
        self.root = Path(path.rstrip("/") or "/")

    def _path(self, key: str) -> Path:
        if PurePosixPath(key).name.startswith(TEMP_PREFIX):
            raise ConfigError(f"storage key {key!r} must not start with {TEMP_PREFIX!r} (reserved)")
        return self.root.joinpath(*key.split("/"))

    def _write_verified_temp(self, key: str, target: Path, reader: HashingReader) -> Path:
        """All of ``reader`` in a private temp file next to ``target``, fsynced and re-hashed."""
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
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> tuple[str, str]:
        target = self._path(key)
        tmp = self._write_verified_temp(key, target, reader)
        try:
            _create_no_replace(tmp, target)
        except FileExistsError:
            raise self._exists(key) from None
        finally:
            tmp.unlink(missing_ok=True)  # after link() the final name keeps the inode
        _fsync_dir(target.parent)  # make the new name itself durable
        return "local:sha256", _version(target.stat())

    def _replace(self, key: str, reader: HashingReader, expected_version: str) -> tuple[str, str]:
        target = self._path(key)
        try:
            current = open(target, "rb")
        except FileNotFoundError:
            raise ObjectExistsError(
                f"replace of {self.url} key {key!r} refused: the object was deleted since it was read"
            ) from None
        with current:
            # Writers of this key serialize on the current file; whoever comes second finds a new inode.
            fcntl.flock(current.fileno(), fcntl.LOCK_EX)
            held = os.fstat(current.fileno())
            try:
                now = target.stat()
            except FileNotFoundError:
                now = None
            if (
                _version(held) != expected_version
                or now is None
                or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)
            ):
                raise ObjectExistsError(
                    f"replace of {self.url} key {key!r} refused: it changed since it was read "
                    f"(expected version {expected_version}); nothing was overwritten"
                )
            tmp = self._write_verified_temp(key, target, reader)
            try:
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        _fsync_dir(target.parent)
        return "local:sha256", _version(target.stat())

    def _read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            with open(self._path(key), "rb") as handle:
                version = _version(os.fstat(handle.fileno()))
                return handle.read(), version
        except FileNotFoundError:
            return None

    def _delete_version(self, key: str, version: str) -> str | None:
        path = self._path(key)
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        if _version(info) != version:
            return f"it now holds another object (version {_version(info)}, this upload wrote {version})"
        # No conditional unlink exists; the window between this check and unlink is microseconds,
        # and create-only writes mean nobody can put another file under this name meanwhile.
        path.unlink(missing_ok=True)
        return None

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

    def _abandoned_writes(self, prefix: str, older_than: datetime) -> Iterator[str]:
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not start.is_dir():
            return
        for path in sorted(start.rglob(TEMP_PREFIX + "*")):
            info = path.lstat()
            if _is_regular(info.st_mode) and datetime.fromtimestamp(info.st_mtime, UTC) < older_than:
                yield path.relative_to(self.root).as_posix()

    def _remove_abandoned(self, handle: str) -> None:
        (self.root / handle).unlink(missing_ok=True)


def _version(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_mtime_ns}"


_RENAME_NOREPLACE = 1  # linux/fs.h
_LINK_UNSUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _create_no_replace(tmp: Path, target: Path) -> None:
    """Give ``tmp``'s inode the name ``target``; FileExistsError if the name exists."""
    try:
        os.link(tmp, target)
        return
    except OSError as exc:
        if exc.errno not in _LINK_UNSUPPORTED:
            raise
    # File systems without hard links (some FUSE/SMB mounts): an atomic no-replace rename.
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(target), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        raise StorageError(
            f"cannot create {target} without risking an overwrite: neither link() nor "
            f"renameat2(RENAME_NOREPLACE) works on this file system ({os.strerror(code)})"
        )


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
