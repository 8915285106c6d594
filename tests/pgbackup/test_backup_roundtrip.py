"""Backup then restore yields the same schema and the same data, on a schema with hard features."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.db_compare import (
    large_objects_checksum,
    normalized_schema,
    psql_file,
    sequence_values,
    table_checksums,
)
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup import backup
from pgbackup.errors import RestoreError
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.pgtools import split_plain_schema
from pgbackup.restore import (
    DecryptionKey,
    count_rows,
    decryption_keyring,
    fetch_plaintext,
    restore_archive,
    restore_schema_and_data,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup

HARD_FEATURES = Path(__file__).resolve().parents[1] / "sql" / "hard_features.sql"
pytestmark = pytest.mark.integration


def restore_into(
    manifest: Manifest,
    storage: Storage,
    key: DecryptionKey,
    cluster: TemporaryCluster,
    name: str,
    tmp: Path,
    sections: tuple[str, ...] = (),
) -> PgConnInfo:
    if name not in [r[0] for r in cluster.execute("SELECT datname FROM pg_database")]:
        cluster.create_database(name)
    target = conn_info(cluster, name)
    plain = tmp / f"{manifest.backup_id}.plain"
    with decryption_keyring(key) as keyring:
        fetch_plaintext(manifest, storage, keyring, plain)
    restore_archive(plain, target, manifest.dump_format, jobs=2)
    return target


def assert_identical(source: str, restored: str) -> None:
    assert normalized_schema(restored) == normalized_schema(source)
    assert table_checksums(restored) == table_checksums(source)
    assert sequence_values(restored) == sequence_values(source)
    assert large_objects_checksum(restored) == large_objects_checksum(source)


@pytest.mark.parametrize("data_path", ["staged", "stream"])
@pytest.mark.parametrize("dump_format", ["custom", "plain"])
def test_full_backup_restores_identical_schema_and_data(
    data_path: str,
    dump_format: str,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    source_dsn = pg_cluster.dsn(source_db.dbname)
    psql_file(source_dsn, HARD_FEATURES)
    storage = open_storage(f"file://{tmp_path}/backups")
    manifest = take_backup(data_path, make_request(source_db, gpg_key, dump_format=dump_format), storage, workdir)

    restored = restore_into(
        manifest, storage, decryption_key, scratch_cluster, f"rt_{data_path}_{dump_format}", tmp_path
    )
    assert_identical(source_dsn, scratch_cluster.dsn(restored.dbname))
    # The manifest's snapshot counts are the source's exact counts.
    assert manifest.source["row_counts"] == count_rows(source_db, manifest.source["tables"])
    assert len(manifest.source["row_counts"]) >= 10
    assert manifest.source["row_counts"]["archive.notes"] == 2  # ONLY: the inheritance child counts apart
    # Staging holds only the artifact (each staged step frees its input); the stream path holds nothing.
    expected = [backup.ENCRYPTED_FILE] if data_path == "staged" else []
    assert sorted(p.name for p in workdir.iterdir()) == expected


@pytest.mark.fault(
    "schema + data pair with a plain-format part, and a NOT VALID check constraint that legacy rows violate",
    "every format pair restores pre-data, then data, then post-data: identical schema, rows, sequences, "
    "large objects, refreshed matviews",
)
@pytest.mark.parametrize(
    ("schema_format", "data_format"),
    [("custom", "custom"), ("plain", "custom"), ("custom", "plain"), ("plain", "plain")],
)
def test_schema_then_data_backups_restore_like_a_full_one(
    schema_format: str,
    data_format: str,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    source_dsn = pg_cluster.dsn(source_db.dbname)
    psql_file(source_dsn, HARD_FEATURES)  # app.orders' note_not_empty is NOT VALID, violated by '' notes
    storage = open_storage(f"file://{tmp_path}/backups")
    schema = take_backup(
        "staged", make_request(source_db, gpg_key, kind="schema", dump_format=schema_format), storage, workdir
    )
    data = take_backup(
        "stream", make_request(source_db, gpg_key, kind="data", dump_format=data_format), storage, workdir
    )
    assert schema.object_key.startswith("projectx/schema/schema_")
    assert "/daily/" in data.object_key and "/data_" in data.object_key

    name = f"rt_schema_{schema_format}_data_{data_format}"
    scratch_cluster.create_database(name)
    with decryption_keyring(decryption_key) as keyring:
        fetch_plaintext(schema, storage, keyring, tmp_path / "schema.plain")
        fetch_plaintext(data, storage, keyring, tmp_path / "data.plain")
    restore_schema_and_data(
        tmp_path / "schema.plain",
        tmp_path / "data.plain",
        conn_info(scratch_cluster, name),
        schema_format,
        data_format,
        schema.source["populated_matviews"],
    )
    assert_identical(source_dsn, scratch_cluster.dsn(name))
    # The split scripts of a plain schema do not outlive the restore.
    assert sorted(p.name for p in tmp_path.glob("schema.plain*")) == ["schema.plain"]


# Headers shaped like pg_dump's, hidden where psql would not see a new entry.
_PREAMBLE = "SET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
_FAKE = "\n--\n-- Name: fake; Type: INDEX; Schema: s; Owner: -\n--\n"


def _entry(name: str, entry_type: str, body: str) -> str:
    return f"--\n-- Name: {name}; Type: {entry_type}; Schema: s; Owner: -\n--\n\n{body}\n\n\n"


@pytest.mark.fault(
    "a plain schema dump whose function bodies, literals, quoted names or comments hold a line shaped "
    "like a post-data entry header, or whose tables use a non-default tablespace",
    "split only at the real first post-data entry; the post-data script keeps the session settings",
)
def test_plain_schema_splits_only_at_real_post_data_headers() -> None:
    pre_entries = (
        _entry("f()", "FUNCTION", f"CREATE FUNCTION s.f() RETURNS text LANGUAGE sql AS $fn$ SELECT '{_FAKE}' $fn$;")
        + _entry(
            "g()",
            "FUNCTION",
            f"CREATE FUNCTION s.g() RETURNS text LANGUAGE sql AS $$ SELECT 1 $$;/* a /* {_FAKE} */ */",
        )
        + _entry("h", "VIEW", f"CREATE VIEW s.h AS SELECT E'it\\'s {_FAKE}' AS \"{_FAKE.replace(chr(34), '')}\";")
        + _entry("a$b$c", "TABLE", "CREATE TABLE s.a$b$c (x text DEFAULT 'y');")
        + "SET default_tablespace = fast;\n\n"
        + _entry("t", "TABLE", "CREATE TABLE s.t (id int);")
    )
    post_entries = _entry("t t_pkey", "CONSTRAINT", "ALTER TABLE ONLY s.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);") + (
        _entry("CONSTRAINT t t_pkey", "COMMENT", "COMMENT ON CONSTRAINT t_pkey ON s.t IS 'pk';")
    )
    pre, post = split_plain_schema(_PREAMBLE + pre_entries + post_entries)
    assert pre == _PREAMBLE + pre_entries
    assert post == _PREAMBLE + "SET default_tablespace = fast;\n\n" + post_entries

    # A name that itself reads "; Type: INDEX; Schema: " cannot be classified: refuse, loudly.
    ambiguous = _PREAMBLE + _entry("x; Type: INDEX; Schema: y", "TABLE", 'CREATE TABLE s."x" (id int);')
    with pytest.raises(RestoreError, match="cannot tell the type"):
        split_plain_schema(ambiguous)
