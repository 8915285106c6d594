"""Decrypted archives on the restore side (issue 7 item 10): private while they exist, and
gone after a validation however it ends."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup.errors import RestoreError
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, decryption_keyring, fetch_plaintext, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup, validation_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common 022 umask, under which a plainly created file is world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _storage(tmp_path: Path) -> Storage:
    (tmp_path / "backups").mkdir(exist_ok=True)
    return open_storage(f"file://{tmp_path}/backups")


def _users(cluster: TemporaryCluster, db: PgConnInfo) -> None:
    cluster.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text); "
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 300) g",
        dbname=db.dbname,
    )


def _leftovers(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())


@pytest.mark.fault(
    "a backup is decrypted for a restore under the usual umask 022",
    "the plaintext archive is mode 0600 (owner only)",
)
def test_decrypted_archive_is_readable_by_its_owner_only(
    usual_umask: None,
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    _users(pg_cluster, source_db)
    storage = _storage(tmp_path)
    manifest = take_backup("stream", make_request(source_db, gpg_key), storage, workdir)
    target = tmp_path / "restore" / "restore.dump"
    with decryption_keyring(decryption_key) as keyring:
        fetch_plaintext(manifest, storage, keyring, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.fault(
    "validation fails: the full backup does not restore (the scratch template already holds its table)",
    "RestoreError naming the failure, and no decrypted archive left in the validation workdir",
)
def test_failed_restore_leaves_no_plaintext(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    _users(pg_cluster, source_db)
    storage = _storage(tmp_path)
    manifest = take_backup("staged", make_request(source_db, gpg_key), storage, workdir)
    template = "plaintext_conflicting_template"
    scratch_cluster.create_database(template)
    scratch_cluster.execute("CREATE TABLE users (id int)", dbname=template)
    validation_dir = tmp_path / "validate"
    try:
        with pytest.raises(RestoreError, match='relation "users" already exists'):
            validate_backup(
                manifest,
                storage,
                validation_settings(scratch_cluster, source_db, template=template),
                decryption_key,
                validation_dir,
            )
    finally:
        scratch_cluster.drop_database(template)
    assert _leftovers(validation_dir) == []


@pytest.mark.fault(
    "validation fails: the data backup does not restore onto its schema backup (plain schema, custom data)",
    "RestoreError naming the failure, and neither decrypted archive (nor a split schema script) left behind",
)
def test_failed_pair_restore_leaves_no_plaintext(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = _storage(tmp_path)
    # The schema backup is taken before the table exists, so the data has nowhere to go.
    pg_cluster.execute("CREATE TABLE other (id int PRIMARY KEY)", dbname=source_db.dbname)
    schema = take_backup(
        "staged", make_request(source_db, gpg_key, kind="schema", dump_format="plain"), storage, workdir
    )
    _users(pg_cluster, source_db)
    data = take_backup("stream", make_request(source_db, gpg_key, kind="data"), storage, workdir)
    validation_dir = tmp_path / "validate"
    with pytest.raises(RestoreError, match="users"):
        validate_backup(
            data,
            storage,
            validation_settings(scratch_cluster, source_db),
            decryption_key,
            validation_dir,
            schema_manifest=schema,
        )
    assert _leftovers(validation_dir) == []
