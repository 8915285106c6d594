"""A staging disk that fills up during the dump, compression, encryption, and a restore's fetch.

The staging folder is a small tmpfs (a real file system that returns ENOSPC), sized from
a measured first run so that it fills exactly in the step under test. The run must fail
with an error naming the step, the full disk and the file it was writing, publish and
list nothing at the destination, and leave no partial file in the staging folder.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.tmpfs import NOT_ROOT_REASON, can_mount, mounted_tmpfs
from pgbackup import backup
from pgbackup.backup import BackupRequest
from pgbackup.catalog import read_catalog
from pgbackup.errors import EncryptionError, IntegrityError, PgBackupError, RestoreError
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, decryption_keyring, fetch_plaintext
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not can_mount(), reason=NOT_ROOT_REASON)]

RANDOM_ROWS = 30_000  # ~1 MB of random bytes: ~2 MB of dump (hex), ~1 MB compressed
NO_SPACE = "No space left on device"


def _load(cluster: TemporaryCluster, source: PgConnInfo) -> None:
    cluster.execute(
        "CREATE TABLE blobs (id int PRIMARY KEY, payload bytea); "
        "INSERT INTO blobs SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') "
        f"FROM generate_series(1, {RANDOM_ROWS}) g",
        dbname=source.dbname,
    )


def _measure(request: BackupRequest, workdir: Path) -> tuple[int, int]:
    """(dump bytes, compressed bytes) of this database, from a run on an ordinary disk."""
    workdir.mkdir()
    manifest = backup.dump_to_file(request, workdir)
    dump_bytes = (workdir / backup.DUMP_FILE).stat().st_size
    backup.compress_file(manifest, request.compression, workdir)
    compressed_bytes = (workdir / backup.COMPRESSED_FILE).stat().st_size
    shutil.rmtree(workdir)
    return dump_bytes, compressed_bytes


def _assert_names_the_full_file(failure: BaseException, step: str, partial: Path) -> None:
    """The error names the step, the full disk, the file and the room left when it failed: none
    (measured before the partial file is removed, so not the room its removal gave back)."""
    message = str(failure)
    assert step in message and NO_SPACE in message, message
    assert f"(writing {partial}; " in message, message
    free = re.search(r"; ([\d,]+) of [\d,]+ bytes free on its file system\)", message)
    assert free is not None and int(free.group(1).replace(",", "")) <= 64 * 1024, message


@contextlib.contextmanager
def _staging_on_a_small_disk(tmp_path: Path, size: int) -> Iterator[Path]:
    """A run's staging folder, ``run/``, on a tmpfs of ``size`` bytes."""
    with mounted_tmpfs(tmp_path / "disk", size) as disk:
        workdir = disk / "run"
        workdir.mkdir()
        yield workdir


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _destination(tmp_path: Path) -> Storage:
    (tmp_path / "backups").mkdir()
    return open_storage(f"file://{tmp_path}/backups")


def _assert_nothing_published(storage: Storage) -> None:
    assert list(storage.list()) == []
    catalog = read_catalog(storage, "projectx")
    assert catalog.backups == [] and catalog.incomplete == []


