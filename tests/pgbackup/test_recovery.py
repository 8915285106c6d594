"""Restores of chosen backups into real databases (the engine behind the CLI and pg_restore_manual)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devtools.db_compare import compare_databases, psql_file
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup import envconn, recovery
from pgbackup.catalog import read_catalog
from pgbackup.config import CompressionConfig, EncryptionConfig, TimeoutsConfig
from pgbackup.errors import ConfigError, RestoreError
from pgbackup.manifest import Manifest, iso, utcnow
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, record_verification
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup, validation_settings

HARD_FEATURES = Path(__file__).resolve().parents[1] / "sql" / "hard_features.sql"

SHOP = """
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), total numeric(10,2));
CREATE TABLE notes (id serial PRIMARY KEY, body text);
INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 50) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 50, g * 1.5 FROM generate_series(1, 200) g;
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 30) g;
"""

# A CHECK on a setting the source session had and a new database lacks (pg_dump does not
# carry session or database settings): the dump is fine, its restore fails half-way, at the
# first row loaded, whatever the load order or parallelism.
POISON = """
SET app.allow_items = 'on';
CREATE TABLE items (v int CHECK (current_setting('app.allow_items', true) IS NOT DISTINCT FROM 'on'));
INSERT INTO items VALUES (1), (2);
"""


def _run(conn: PgConnInfo, sql: str) -> list[tuple[Any, ...]]:
    from pgbackup.pgconn import connect

    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    finally:
        connection.close()


def _dsn(cluster: TemporaryCluster, conn: PgConnInfo) -> str:
    return cluster.dsn(conn.dbname)


def _exists(cluster: TemporaryCluster, name: str) -> bool:
    return bool(cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def _verified(manifest: Manifest, storage: Storage) -> Manifest:
    """Mark a backup verified, as its validation would (restore tests of validation live elsewhere)."""
    return record_verification(manifest, {"status": "passed", "verified_at": iso(utcnow())}, [storage])


def _backup(
    source: PgConnInfo, key: GeneratedKey, storage: Storage, workdir: Path, kind: str = "full", verified: bool = True
) -> Manifest:
    manifest = take_backup("staged", make_request(source, key, kind), storage, workdir)
    return _verified(manifest, storage) if verified else manifest


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    (tmp_path / "store").mkdir()
    return open_storage(f"file://{tmp_path / 'store'}")


@pytest.fixture
def safety(gpg_key: GeneratedKey, scratch_cluster: TemporaryCluster, source_db: PgConnInfo) -> recovery.SafetySettings:
    return recovery.SafetySettings(
        compression=CompressionConfig("zstd", 3),
        encryption=EncryptionConfig((gpg_key.email,), (str(gpg_key.public_key_file),), "unused"),
        public_key_files=(gpg_key.public_key_file,),
        validation=validation_settings(scratch_cluster, source_db, queries=()),
        destination="local",
    )


def _request(source: PgConnInfo, pg_cluster: TemporaryCluster, database: str, **values: Any) -> recovery.RestoreRequest:
    return recovery.RestoreRequest(target="projectx", into=conn_info(pg_cluster, database), source=source, **values)


def test_full_restore_into_a_new_database_is_identical_and_timed(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
) -> None:
    psql_file(_dsn(pg_cluster, source_db), HARD_FEATURES)
    manifest = _backup(source_db, gpg_key, storage, workdir)
    request = _request(source_db, pg_cluster, "restored_full")
    try:
        record = recovery.restore_backup(request, storage, decryption_key, tmp_path / "restore")
        assert record.status == recovery.PASSED and record.backup_id == manifest.backup_id
        assert record.new_database and not record.mismatches and record.tables_checked > 5
        assert set(record.phases) >= {"select", "decrypt", "restore", "verify"}
        assert record.rto_seconds == pytest.approx(sum(record.phases.values()), abs=0.01)
        assert compare_databases(_dsn(pg_cluster, source_db), pg_cluster.dsn("restored_full")) == []
        assert not list((tmp_path / "restore").glob("*.dump"))  # no plaintext left behind
    finally:
        pg_cluster.drop_database("restored_full")


def test_choosing_latest_tier_before_and_exact(
    source_db: PgConnInfo, gpg_key: GeneratedKey, storage: Storage, workdir: Path
) -> None:
    _run(source_db, SHOP)
    older = _backup(source_db, gpg_key, storage, workdir)
    newer = _backup(source_db, gpg_key, storage, workdir)
    unverified = _backup(source_db, gpg_key, storage, workdir, verified=False)
    resolve = recovery.resolve_backup
    assert resolve("projectx", recovery.BackupChoice(), "full", storage).backup_id == newer.backup_id
    assert resolve("projectx", recovery.BackupChoice(tier="daily"), "full", storage).backup_id == newer.backup_id
    before = recovery.BackupChoice(before=older.created)
    assert resolve("projectx", before, "full", storage).backup_id in (older.backup_id, newer.backup_id)
    assert resolve("projectx", recovery.BackupChoice(unverified.backup_id), "full", storage).backup_id == (
        unverified.backup_id
    )
    with pytest.raises(RestoreError, match="no verified full backup matches .* on or before 2020"):
        resolve("projectx", recovery.BackupChoice(before=recovery.parse_when("2020-01-01")), "full", storage)
    with pytest.raises(RestoreError, match="no verified full backup matches .* weekly tier"):
        resolve("projectx", recovery.BackupChoice(tier="weekly"), "full", storage)


class _Untouchable(Storage):
    """Any read or write fails the test: bad input must be refused before storage is touched."""

    scheme = "file"

    def __init__(self) -> None:
        super().__init__("file:///nowhere")

    def __getattribute__(self, name: str) -> Any:
        if name in {"list", "get_bytes", "stat", "open_read", "put_bytes", "put_file", "put_stream", "delete"}:
            raise AssertionError(f"storage touched: {name}")
        return super().__getattribute__(name)

    def _stat(self, key: str) -> Any:  # pragma: no cover - never reached
        raise AssertionError

    def _list(self, prefix: str) -> Any:  # pragma: no cover - never reached
        raise AssertionError


@pytest.mark.fault(
    "restore asked for a backup id with path tricks or shell/SQL metacharacters",
    "refused with a message naming the problem before the catalog is read",
)
@pytest.mark.parametrize(
    ("backup_id", "message"),
    [
        ("../projectx-full-20261127T060002Z-abcd", "contains a path"),
        ("projectx/daily/x", "contains a path"),
        ("x; rm -rf ~", "characters a backup id never has"),
        ("x'; DROP DATABASE projectx; --", "characters a backup id never has"),
        ("$(reboot)", "characters a backup id never has"),
        ("a`id`", "characters a backup id never has"),
    ],
)
def test_bad_backup_ids_are_refused_before_anything_is_read(backup_id: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        recovery.resolve_backup("projectx", recovery.BackupChoice(backup_id), "full", _Untouchable())


@pytest.mark.fault(
    "restore into a database name that is not a valid identifier (quotes, spaces, ;, a system db)",
    "refused naming the expected form; nothing created",
)
@pytest.mark.parametrize(
    "name",
    [
        'x"; DROP DATABASE y; --',
        "has space",
        "1starts_with_digit",
        "",
        "postgres",
        "template1",
        "a" * 64,
        "pgbackup_restoring_20200101_000000_1",  # a working name: the next restore would drop it
    ],
)
def test_invalid_database_names_are_refused(pg_cluster: TemporaryCluster, name: str) -> None:
    with pytest.raises(ConfigError, match="database name"):
        recovery.RestoreRequest(target="projectx", into=conn_info(pg_cluster, name))


@pytest.mark.fault(
    "restore onto the target's own database, or any existing database, without the overwrite flow",
    "refused before anything is fetched; the database is untouched",
)
def test_existing_or_source_database_needs_force(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, storage: Storage, workdir: Path
) -> None:
    _run(source_db, SHOP)
    _backup(source_db, gpg_key, storage, workdir)
    with pytest.raises(RestoreError, match="is the source database of target projectx; .*--force"):
        recovery.plan_restore(_request(source_db, pg_cluster, source_db.dbname), storage)
    pg_cluster.create_database("someone_elses")
    try:
        with pytest.raises(RestoreError, match="someone_elses already exists .* --force"):
            recovery.plan_restore(_request(source_db, pg_cluster, "someone_elses"), storage)
    finally:
        pg_cluster.drop_database("someone_elses")
    assert _run(source_db, "SELECT count(*) FROM orders") == [(200,)]


@pytest.mark.fault(
    "a restore mode that does not match the backup (data-only from a schema backup, full from data)",
    "refused naming the backup's kind and the mode that fits it; nothing created",
)
def test_mode_must_match_the_backup(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, storage: Storage, workdir: Path
) -> None:
    _run(source_db, SHOP)
    schema = _backup(source_db, gpg_key, storage, workdir, "schema")
    data = _backup(source_db, gpg_key, storage, workdir, "data")
    with pytest.raises(RestoreError, match="mode data-only does not match .* it is a schema backup.*schema-only"):
        recovery.plan_restore(
            _request(source_db, pg_cluster, "nope", choice=recovery.BackupChoice(schema.backup_id), mode="data-only"),
            storage,
        )
    with pytest.raises(RestoreError, match="mode full does not match .* it is a data backup"):
        recovery.plan_restore(
            _request(source_db, pg_cluster, "nope", choice=recovery.BackupChoice(data.backup_id)), storage
        )
    assert not _exists(pg_cluster, "nope")


def test_schema_then_data_and_tables_modes(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
) -> None:
    _run(source_db, SHOP)
    _backup(source_db, gpg_key, storage, workdir, "schema")
    _backup(source_db, gpg_key, storage, workdir, "data")
    full = _backup(source_db, gpg_key, storage, workdir, "full")
    try:
        record = recovery.restore_backup(
            _request(source_db, pg_cluster, "restored_pair", mode="schema-then-data"),
            storage,
            decryption_key,
            tmp_path / "pair",
        )
        assert record.schema_backup_id and record.mode == "schema-then-data"
        assert compare_databases(_dsn(pg_cluster, source_db), pg_cluster.dsn("restored_pair")) == []

        record = recovery.restore_backup(
            _request(source_db, pg_cluster, "restored_tables", mode="tables", tables=("orders", "public.customers")),
            storage,
            decryption_key,
            tmp_path / "tables",
        )
        assert record.backup_id == full.backup_id
        assert {t: r["found"] for t, r in record.comparison.items()} == {"public.customers": 50, "public.orders": 200}
        assert _run(conn_info(pg_cluster, "restored_tables"), "SELECT count(*) FROM notes") == [(0,)]
        with pytest.raises(RestoreError, match="holds no table public.nope"):
            recovery.plan_restore(_request(source_db, pg_cluster, "x", mode="tables", tables=("nope",)), storage)
    finally:
        pg_cluster.drop_database("restored_pair")
        pg_cluster.drop_database("restored_tables")


@pytest.mark.fault(
    "a restore that fails half-way into a new database (rows violate a CHECK in the new database)",
    "the new database is dropped; the error names the phase and pg_restore's message",
)
def test_failed_restore_into_a_new_database_drops_it(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
) -> None:
    _run(source_db, POISON)
    poisoned = _backup(source_db, gpg_key, storage, workdir, verified=False)
    request = _request(source_db, pg_cluster, "half_restored", choice=recovery.BackupChoice(poisoned.backup_id))
    with pytest.raises(
        recovery.RestoreFailed,
        match="(?s)restore: .*violates check constraint.*the new database half_restored was dropped",
    ) as failed:
        recovery.restore_backup(request, storage, decryption_key, tmp_path / "restore")
    assert failed.value.record.database_dropped and failed.value.record.status == recovery.FAILED
    assert not _exists(pg_cluster, "half_restored")
    assert failed.value.record.working_database and not _exists(pg_cluster, failed.value.record.working_database)


def test_a_name_taken_during_the_restore_is_left_alone(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
) -> None:
    """The restore runs under a working name; if someone creates the asked-for name meanwhile, it is not touched."""
    _run(source_db, SHOP)
    _backup(source_db, gpg_key, storage, workdir)
    request = _request(source_db, pg_cluster, "taken_meanwhile")
    plan = recovery.plan_restore(request, storage)
    pg_cluster.create_database("taken_meanwhile")
    _run(conn_info(pg_cluster, "taken_meanwhile"), "CREATE TABLE someone_elses (id int)")
    try:
        with pytest.raises(recovery.RestoreFailed, match="could not be renamed to taken_meanwhile") as failed:
            recovery.execute_restore(plan, storage, decryption_key, tmp_path / "restore")
        assert failed.value.record.database_dropped
        assert failed.value.record.working_database and not _exists(pg_cluster, failed.value.record.working_database)
        assert _run(conn_info(pg_cluster, "taken_meanwhile"), "SELECT to_regclass('someone_elses') IS NOT NULL") == [
            (True,)
        ]
    finally:
        pg_cluster.drop_database("taken_meanwhile")


@pytest.mark.fault(
    "a restore that fails half-way into an existing database overwritten with force",
    "a verified safety backup was taken first; the error names it and the exact command to restore it",
)
def test_failed_overwrite_names_the_safety_backup_and_its_command(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
    safety: recovery.SafetySettings,
) -> None:
    _run(source_db, POISON)
    poisoned = _backup(source_db, gpg_key, storage, workdir, verified=False)
    pg_cluster.create_database("precious")
    precious = conn_info(pg_cluster, "precious")
    _run(precious, SHOP)
    try:
        request = _request(
            source_db,
            pg_cluster,
            "precious",
            choice=recovery.BackupChoice(poisoned.backup_id),
            force=True,
            restore_command="pgbackup restore --backup {backup_id} --into {database}",
        )
        plan = recovery.plan_restore(request, storage)
        assert plan.overwrite and "EXISTS and will be overwritten" in plan.summary()["consequence"]
        with pytest.raises(recovery.RestoreFailed) as failed:
            recovery.execute_restore(plan, storage, decryption_key, tmp_path / "restore", safety=safety)
        record = failed.value.record
        assert record.safety_backup_id and record.safety_backup_id.startswith("projectx_safety-full-")
        assert f"The safety backup {record.safety_backup_id} holds it" in str(failed.value)
        assert f"pgbackup restore --backup {record.safety_backup_id} --into precious" in str(failed.value)
        kept = recovery.find_backup(storage, "projectx", record.safety_backup_id)
        assert kept.verified and kept.source["row_counts"]["public.orders"] == 200
        # The safety backup is never "the latest" backup of the target.
        assert kept.backup_id not in {m.backup_id for m in read_catalog(storage, "projectx").backups}
        # ... and it brings the database back.
        back = recovery.restore_backup(
            _request(source_db, pg_cluster, "precious", choice=recovery.BackupChoice(kept.backup_id), force=True),
            storage,
            decryption_key,
            tmp_path / "back",
            safety=safety,
        )
        assert back.status == recovery.PASSED
        assert _run(precious, "SELECT count(*) FROM orders") == [(200,)]
    finally:
        pg_cluster.drop_database("precious")


def test_data_only_into_an_existing_database_replaces_its_rows(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
    tmp_path: Path,
    safety: recovery.SafetySettings,
) -> None:
    _run(source_db, SHOP)
    _backup(source_db, gpg_key, storage, workdir, "data")
    with pytest.raises(RestoreError, match="data-only loads rows into an existing schema"):
        recovery.plan_restore(_request(source_db, pg_cluster, "fresh", mode="data-only"), storage)
    pg_cluster.create_database("damaged")
    damaged = conn_info(pg_cluster, "damaged")
    _run(damaged, SHOP)
    _run(damaged, "DELETE FROM orders WHERE id > 10; UPDATE notes SET body = 'oops'")
    try:
        record = recovery.restore_backup(
            _request(source_db, pg_cluster, "damaged", mode="data-only", force=True),
            storage,
            decryption_key,
            tmp_path / "r",
            safety=safety,
        )
        assert record.safety_backup_id and not record.new_database
        assert compare_databases(_dsn(pg_cluster, source_db), pg_cluster.dsn("damaged")) == []
    finally:
        pg_cluster.drop_database("damaged")


def test_default_database_name_comes_from_the_backup_time() -> None:
    manifest = Manifest("projectx-full-x", "projectx", "full", "daily", "k", "2026-11-27T06:00:02Z")
    assert recovery.default_database_name(manifest) == "projectx_restored_20261127_060002"
    recovery.check_database_name(recovery.default_database_name(manifest))


# -- connections for the break-glass CLI (envconn): AIRFLOW_CONN_* first, then the tools' defaults --


def test_postgres_connection_from_env_uri_carries_the_timeouts() -> None:
    timeouts = TimeoutsConfig(connect_seconds=7, statement_minutes=2)
    env = {"AIRFLOW_CONN_PROJECTX_DB": "postgresql://app:p%40ss@db.example.com:6000/appdb?sslmode=require"}
    conn = envconn.postgres_conn_info("projectx_db", None, "target projectx", timeouts, env)
    assert (conn.host, conn.port, conn.user, conn.dbname, conn.password, conn.sslmode) == (
        "db.example.com",
        6000,
        "app",
        "appdb",
        "p@ss",
        "require",
    )
    assert conn.connect_timeout == 7 and conn.statement_timeout_ms == 120_000
    assert envconn.postgres_conn_info("projectx_db", "other", "t", timeouts, env).dbname == "other"
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_PROJECTX_DB: connection 'projectx_db' has type 'aws'"):
        envconn.postgres_conn_info("projectx_db", None, "t", timeouts, {"AIRFLOW_CONN_PROJECTX_DB": "aws://a:b@"})


def test_unset_postgres_connection_falls_back_to_libpq_defaults_and_pgpass(
    pg_cluster: TemporaryCluster, tmp_path: Path
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        f"# comment\nother:*:*:*:wrong\n{pg_cluster.host}:{pg_cluster.port}:*:postgres:"
        + pg_cluster.password.replace("\\", "\\\\").replace(":", "\\:")
        + "\n"
    )
    passfile.chmod(0o600)
    env = {
        "PGHOST": pg_cluster.host,
        "PGPORT": str(pg_cluster.port),
        "PGUSER": "postgres",
        "PGPASSFILE": str(passfile),
        "HOME": str(tmp_path),
    }
    conn = envconn.postgres_conn_info("projectx_db", "postgres", "t", TimeoutsConfig(), env)
    assert conn.password == pg_cluster.password and "libpq defaults" in conn.label
    assert recovery.database_exists(conn)  # a real connection with those values
    service_file = tmp_path / "services.conf"
    service_file.write_text(f"[dr]\nhost={pg_cluster.host}\nport={pg_cluster.port}\nuser=postgres\ndbname=postgres\n")
    env = {"PGSERVICE": "dr", "PGSERVICEFILE": str(service_file), "PGPASSFILE": str(passfile), "HOME": str(tmp_path)}
    conn = envconn.postgres_conn_info("projectx_db", None, "t", TimeoutsConfig(), env)
    assert (conn.host, conn.port, conn.dbname, conn.password) == (
        pg_cluster.host,
        pg_cluster.port,
        "postgres",
        pg_cluster.password,
    )
    with pytest.raises(ConfigError, match="PGSERVICE='nope': no such service"):
        envconn.postgres_conn_info("projectx_db", None, "t", TimeoutsConfig(), {**env, "PGSERVICE": "nope"})


def test_storage_and_key_connections() -> None:
    aws = envconn.parse_json(
        "aws_default",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIA",
                "password": "secret",
                "extra": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "region_name": "eu-west-1",
                    "config_kwargs": {"s3": {"addressing_style": "path"}},
                },
            }
        ),
    )
    assert envconn.aws_storage_options(aws) == {
        "aws_access_key_id": "AKIA",
        "aws_secret_access_key": "secret",
        "endpoint_url": "http://127.0.0.1:9",
        "region_name": "eu-west-1",
        "force_path_style": True,
    }
    with pytest.raises(ConfigError, match="role_arn is not supported outside Airflow"):
        envconn.aws_storage_options(
            envconn.parse_uri("aws_default", "aws://?role_arn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx")
        )
    gcp = envconn.parse_json("gcp", '{"conn_type": "google_cloud_platform", "extra": {"project": "p1"}}')
    assert envconn.gcs_storage_options(gcp) == {"project": "p1"}
    with pytest.raises(ConfigError, match="unusable service account key"):
        envconn.gcs_storage_options(
            envconn.parse_json(
                "gcp", '{"conn_type": "google_cloud_platform", "extra": {"keyfile_dict": "{\\"type\\": \\"x\\"}"}}'
            )
        )
    with pytest.raises(ConfigError, match="no decryption key: AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY is not set"):
        envconn.decryption_key("pgbackup_gpg_private_key", {})
    with pytest.raises(ConfigError, match="needs an extra field private_key"):
        envconn.decryption_key("k", {"AIRFLOW_CONN_K": '{"conn_type": "generic", "password": "x"}'})
    key = envconn.decryption_key(
        "k",
        {
            "AIRFLOW_CONN_K": json.dumps(
                {"conn_type": "generic", "password": "pp", "extra": {"private_key": "-----BEGIN PGP-----"}}
            )
        },
    )
    assert key.passphrase == "pp" and "BEGIN" not in repr(key)


def test_a_profile_backup_is_not_restored_into_an_empty_new_database(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, storage: Storage
) -> None:
    key = "projectx/daily/2026-11-27/backup_20261127_060000_000001_abcd0001.dump.zst.gpg"
    storage.put_bytes(key, b"x")
    manifest = Manifest(
        "projectx-full-20261127T060000.000001Z-abcd0001",
        "projectx",
        "full",
        "daily",
        key,
        "2026-11-27T06:00:00Z",
        profile="supabase",
        artifact={"sha256": "0" * 64, "size": 1},
        verification={"status": "passed"},
    )
    storage.put_bytes(key + ".manifest.json", manifest.to_json())
    with pytest.raises(RestoreError, match="supabase-profile backup: it restores into a database that already holds"):
        recovery.plan_restore(_request(source_db, pg_cluster, "empty_new"), storage)
    with pytest.raises(RestoreError, match="supabase-profile backup; it restores only with mode full or schema-then"):
        recovery.plan_restore(
            _request(source_db, pg_cluster, "x", mode="schema-only", choice=recovery.BackupChoice(manifest.backup_id)),
            storage,
        )
    assert not _exists(pg_cluster, "empty_new")


@pytest.mark.fault(
    "a restore into the postgres database (a Supabase project's own) or a template database",
    "postgres only through the overwrite flow (force, after a verified safety backup); templates never",
)
def test_postgres_is_restorable_only_by_overwrite_and_templates_never() -> None:
    with pytest.raises(ConfigError, match="needs the overwrite flow"):
        recovery.check_database_name("postgres")
    assert recovery.check_database_name("postgres", overwrite=True) == "postgres"
    for template in ("template0", "template1"):
        with pytest.raises(ConfigError, match="is a template database"):
            recovery.check_database_name(template, overwrite=True)
