"""Supabase profile, names of every shape and restore order (issue 7 items 7, 8, 9 on the supabase path).

A Supabase-shaped project (devtools.supabase_fixture) holds tests/sql/hostile_names.sql:
keyword, mixed-case, quoted, dotted, spaced and non-ASCII schemas, tables and materialized
views, and a NOT VALID check that legacy rows violate. Its supabase-profile backups, custom
and plain, full and schema + data pairs in every format combination, must pass validation
and restore through the profile into a database whose name holds ``=`` and quotes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.db_compare import psql_file
from devtools.gpg_keys import GeneratedKey
from devtools.supabase_fixture import SupabaseCluster, create_platform_template, supabase_cluster
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.profiles import RestoreJob, profile_for
from pgbackup.restore import (
    DecryptionKey,
    ValidationSettings,
    count_rows,
    decryption_keyring,
    fetch_plaintext,
    scratch_database,
    validate_backup,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup

pytestmark = pytest.mark.integration

HOSTILE_NAMES = Path(__file__).resolve().parents[2] / "sql" / "hostile_names.sql"
TEMPLATE = "supabase_platform"
# A plain name that libpq would read as a connection string if passed bare to --dbname.
HOSTILE_DATABASE_PREFIX = "sb=x 'q' \"d\" ñ"
# Exact rows per user table of hostile_names.sql, by manifest key.
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
    # pg_restore -l prints names unquoted: "TABLE DATA net stuff t postgres" reads as schema net,
    # a platform schema whose rows a supabase restore leaves out.
    '"net stuff".t': 5,
}
# User schemas whose first word is a platform schema's name (loaded after hostile_names.sql).
SPACED_SQL = """
CREATE SCHEMA "net stuff";
CREATE TABLE "net stuff".t (id serial PRIMARY KEY, note text);
INSERT INTO "net stuff".t (note) SELECT 'n' || g FROM generate_series(1, 5) g;
"""
MATVIEWS = ['order."select mv"', '"we""ird"."Mat.View"', '"ñandú ☃"."ビュー"']
# What each refreshed matview holds once its source rows are back.
MATVIEW_ROWS = {'order."select mv"': 7, '"we""ird"."Mat.View"': 1, '"ñandú ☃"."ビュー"': 6}
BACKUPS = {  # name: (kind, dump format)
    "full.custom": ("full", "custom"), "full.plain": ("full", "plain"),
    "schema.custom": ("schema", "custom"), "schema.plain": ("schema", "plain"),
    "data.custom": ("data", "custom"), "data.plain": ("data", "plain"),
}


def as_postgres(project: SupabaseCluster, dbname: str = "postgres", label: str = "supabase project") -> PgConnInfo:
    return PgConnInfo(project.host, project.port, "postgres", dbname, project.postgres_password, label=label)


@dataclass
class HostileProject:
    source: SupabaseCluster
    scratch: SupabaseCluster
    storage: Storage
    manifests: dict[str, Manifest]


@pytest.fixture(scope="module")
def hostile(gpg_key: GeneratedKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileProject]:
    """A project holding hostile_names.sql (loaded as postgres, as its SQL editor would), every
    supabase-profile backup of it, and a Supabase-shaped scratch server with a platform template."""
    base = tmp_path_factory.mktemp("supabase-names")
    with supabase_cluster() as source, supabase_cluster() as scratch:
        create_platform_template(scratch)
        psql_file(source.postgres_dsn(), HOSTILE_NAMES)
        (base / "spaced.sql").write_text(SPACED_SQL)
        psql_file(source.postgres_dsn(), base / "spaced.sql")
        storage = open_storage(f"file://{base}/backups")
        manifests: dict[str, Manifest] = {}
        for name, (kind, dump_format) in BACKUPS.items():
            workdir = base / f"staging-{name}"
            workdir.mkdir()
            request = make_request(as_postgres(source), gpg_key, kind, profile="supabase", dump_format=dump_format)
            manifests[name] = take_backup("staged", request, storage, workdir)
        yield HostileProject(source, scratch, storage, manifests)


def settings(project: HostileProject) -> ValidationSettings:
    return ValidationSettings(
        scratch=as_postgres(project.scratch, label="scratch"), source=as_postgres(project.source), template=TEMPLATE
    )


def restore_into_hostile_database(
    project: HostileProject, data: Manifest, schema: Manifest | None, key: DecryptionKey, workdir: Path
) -> dict[str, int | None]:
    """The profile's restore (what validation and break-glass recovery run) into a database
    named like a connection string; returns the counts found there."""
    workdir.mkdir()
    archive, schema_archive = workdir / "restore.dump", workdir / "schema.dump"
    with decryption_keyring(key) as keyring:
        fetch_plaintext(data, project.storage, keyring, archive)
        if schema is not None:
            fetch_plaintext(schema, project.storage, keyring, schema_archive)
    scratch = as_postgres(project.scratch, label="scratch")
    with scratch_database(scratch, prefix=HOSTILE_DATABASE_PREFIX, template=TEMPLATE) as db:
        assert "=" in db.dbname
        profile_for("supabase").restore(
            RestoreJob(data, archive, db, workdir, schema_archive if schema else None, schema, TEMPLATE)
        )
        found = count_rows(db, [*EXPECTED_ROWS, *MATVIEWS])
    # Nothing landed in the database a bare "dbname=..." would have meant.
    assert count_rows(scratch, ["order.select"]) == {"order.select": None}
    return found


def assert_no_scratch_left(project: HostileProject) -> None:
    assert project.scratch.cluster.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'test_restore%' OR datname LIKE 'sb=%'"
    ) == []


@pytest.mark.fault(
    "supabase-profile full backup (custom, plain) of a project whose schemas, tables and matviews are keywords, "
    "mixed case, quoted, dotted, spaced or non-ASCII; restored by the profile into a database named with '='",
    "validation passes with exact counts; the profile's strict restore connects to exactly that database",
)
@pytest.mark.parametrize("dump_format", ["custom", "plain"])
def test_supabase_full_backup_with_hostile_names_validates_and_restores(
    hostile: HostileProject, dump_format: str, decryption_key: DecryptionKey, tmp_path: Path
) -> None:
    manifest = hostile.manifests[f"full.{dump_format}"]
    assert manifest.source["populated_matviews"] == MATVIEWS
    assert {t: manifest.source["row_counts"][t] for t in EXPECTED_ROWS} == EXPECTED_ROWS

    record = validate_backup(manifest, hostile.storage, settings(hostile), decryption_key, tmp_path / "validate")

    assert record["status"] == "passed" and record["mismatches"] == [], record
    assert {t: record["tables"][t]["found"] for t in EXPECTED_ROWS} == EXPECTED_ROWS
    found = restore_into_hostile_database(hostile, manifest, None, decryption_key, tmp_path / "restore")
    assert found == {**EXPECTED_ROWS, **MATVIEW_ROWS}
    assert_no_scratch_left(hostile)


@pytest.mark.fault(
    "supabase-profile schema + data pair (every format combination) of a project with hostile names, "
    "populated matviews like order.\"select mv\" and a NOT VALID check that legacy rows violate",
    "schema pre-data, data, schema post-data in one strict transaction; each matview refreshed by its quoted "
    "name; validation passes, and the profile restores into a database named with '='",
)
@pytest.mark.parametrize(
    ("schema_format", "data_format"),
    [("custom", "custom"), ("plain", "custom"), ("custom", "plain"), ("plain", "plain")],
)
def test_supabase_pair_with_hostile_names_validates_and_restores(
    hostile: HostileProject, schema_format: str, data_format: str, decryption_key: DecryptionKey, tmp_path: Path
) -> None:
    schema, data = hostile.manifests[f"schema.{schema_format}"], hostile.manifests[f"data.{data_format}"]
    assert schema.source["populated_matviews"] == MATVIEWS

    record = validate_backup(
        data, hostile.storage, settings(hostile), decryption_key, tmp_path / "validate", schema_manifest=schema
    )

    assert record["status"] == "passed" and record["mismatches"] == [], record
    assert {t: record["tables"][t]["found"] for t in EXPECTED_ROWS} == EXPECTED_ROWS
    found = restore_into_hostile_database(hostile, data, schema, decryption_key, tmp_path / "restore")
    assert found == {**EXPECTED_ROWS, **MATVIEW_ROWS}
    assert_no_scratch_left(hostile)


# A project whose only quirk is legacy rows that a later NOT VALID check rejects.
LEGACY_SQL = """
CREATE TABLE public.accounts (id integer PRIMARY KEY, email text);
INSERT INTO public.accounts SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'u' || g || '@example.com' END
  FROM generate_series(1, 12) g;