@pytest.mark.fault(
    "the staging disk fills up while pg_dump writes the dump",
    "the run fails naming pg_dump, the full disk and the file; nothing published or listed; "
    "no partial file left in staging",
)
def test_staging_disk_full_during_dump(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> None:
    _load(pg_cluster, source_db)
    request = make_request(source_db, gpg_key)
    dump_bytes, _ = _measure(request, tmp_path / "measure")
    storage = _destination(tmp_path)
    with _staging_on_a_small_disk(tmp_path, dump_bytes // 2) as workdir:
        with pytest.raises(PgBackupError) as failure:
            take_backup("staged", request, storage, workdir)
        _assert_names_the_full_file(failure.value, "pg_dump", workdir / f"{backup.DUMP_FILE}.partial")
        assert _files(workdir.parent) == [], "the partial dump must be removed"
    _assert_nothing_published(storage)


@pytest.mark.fault(
    "the staging disk fills up while the dump is compressed",
    "the run fails naming the compressor, the full disk and the file; nothing published or listed; "
    "the partial compressed file is removed (the finished dump stays for the step's retry)",
)
def test_staging_disk_full_during_compress(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> None:
    _load(pg_cluster, source_db)
    request = make_request(source_db, gpg_key)
    dump_bytes, compressed_bytes = _measure(request, tmp_path / "measure")
    storage = _destination(tmp_path)
    # Room for the dump and half of its compressed copy.
    with _staging_on_a_small_disk(tmp_path, dump_bytes + compressed_bytes // 2) as workdir:
        manifest = backup.dump_to_file(request, workdir)
        with pytest.raises(PgBackupError) as failure:
            backup.compress_file(manifest, request.compression, workdir)
        _assert_names_the_full_file(failure.value, "compress", workdir / f"{backup.COMPRESSED_FILE}.partial")
        assert _files(workdir.parent) == [f"run/{backup.DUMP_FILE}"], "only the finished dump may stay"
        assert (workdir / backup.DUMP_FILE).stat().st_size == dump_bytes
    _assert_nothing_published(storage)


@pytest.mark.fault(
    "the staging disk fills up while the compressed dump is encrypted (Python writes gpg's output, to hash it)",
    "the run fails with an EncryptionError naming gpg, the full disk and the file; nothing published or listed; "
    "the partial encrypted file is removed (the compressed dump stays for the step's retry)",
)
def test_staging_disk_full_during_encrypt(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> None:
    _load(pg_cluster, source_db)
    request = make_request(source_db, gpg_key)
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    manifest = backup.compress_file(backup.dump_to_file(request, roomy), request.compression, roomy)
    compressed_bytes = (roomy / backup.COMPRESSED_FILE).stat().st_size
    storage = _destination(tmp_path)
    # Room for the compressed dump and half of its encrypted copy (gpg adds a few hundred bytes).
    with _staging_on_a_small_disk(tmp_path, compressed_bytes + compressed_bytes // 2) as workdir:
        shutil.copyfile(roomy / backup.COMPRESSED_FILE, workdir / backup.COMPRESSED_FILE)
        with pytest.raises(EncryptionError) as failure:
            backup.encrypt_file(manifest, request, workdir)
        _assert_names_the_full_file(failure.value, "gpg-encrypt", workdir / f"{backup.ENCRYPTED_FILE}.partial")
        assert _files(workdir.parent) == [f"run/{backup.COMPRESSED_FILE}"], "only the compressed dump may stay"
    _assert_nothing_published(storage)


@pytest.mark.fault(
    "the staging disk fills up while a backup is fetched, decrypted and decompressed for a restore",
    "a RestoreError naming the full disk and the file, never the stored object as corrupted; no plaintext left",
)
def test_staging_disk_full_while_fetching_for_a_restore(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    _load(pg_cluster, source_db)
    request = make_request(source_db, gpg_key)
    dump_bytes, _ = _measure(request, tmp_path / "measure")
    storage = _destination(tmp_path)
    manifest = take_backup("staged", request, storage, tmp_path / "work")
    with _staging_on_a_small_disk(tmp_path, dump_bytes // 2) as workdir, decryption_keyring(decryption_key) as keyring:
        target = workdir / "plain.dump"
        with pytest.raises(RestoreError) as failure:
            fetch_plaintext(manifest, storage, keyring, target)
        message = str(failure.value)
        assert not isinstance(failure.value, IntegrityError), message
        assert "corrupted" not in message, message
        _assert_names_the_full_file(failure.value, "cannot write the plaintext", workdir / "plain.dump.partial")
        assert _files(workdir.parent) == []
    assert read_catalog(storage, "projectx").backups == [manifest]  # the backup itself is untouched
