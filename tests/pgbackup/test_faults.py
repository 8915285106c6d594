"""Bad input and faults: a clear error that names the problem, and nothing is lost or published."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey, generate_key
from devtools.pg_cluster import TemporaryCluster
from pgbackup import backup
from pgbackup.dump import DumpStage
from pgbackup.errors import (
    DatabaseUnavailableError,
    DumpError,
    EncryptionError,
    IntegrityError,
    VerificationError,
    VersionMismatchError,
)
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo, libpq_environment
from pgbackup.pgtools import find_program
from pgbackup.restore import DecryptionKey, validate_backup
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import make_request, scratch_databases, validation_settings

pytestmark = pytest.mark.integration


def _load_users(cluster: TemporaryCluster, db: PgConnInfo, rows: int = 500) -> None:
    cluster.execute(
        f"CREATE TABLE users (id int PRIMARY KEY, email text); "
        f"INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, {rows}) g",
        dbname=db.dbname,
    )


def _store(tmp_path: Path) -> object:
    (tmp_path / "backups").mkdir(exist_ok=True)
    return open_storage(f"file://{tmp_path}/backups")


def test_wrong_password_names_the_target_and_publishes_nothing(
    source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path, tmp_path: Path
) -> None:
    wrong = PgConnInfo(
        source_db.host,
        source_db.port,
        source_db.user,
        source_db.dbname,
        "not-the-password",
        label="target projectx (connection projectx_db)",
    )
    storage = _store(tmp_path)
    with pytest.raises(DatabaseUnavailableError) as failure:
        backup.dump_to_file(make_request(wrong, gpg_key), workdir)
    assert "target projectx (connection projectx_db)" in str(failure.value)
    assert "password authentication failed" in str(failure.value)
    assert "not-the-password" not in str(failure.value)
    assert list(workdir.iterdir()) == []
    with pytest.raises(DatabaseUnavailableError):
        backup.stream_backup(make_request(wrong, gpg_key), storage, "local")
    assert list(storage.list()) == []


def test_unreachable_database_fails_fast_naming_the_target(gpg_key: GeneratedKey, workdir: Path) -> None:
    from devtools.services import free_port

    nowhere = PgConnInfo("127.0.0.1", free_port(), "postgres", "postgres", "x", label="target projectx")
    with pytest.raises(DatabaseUnavailableError, match="target projectx"):
        backup.dump_to_file(make_request(nowhere, gpg_key), workdir)


def test_expired_recipient_fails_before_anything_is_dumped(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, tmp_path: Path, workdir: Path
) -> None:
    _load_users(pg_cluster, source_db)
    expired = generate_key(
        tmp_path / "keys", "expired@projectx.example", faked_system_time="20200101T000000", expire="1d"
    )
    with pytest.raises(EncryptionError, match=r"expired@projectx.example.*expired"):
        backup.dump_to_file(make_request(source_db, expired), workdir)
    assert list(workdir.iterdir()) == []


def test_missing_recipient_key_fails_before_anything_is_dumped(
    source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path
) -> None:
    from pgbackup.config import EncryptionConfig

    request = make_request(
        source_db, gpg_key, encryption=EncryptionConfig(("nobody@projectx.example",), ("x",), "unused")
    )
    with pytest.raises(EncryptionError, match="nobody@projectx.example.*no public key"):
        backup.dump_to_file(request, workdir)
    assert list(workdir.iterdir()) == []


def test_pg_dump_older_than_the_server_is_refused_naming_both_versions() -> None:
    installed = find_program("pg_dump")
    with pytest.raises(VersionMismatchError) as failure:
        find_program("pg_dump", server_major=99)
    message = str(failure.value)
    assert "PostgreSQL 99" in message and installed in message and "postgresql-client-99" in message


def test_password_is_never_in_argv_and_only_in_the_childs_own_environment(
    source_db: PgConnInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No passfile any more (a SIGKILL left it on disk): PGPASSWORD in a minimal environment.
    monkeypatch.setenv("AIRFLOW_CONN_LEAKY", "postgresql://u:conn-secret@h/db")
    stage = DumpStage(source_db, "full")
    with stage.command() as command, libpq_environment(source_db) as env:
        assert source_db.password
        assert not any(source_db.password in arg for arg in command.argv)
        assert command.env is not None and command.env == env
        assert [k for k, v in command.env.items() if source_db.password in v] == ["PGPASSWORD"]
        assert "PGPASSFILE" not in command.env
        assert not any("conn-secret" in v or k.startswith("AIRFLOW_") for k, v in command.env.items())
    assert source_db.password not in repr(source_db)


def test_stream_backup_that_fails_mid_dump_leaves_no_object(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> None:
    _load_users(pg_cluster, source_db, rows=20000)
    pg_cluster.execute("CREATE TABLE secrets (x int); INSERT INTO secrets VALUES (1)", dbname=source_db.dbname)
    pg_cluster.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'limited') THEN "
        "CREATE ROLE limited LOGIN PASSWORD 'limited-pw'; END IF; END $$"
    )
    pg_cluster.execute("GRANT SELECT ON users TO limited", dbname=source_db.dbname)
    limited = PgConnInfo(
        source_db.host, source_db.port, "limited", source_db.dbname, "limited-pw", label="target limited"
    )
    storage = _store(tmp_path)
    with pytest.raises(DumpError, match="permission denied"):
        backup.stream_backup(make_request(limited, gpg_key), storage, "local")
    assert list(storage.list()) == []


def _good_backup(
    cluster: TemporaryCluster, source: PgConnInfo, key: GeneratedKey, tmp_path: Path
) -> tuple[Manifest, object]:
    _load_users(cluster, source)
    storage = open_storage(f"file://{tmp_path}/backups")
    return backup.stream_backup(make_request(source, key), storage, "local"), storage


def test_validation_passes_on_a_good_backup_and_records_the_rto(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    manifest, storage = _good_backup(pg_cluster, source_db, gpg_key, tmp_path)
    before = scratch_databases(scratch_cluster)
    record = validate_backup(
        manifest,
        storage,
        validation_settings(scratch_cluster, source_db),  # type: ignore[arg-type]
        decryption_key,
        tmp_path / "v",
    )
    assert record["status"] == "passed"
    assert record["tables"] == {"public.users": {"expected": 500, "found": 500, "ok": True}}
    assert record["queries"] == [{"query": "SELECT count(*) FROM users", "status": "ok", "result": [500]}]
    assert record["restore_seconds"] > 0
    assert scratch_databases(scratch_cluster) == before  # its scratch database is gone


def test_corrupted_object_at_the_primary_fails_validation_loudly(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    manifest, storage = _good_backup(pg_cluster, source_db, gpg_key, tmp_path)
    stored = tmp_path / "backups" / manifest.object_key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(stored, 0o600)
    stored.write_bytes(bytes(data))
    before = scratch_databases(scratch_cluster)
    with pytest.raises(IntegrityError, match=manifest.object_key):
        validate_backup(
            manifest,
            storage,
            validation_settings(scratch_cluster, source_db),  # type: ignore[arg-type]
            decryption_key,
            tmp_path / "v",
        )
    assert scratch_databases(scratch_cluster) == before  # its scratch database is gone


def test_restored_rows_differing_from_the_snapshot_fail_validation(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    manifest, storage = _good_backup(pg_cluster, source_db, gpg_key, tmp_path)
    manifest.source["row_counts"]["public.users"] = 501
    with pytest.raises(VerificationError, match="public.users: expected 501, found 500") as failure:
        validate_backup(
            manifest,
            storage,
            validation_settings(scratch_cluster, source_db),  # type: ignore[arg-type]
            decryption_key,
            tmp_path / "v",
        )
    assert failure.value.record["status"] == "failed"


def test_scratch_server_must_not_be_the_source_unless_allowed(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    from pgbackup.errors import ConfigError

    manifest, storage = _good_backup(pg_cluster, source_db, gpg_key, tmp_path)
    with pytest.raises(ConfigError, match="is the source server"):
        validate_backup(
            manifest,
            storage,
            validation_settings(pg_cluster, source_db),  # type: ignore[arg-type]
            decryption_key,
            tmp_path / "v",
        )
    record = validate_backup(
        manifest,
        storage,  # type: ignore[arg-type]
        validation_settings(pg_cluster, source_db, allow_source_server=True),
        decryption_key,
        tmp_path / "v",
    )
    assert record["status"] == "passed"