ALTER TABLE public.accounts ADD CONSTRAINT accounts_email_present CHECK (email IS NOT NULL) NOT VALID;
"""


@pytest.mark.fault(
    "supabase-profile plain schema + data pair (or a plain part with a custom one) of a table with a NOT VALID "
    "check constraint that legacy rows violate",
    "the restore adds the constraint after the rows (pre-data, data, post-data); validation passes, the "
    "constraint is back, still NOT VALID",
)
@pytest.mark.parametrize(("schema_format", "data_format"), [("plain", "plain"), ("plain", "custom"),
                                                             ("custom", "plain")])
def test_supabase_plain_pair_restores_a_not_valid_check_after_the_rows(
    schema_format: str,
    data_format: str,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    with supabase_cluster() as source, supabase_cluster() as scratch:
        create_platform_template(scratch)
        (tmp_path / "legacy.sql").write_text(LEGACY_SQL)
        psql_file(source.postgres_dsn(), tmp_path / "legacy.sql")  # as postgres, like the SQL editor
        storage = open_storage(f"file://{tmp_path}/backups")
        project = HostileProject(source, scratch, storage, {})
        schema = take_backup("staged", make_request(
            as_postgres(source), gpg_key, "schema", profile="supabase", dump_format=schema_format), storage, workdir)
        data = take_backup("staged", make_request(
            as_postgres(source), gpg_key, "data", profile="supabase", dump_format=data_format), storage, workdir)

        record = validate_backup(
            data, storage, settings(project), decryption_key, tmp_path / "validate", schema_manifest=schema
        )

        assert record["status"] == "passed", record
        assert record["tables"]["public.accounts"] == {"expected": 12, "found": 12, "ok": True}
        with scratch_database(as_postgres(scratch, label="scratch"), template=TEMPLATE) as db:
            workdir_restore = tmp_path / "restore"
            workdir_restore.mkdir()
            archive, schema_archive = workdir_restore / "restore.dump", workdir_restore / "schema.dump"
            with decryption_keyring(decryption_key) as keyring:
                fetch_plaintext(data, storage, keyring, archive)
                fetch_plaintext(schema, storage, keyring, schema_archive)
            profile_for("supabase").restore(RestoreJob(data, archive, db, workdir_restore, schema_archive, schema))
            assert scratch.cluster.execute(
                "SELECT convalidated FROM pg_constraint WHERE conname = 'accounts_email_present'", dbname=db.dbname
            ) == [(False,)]
            assert scratch.cluster.execute(
                "SELECT count(*) FROM public.accounts WHERE email IS NULL", dbname=db.dbname
            ) == [(4,)]
