"""Names of every shape (issue 7 items 7 and 8): schemas, tables, materialized views and
databases named with keywords, mixed case, quotes, dots, spaces, ``=`` and non-ASCII text
back up, restore, count and refresh exactly, on both data paths and every format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.db_compare import psql_file
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup.dump import qualified, split_qualified
from pgbackup.errors import RestoreError
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import (
    DecryptionKey,
    count_rows,
    decryption_keyring,
    fetch_plaintext,
    restore_archive,
    scratch_database,
    validate_backup,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import conn_info, make_request, scratch_databases, take_backup, validation_settings

pytestmark = pytest.mark.integration

HOSTILE_NAMES = Path(__file__).resolve().parents[2] / "sql" / "hostile_names.sql"
# Each is a plain database name; libpq would read the first three as connection strings.
HOSTILE_DATABASES = (
    "dbname=postgres",
    "postgresql://evil@elsewhere:1/other",
    "a=b 'single' \"double\" back\\slash ñ",
)
SKIPPED_SCHEMA = "Skip.me*"  # a pg_dump pattern would read the dot and the star
# Exact rows per table of hostile_names.sql, by manifest key (readable, as qualified() writes it).
EXPECTED_ROWS = {
    "order.select": 7,
    "order.user": 11,
    "select.from": 6,
    '"MixedCase"."MixedTable"': 3,
    '"MixedCase".mixedtable': 5,
    '"we""ird"."ta""ble"': 4,
    '"a.b"."c.d"': 9,
    '"with space"." leading and trailing "': 2,
    '"ñandú ☃"."データ"': 8,
    'public."x""; DROP TABLE public.victim; --"': 1,
    "public.victim": 2,
}


@pytest.fixture
def hostile_source(pg_cluster: TemporaryCluster) -> Iterator[PgConnInfo]:
    """A source database with a hostile name holding hostile_names.sql and a schema to exclude."""
    name = 'src "order".x=1 \\ ñ'
    pg_cluster.create_database(name)
    psql_file(pg_cluster.dsn(name), HOSTILE_NAMES)
    pg_cluster.execute(
        'CREATE SCHEMA "Skip.me*"; CREATE TABLE "Skip.me*".t (id int); INSERT INTO "Skip.me*".t VALUES (1)',
        dbname=name,
    )
    yield conn_info(pg_cluster, name, "target hostile")
    pg_cluster.drop_database(name)


@pytest.fixture
def hostile_template(scratch_cluster: TemporaryCluster) -> Iterator[str]:
    name = 'tmpl "x"=y \\ ñ'
    scratch_cluster.create_database(name)
    yield name
    scratch_cluster.drop_database(name)


def _storage(tmp_path: Path) -> Storage:
    (tmp_path / "backups").mkdir(exist_ok=True)
    return open_storage(f"file://{tmp_path}/backups")


@pytest.mark.fault(
    "schema, table, matview and database names that are keywords, mixed case, quoted, dotted, spaced "
    'or non-ASCII (CREATE SCHEMA "order")',
    "full backup and its validation pass on both data paths and formats; counts exact per table",
)
@pytest.mark.parametrize(
    ("data_path", "dump_format"), [("staged", "custom"), ("stream", "custom"), ("staged", "plain"), ("stream", "plain")]
)
def test_hostile_names_back_up_and_validate(
    data_path: str,
    dump_format: str,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    hostile_source: PgConnInfo,
    hostile_template: str,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = _storage(tmp_path)
    request = make_request(hostile_source, gpg_key, dump_format=dump_format, exclude_schemas=(SKIPPED_SCHEMA,))
    manifest = take_backup(data_path, request, storage, workdir)

    assert manifest.source["row_counts"] == EXPECTED_ROWS
    assert manifest.source["populated_matviews"] == ['order."select mv"', '"we""ird"."Mat.View"', '"ñandú ☃"."ビュー"']
    settings = validation_settings(scratch_cluster, hostile_source, template=hostile_template, queries=())
    before = scratch_databases(scratch_cluster)
    record = validate_backup(manifest, storage, settings, decryption_key, tmp_path / "validate")
    assert record["status"] == "passed", record
    assert {t: r["found"] for t, r in record["tables"].items()} == EXPECTED_ROWS
    # The injection-shaped table name stayed a name.
    assert pg_cluster.execute("SELECT count(*) FROM public.victim", dbname=hostile_source.dbname) == [(2,)]
    assert scratch_databases(scratch_cluster) == before  # its scratch database is gone


@pytest.mark.fault(
    "a schema + data pair whose tables, matviews and constraints have hostile names, in every format pair",
    "pre-data, data, post-data restore; hostile matviews refreshed; validation passes",
)
@pytest.mark.parametrize(
    ("schema_format", "data_format"),
    [("custom", "custom"), ("plain", "custom"), ("custom", "plain"), ("plain", "plain")],
)
def test_hostile_names_schema_and_data_pair_validates(
    schema_format: str,
    data_format: str,
    scratch_cluster: TemporaryCluster,
    hostile_source: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = _storage(tmp_path)
    schema = take_backup(
        "staged", make_request(hostile_source, gpg_key, kind="schema", dump_format=schema_format), storage, workdir
    )
    data = take_backup(
        "stream", make_request(hostile_source, gpg_key, kind="data", dump_format=data_format), storage, workdir
    )
    settings = validation_settings(scratch_cluster, hostile_source, queries=())
    before = scratch_databases(scratch_cluster)
    record = validate_backup(data, storage, settings, decryption_key, tmp_path / "validate", schema_manifest=schema)
    assert record["status"] == "passed", record
    assert {t: r["found"] for t, r in record["tables"].items() if t in EXPECTED_ROWS} == EXPECTED_ROWS
    assert scratch_databases(scratch_cluster) == before  # its scratch database is gone


def _fetch(manifest: Manifest, storage: Storage, key: DecryptionKey, into: Path) -> Path:
    with decryption_keyring(key) as keyring:
        fetch_plaintext(manifest, storage, keyring, into)
    return into


@pytest.mark.fault(
    "restore into a database whose name holds '=', quotes, a backslash or starts with postgresql:// "
    "(pg_restore/psql take such a --dbname as a connection string)",
    "the archive restores into exactly the named database, and no other",
)
@pytest.mark.parametrize("dump_format", ["custom", "plain"])
def test_restore_into_a_database_named_like_a_connection_string(
    dump_format: str,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    pg_cluster.execute("CREATE TABLE marker (id int); INSERT INTO marker VALUES (1), (2), (3)", dbname=source_db.dbname)
    storage = _storage(tmp_path)
    manifest = take_backup("staged", make_request(source_db, gpg_key, dump_format=dump_format), storage, workdir)
    archive = _fetch(manifest, storage, decryption_key, tmp_path / "plain.dump")
    for name in HOSTILE_DATABASES:
        scratch_cluster.create_database(name)
        try:
            target = conn_info(scratch_cluster, name)
            restore_archive(archive, target, dump_format)
            assert count_rows(target, ["public.marker"]) == {"public.marker": 3}, name
        finally:
            scratch_cluster.drop_database(name)
    # Nothing landed anywhere else (e.g. "dbname=postgres" must not mean the postgres database).
    for other in ("postgres", "template1"):
        assert count_rows(conn_info(scratch_cluster, other), ["public.marker"]) == {"public.marker": None}


@pytest.mark.fault(
    "scratch database created with a hostile name prefix (quotes, '=', spaces, non-ASCII)",
    "created and dropped by exactly that name",
)
def test_scratch_database_with_a_hostile_name_is_created_and_dropped(scratch_cluster: TemporaryCluster) -> None:
    prefix = 'tr "q" =x ñ'
    with scratch_database(conn_info(scratch_cluster, label="scratch"), prefix=prefix) as db:
        assert db.dbname.startswith(prefix)
        assert scratch_cluster.execute("SELECT current_database()", dbname=db.dbname) == [(db.dbname,)]
    assert scratch_cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE 'tr %'") == []


@pytest.mark.fault(
    "manifest table keys of older backups (unquoted keywords like order.select, quoted mixed case)",
    "each key parses back to its exact (schema, table); a malformed key is a named error",
)
def test_manifest_table_keys_round_trip_and_older_keys_parse() -> None:
    names = ["order", "select", "MixedCase", 'we"ird', "a.b", " sp ace ", "ñandú ☃", "x", "_1", 'x"."y', '"']
    for schema in names:
        for table in names:
            assert split_qualified(qualified(schema, table)) == (schema, table)
    # Keys as every earlier version wrote them keep their meaning.
    assert split_qualified("order.select") == ("order", "select")
    assert split_qualified('"Mixed Case Schema"."Customers"') == ("Mixed Case Schema", "Customers")
    assert split_qualified('app."café_☕ menu"') == ("app", "café_☕ menu")
    for malformed in ("users", "a.b.c", '"open.x', "Upper.x", 'a."b"c', ""):
        with pytest.raises(RestoreError, match="manifest table key"):
            split_qualified(malformed)
