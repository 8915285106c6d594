"""Supabase profile: backups of a Supabase-shaped project restore into a fresh one with zero errors.

Both projects are real clusters built by devtools.supabase_fixture: bootstrap superuser
supabase_admin owning the platform, postgres a NOSUPERUSER login. Backups are taken as
postgres through the engine's own path, restored as postgres, and compared.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import pytest

from devtools.db_compare import client_conninfo, compare_databases, diff_snapshots, run_pg_tool, snapshot
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import pg_bin
from devtools.supabase_fixture import (
    REALTIME_OWNERS,
    SupabaseCluster,
    create_platform_template,
    load_demo_app,
    supabase_cluster,
)
from pgbackup import backup
from pgbackup.errors import ConfigError, RestoreError
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.profiles import supabase
from pgbackup.profiles.supabase import platform, toc
from pgbackup.profiles.supabase import profile as supabase_profile
from pgbackup.restore import DecryptionKey, ValidationSettings, decryption_keyring, fetch_plaintext, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def as_postgres(project: SupabaseCluster, label: str = "supabase project") -> PgConnInfo:
    return PgConnInfo(project.host, project.port, "postgres", "postgres", project.postgres_password, label=label)


@pytest.fixture(scope="module")
def source() -> Iterator[SupabaseCluster]:
    """One seeded project, shared read-only by every test here."""
    with supabase_cluster() as project:
        load_demo_app(project)
        yield project


@pytest.fixture
def fresh() -> Iterator[SupabaseCluster]:
    """A brand-new project: the platform only, as Supabase hands it out."""
    with supabase_cluster() as project:
        yield project


def fetch(manifest: Manifest, storage: Storage, key: DecryptionKey, into: Path) -> Path:
    with decryption_keyring(key) as keyring:
        fetch_plaintext(manifest, storage, keyring, into)
    return into


def query(project: SupabaseCluster, sql: str) -> list[tuple[object, ...]]:
    return project.cluster.execute(sql)


def user_acls(project: SupabaseCluster) -> list[tuple[object, ...]]:
    """Grants on every user schema, relation and function (what pg_dump --no-privileges hides)."""
    return query(
        project,
        """
        SELECT 'schema', nspname, nspacl::text FROM pg_namespace
         WHERE nspname IN ('public', 'private')
        UNION ALL
        SELECT 'rel', n.nspname || '.' || c.relname, c.relacl::text FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('public', 'private') AND c.relkind IN ('r', 'v', 'S', 'm', 'p')
        UNION ALL
        SELECT 'func', p.oid::regprocedure::text, p.proacl::text FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    )


# -- the fixture itself ---------------------------------------------------------------------


def test_fixture_has_supabase_shape(fresh: SupabaseCluster) -> None:
    roles = dict(
        query(
            fresh,
            "SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN "
            "('postgres', 'supabase_admin', 'anon', 'authenticated', 'service_role')",
        )
    )
    assert roles == {
        "postgres": False,
        "supabase_admin": True,
        "anon": False,
        "authenticated": False,
        "service_role": False,
    }
    owners = dict(
        query(
            fresh,
            "SELECT c.oid::regclass::text, pg_get_userbyid(c.relowner) FROM pg_class c "
            "WHERE c.oid IN ('auth.users'::regclass, 'storage.objects'::regclass)",
        )
    )
    assert owners == {"auth.users": "supabase_auth_admin", "storage.objects": "supabase_storage_admin"}
    assert query(fresh, "SELECT evtname FROM pg_event_trigger") == [("pgrst_ddl_watch",)]
    assert query(fresh, "SELECT pubname FROM pg_publication") == [("supabase_realtime",)]
    # postgres may switch replication role (the CLI's data restore needs it), nothing more.
    with client_conninfo(fresh.postgres_dsn()) as (conninfo, env):
        done = subprocess.run(
            [
                pg_bin("psql"),
                "-X",
                "-At",
                f"--dbname={conninfo}",
                "-c",
                "SET session_replication_role = replica; SHOW session_replication_role",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.stdout.split() == ["SET", "replica"], done.stderr


# -- the seed's method fails on it --------------------------------------------------------------


def test_seed_plain_dump_fails_in_a_fresh_project(
    source: SupabaseCluster, fresh: SupabaseCluster, tmp_path: Path
) -> None:
    """The seed: pg_dump --clean --no-owner --no-privileges as postgres, replayed by psql."""
    seed = tmp_path / "seed.sql"
    run_pg_tool(
        "pg_dump", ["--clean", "--if-exists", "--no-owner", "--no-privileges", "-f", str(seed)], source.postgres_dsn()
    )
    with client_conninfo(fresh.postgres_dsn()) as (conninfo, env):
        strict = subprocess.run(
            [
                pg_bin("psql"),
                "-X",
                "-q",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                f"--dbname={conninfo}",
                "-f",
                str(seed),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lenient = subprocess.run(
            [pg_bin("psql"), "-X", "-q", f"--dbname={conninfo}", "-f", str(seed)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert strict.returncode == 3 and "must be owner of event trigger" in strict.stderr
    errors = [line for line in lenient.stderr.splitlines() if "ERROR:" in line]
    assert len(errors) > 30  # 65 on this fixture
    assert any("must be owner of table users" in e for e in errors)


# -- our restore path -------------------------------------------------------------------------


def realtime_tables(project: SupabaseCluster) -> list[tuple[object, ...]]:
    return query(
        project,
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' ORDER BY 1, 2",
    )


def assert_restored(source: SupabaseCluster, target: SupabaseCluster) -> None:
    # Schema of every schema (platform ones included, so a skipped user object shows),
    # rows of every table (platform user-data tables included), sequence/identity values.
    assert compare_databases(source.postgres_dsn(), target.postgres_dsn()) == []
    # User objects attached to platform objects came back and work.
    assert query(
        target, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal"
    ) == [("on_auth_user_created",)]
    assert sorted(query(target, "SELECT policyname FROM pg_policies WHERE tablename = 'objects'")) == [
        ("Avatar images are publicly accessible",),
        ("Users upload their own documents",),
    ]
    assert realtime_tables(target) == [("public", "Room Events"), ("public", "messages")]
    target.cluster.execute(
        "INSERT INTO auth.users (id, raw_user_meta_data) VALUES "
        "('11111111-1111-4111-8111-111111111111', '{\"full_name\": \"New Signup\"}')"
    )
    assert query(target, "SELECT full_name FROM public.profiles WHERE id = '11111111-1111-4111-8111-111111111111'") == [
        ("New Signup",)
    ]
    # Platform migration history is the target's own, untouched.
    assert query(target, "SELECT count(*) FROM storage.migrations") == [(2,)]


@pytest.mark.parametrize("data_path", ["staged", "stream"])
def test_full_backup_restores_into_fresh_project_with_zero_errors(
    data_path: str,
    source: SupabaseCluster,
    fresh: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = open_storage(f"file://{tmp_path}/backups")
    request = make_request(as_postgres(source), gpg_key, profile="supabase")
    manifest = take_backup(data_path, request, storage, workdir)
    archive = fetch(manifest, storage, decryption_key, tmp_path / "full.dump")
    roles = supabase.capture_custom_roles(as_postgres(source))

    # The manifest says what a restore leaves out, carries the roles (no passwords) and the platform's shape.
    assert any("event triggers" in e.get("what", "") for e in manifest.excluded)
    assert [r["rolname"] for r in manifest.source["roles"]["roles"]] == ["app_reader"]
    assert "password" not in str(manifest.source["roles"]).lower().replace("no passwords", "")
    assert manifest.source["platform_shape"]["sha256"] == supabase.platform_shape(as_postgres(fresh))["sha256"]
    assert "auth.users" in manifest.source["platform_shape"]["relations"]
    assert "public.profiles" in manifest.source["row_counts"] and manifest.source["row_counts"]["auth.users"] == 25

    report = supabase.restore_supabase(archive, as_postgres(fresh, "fresh project"), roles=roles)

    assert report.errors == 0
    left_out = {e["entry"]: e["reason"] for e in report.excluded}
    assert "EVENT TRIGGER pgrst_ddl_watch" in left_out
    assert "TABLE DATA storage.migrations" in left_out and "TABLE auth.users" in left_out
    assert not any(e.startswith(("TABLE DATA auth.users", "TRIGGER auth.users")) for e in left_out)
    assert_restored(source, fresh)
    assert query(fresh, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_reader'") == [(False,)]


def test_restore_is_one_transaction(source: SupabaseCluster, fresh: SupabaseCluster, tmp_path: Path) -> None:
    """A failure late in the restore (after auth rows loaded) leaves the project exactly as it was."""
    archive = tmp_path / "full.dump"
    run_pg_tool("pg_dump", ["-Fc", "--no-owner", "-f", str(archive)], source.postgres_dsn())
    # An index named like todos' primary key: only the post-data constraint collides.
    fresh.cluster.execute("CREATE TABLE public.other (id int); CREATE INDEX todos_pkey ON public.other (id)")
    before = snapshot(fresh.postgres_dsn())
    with pytest.raises(RestoreError, match='relation "todos_pkey" already exists'):
        supabase.restore_supabase(archive, as_postgres(fresh), roles=supabase.capture_custom_roles(as_postgres(source)))
    after = snapshot(fresh.postgres_dsn())
    assert (after.schema, after.tables) == (before.schema, before.tables)
    assert query(fresh, "SELECT count(*) FROM auth.users") == [(0,)]
    # setval() is not transactional: a platform sequence keeps the value it was given.
    # Harmless (ids only jump ahead); a retry sets it again.
    assert diff_snapshots(before, after) == ["sequence auth.refresh_tokens_id_seq: (1, False) != (25, True)"]


def test_plain_backup_restores_with_the_documented_strict_psql(
    source: SupabaseCluster,
    fresh: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    """A plain supabase backup is the filtered archive rendered to SQL, roles and all: the
    documented ``psql --single-transaction -v ON_ERROR_STOP=1 -f backup.sql`` restores it."""
    storage = open_storage(f"file://{tmp_path}/backups")
    request = make_request(as_postgres(source), gpg_key, profile="supabase", dump_format="plain")
    manifest = take_backup("staged", request, storage, workdir)
    script = fetch(manifest, storage, decryption_key, tmp_path / "backup.sql")
    sql = script.read_text()
    # Issue 2: no platform-owned schema or event trigger in what users consume.
    assert "CREATE SCHEMA auth" not in sql and "EVENT TRIGGER" not in sql
    assert "CREATE TRIGGER on_auth_user_created" in sql
    assert manifest.stages["render"]["kept_entries"] > 40
    assert "EVENT TRIGGER pgrst_ddl_watch" in {e.get("entry") for e in manifest.excluded}
    supabase.run_sql_strict(as_postgres(fresh), [script], replica=False)  # the file sets replica mode itself
    assert_restored(source, fresh)
    assert user_acls(fresh) == user_acls(source)


def test_plain_supabase_backup_cannot_stream(source: SupabaseCluster, gpg_key: GeneratedKey, tmp_path: Path) -> None:
    request = make_request(as_postgres(source), gpg_key, profile="supabase", dump_format="plain")
    with pytest.raises(ConfigError, match="target projectx: profile supabase with dump_format plain needs data_path"):
        backup.stream_backup(request, open_storage(f"file://{tmp_path}/backups"), "local")


@pytest.mark.parametrize("profile", ["plain", "supabase"])
def test_schema_then_data_backups_restore_like_a_full_one(
    profile: str,
    source: SupabaseCluster,
    fresh: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = open_storage(f"file://{tmp_path}/backups")
    schema = take_backup(
        "staged", make_request(as_postgres(source), gpg_key, kind="schema", profile=profile), storage, workdir
    )
    data = take_backup(
        "stream", make_request(as_postgres(source), gpg_key, kind="data", profile=profile), storage, workdir
    )
    schema_file = fetch(schema, storage, decryption_key, tmp_path / "schema.dump")
    data_file = fetch(data, storage, decryption_key, tmp_path / "data.dump")
    supabase.restore_supabase_pair(
        schema_file,
        data_file,
        as_postgres(fresh),
        roles=supabase.capture_custom_roles(as_postgres(source)),
        populated_matviews=schema.source["populated_matviews"],
    )
    assert_restored(source, fresh)


@pytest.mark.parametrize("dump", ["pg_dump with privileges", "engine"])
def test_grants_on_user_objects_survive(
    dump: str,
    source: SupabaseCluster,
    fresh: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    """REVOKEs from the API roles and grants to custom roles are security: they must come back."""
    archive = tmp_path / "full.dump"
    if dump == "engine":
        storage = open_storage(f"file://{tmp_path}/backups")
        manifest = take_backup(
            "staged", make_request(as_postgres(source), gpg_key, profile="supabase"), storage, workdir
        )
        fetch(manifest, storage, decryption_key, archive)
    else:
        run_pg_tool("pg_dump", ["-Fc", "--no-owner", "-f", str(archive)], source.postgres_dsn())
    supabase.restore_supabase(archive, as_postgres(fresh), roles=supabase.capture_custom_roles(as_postgres(source)))
    assert user_acls(fresh) == user_acls(source)
    assert query(fresh, "SELECT has_table_privilege('anon', 'public.messages', 'SELECT')") == [(False,)]


# -- validation: the same strict restore, into a copy of a Supabase-shaped template -----------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[SupabaseCluster]:
    """A Supabase-shaped scratch server with a platform-only template database."""
    with supabase_cluster() as project:
        create_platform_template(project)
        yield project


def scratch_settings(scratch: SupabaseCluster, source: SupabaseCluster, template: str | None) -> ValidationSettings:
    return ValidationSettings(
        scratch=as_postgres(scratch, "scratch"),
        source=as_postgres(source),
        queries=("SELECT count(*) FROM public.profiles", "SELECT count(*) FROM storage.objects"),
        template=template,
    )


@pytest.mark.parametrize(
    ("kind", "dump_format", "schema_format"),
    [("full", "custom", None), ("full", "plain", None), ("data", "custom", "plain")],
)
def test_validation_proves_the_strict_restore_on_a_supabase_shaped_scratch(
    kind: str,
    dump_format: str,
    schema_format: str | None,
    source: SupabaseCluster,
    scratch: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    storage = open_storage(f"file://{tmp_path}/backups")
    schema_manifest = None
    if schema_format is not None:
        request = make_request(as_postgres(source), gpg_key, "schema", profile="supabase", dump_format=schema_format)
        schema_manifest = take_backup("staged", request, storage, workdir)
    request = make_request(as_postgres(source), gpg_key, kind, profile="supabase", dump_format=dump_format)
    manifest = take_backup("staged", request, storage, workdir)

    record = validate_backup(
        manifest, storage, scratch_settings(scratch, source, "supabase_platform"), decryption_key,
        tmp_path / "validate", schema_manifest,
    )

    assert record["status"] == "passed" and record["mismatches"] == []
    assert record["platform_shape"] == manifest.source["platform_shape"]["sha256"]
    assert record["tables"]["auth.users"] == {"expected": 25, "found": 25, "ok": True}
    assert record["tables"]["storage.objects"]["found"] == 40
    assert record["tables"]["public.todos"]["found"] == 95
    # Migration history is the scratch's own; the record says its rows were not compared, and why.
    assert "migration history" in record["tables"]["storage.migrations"]["rows_not_compared"]
    assert set(record["rows_not_compared"]) == {"auth.schema_migrations", "realtime.schema_migrations",
                                                "storage.migrations"}
    assert "EVENT TRIGGER pgrst_ddl_watch" in {e["entry"] for e in record["excluded"]}
    assert [q["result"] for q in record["queries"]] == [[25], [40]]
    # The scratch database is gone; the template is untouched (platform only).
    assert query(scratch, "SELECT count(*) FROM pg_database WHERE datname LIKE 'test_restore%'") == [(0,)]
    assert scratch.cluster.execute("SELECT count(*) FROM auth.users", dbname="supabase_platform") == [(0,)]


def test_validation_refuses_a_scratch_template_of_another_platform_shape(
    source: SupabaseCluster,
    scratch: SupabaseCluster,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
) -> None:
    # A template from a newer platform version: auth.users gained a column.
    scratch.cluster.execute("CREATE DATABASE platform_v2 TEMPLATE supabase_platform IS_TEMPLATE true",
                            dbname="template1")
    scratch.cluster.execute("ALTER TABLE auth.users ADD COLUMN phone text", dbname="platform_v2")
    storage = open_storage(f"file://{tmp_path}/backups")
    manifest = take_backup("staged", make_request(as_postgres(source), gpg_key, profile="supabase"), storage, workdir)
    expected = manifest.source["platform_shape"]["sha256"]

    with pytest.raises(RestoreError, match=f"platform shape {expected}") as failure:
        validate_backup(manifest, storage, scratch_settings(scratch, source, "platform_v2"), decryption_key,
                        tmp_path / "validate")

    message = str(failure.value)
    assert "tables differing: auth.users;" in message
    found = re.search(r"has platform shape ([0-9a-f]{64})", message)
    assert found and found.group(1) != expected
    assert query(scratch, "SELECT count(*) FROM pg_database WHERE datname LIKE 'test_restore%'") == [(0,)]

    with pytest.raises(ConfigError, match="validation.scratch_template is required"):
        validate_backup(manifest, storage, scratch_settings(scratch, source, None), decryption_key,
                        tmp_path / "validate")


# -- the TOC rules on their own ---------------------------------------------------------------------


def test_filter_toc_keeps_user_objects_and_platform_rows() -> None:
    lines = [
        "11; 2615 16458 SCHEMA - auth supabase_admin",
        "223; 1259 16459 TABLE auth users supabase_auth_admin",
        "3625; 0 16459 TABLE DATA auth users supabase_auth_admin",
        "3629; 0 16495 TABLE DATA auth schema_migrations supabase_auth_admin",
        "3463; 2620 16665 TRIGGER auth users on_auth_user_created supabase_auth_admin",
        "3464; 2620 16542 TRIGGER storage objects update_objects_updated_at supabase_storage_admin",
        "3620; 3256 16716 POLICY storage objects Avatar images are publicly accessible supabase_storage_admin",
        "300; 1259 17000 TABLE extensions my_lookup postgres",
        "4; 3079 16543 EXTENSION - citext ",
        "2; 3079 16401 EXTENSION - pgcrypto ",
        "3402; 3466 16450 EVENT TRIGGER - pgrst_ddl_watch supabase_admin",
        "3623; 6106 16695 PUBLICATION TABLE public supabase_realtime messages postgres",
        "3622; 6104 16451 PUBLICATION - supabase_realtime postgres",
        "; a comment line",
    ]
    functions = {3463: "public.handle_new_user", 3464: "storage.update_updated_at_column"}
    memberships = {3623: "ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.messages;"}
    by_postgres = supabase.TargetFacts(
        publication_owners={"supabase_realtime": "postgres"}, alterable_publications=frozenset({"supabase_realtime"})
    )
    kept, excluded = supabase.filter_toc(lines, "full", by_postgres, functions, memberships)
    assert [line.split(";")[0] for line in kept] == ["3625", "3463", "3620", "300", "4", "3623"]
    assert {e["entry"] for e in excluded} == {
        "SCHEMA auth",
        "TABLE auth.users",
        "TABLE DATA auth.schema_migrations",
        "TRIGGER storage.objects update_objects_updated_at",
        "EXTENSION pgcrypto",
        "EVENT TRIGGER pgrst_ddl_watch",
        "PUBLICATION supabase_realtime",
    }


def test_custom_roles_have_no_passwords_and_skip_reserved(source: SupabaseCluster) -> None:
    captured = supabase.capture_custom_roles(as_postgres(source))
    assert [r["rolname"] for r in captured["roles"]] == ["app_reader"]
    sql = supabase.roles_sql(captured)
    assert not re.search(r"PASSWORD\s+'", sql, re.IGNORECASE)
    assert "supabase_admin" not in sql and '"postgres"' not in sql and '"anon"' not in sql


def test_filter_toc_leaves_out_memberships_of_a_publication_the_restorer_does_not_own() -> None:
    lines = ["3623; 6106 16695 PUBLICATION TABLE public supabase_realtime Room Events postgres"]
    statement = 'ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public."Room Events";'
    by_admin = supabase.TargetFacts(
        publication_owners={"supabase_realtime": "supabase_admin"}, alterable_publications=frozenset(),
        restoring_role="postgres",
    )
    kept, excluded = supabase.filter_toc(lines, "full", by_admin, {}, {3623: statement})
    assert kept == []
    assert excluded == [{
        "entry": "PUBLICATION TABLE supabase_realtime: public.Room Events",
        "publication": "supabase_realtime",
        "statement": statement,
        "reason": "only the owner of publication supabase_realtime (supabase_admin) may add tables to it, and the "
                  "restoring role postgres is not; run the statement as supabase_admin",
    }]
    # No target to ask (a plain file rendered at backup time): the SQL decides when it runs,
    # and a restore resolves the record against the target it asked first.
    _, conditional = supabase.filter_toc(lines, "full", supabase.TargetFacts(), {}, {3623: statement})
    assert conditional[0]["conditional"] == "true" and conditional[0]["statement"] == statement
    assert toc.resolve_memberships(conditional, by_admin) == excluded
    by_postgres = replace(by_admin, alterable_publications=frozenset({"supabase_realtime"}))
    assert toc.resolve_memberships(conditional, by_postgres) == []
    # A user's own publication is created by the restore itself, so its memberships are kept.
    own = ["3624; 6106 16696 PUBLICATION TABLE public my_pub Room Events postgres"]
    own_statement = {3624: 'ALTER PUBLICATION my_pub ADD TABLE ONLY public."Room Events";'}
    assert supabase.filter_toc(own, "full", by_admin, {}, own_statement) == (own, [])
    _, own_conditional = supabase.filter_toc(own, "full", supabase.TargetFacts(), {}, own_statement)
    assert toc.resolve_memberships(own_conditional, by_admin) == []


# -- who owns supabase_realtime (issue 7 item 11) and the documented hand restores (item 12) ---------

# What the demo app's realtime memberships are called in a restore's `excluded`, and the
# statement their owner must run (pg_dump's own, identifiers quoted).
MEMBERSHIPS = {
    "PUBLICATION TABLE supabase_realtime: public.messages":
        "ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.messages;",
    "PUBLICATION TABLE supabase_realtime: public.Room Events":
        'ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public."Room Events";',
}
BACKUPS = {  # name: (kind, dump format)
    "full.custom": ("full", "custom"), "full.plain": ("full", "plain"),
    "schema.custom": ("schema", "custom"), "data.custom": ("data", "custom"),
    "schema.plain": ("schema", "plain"), "data.plain": ("data", "plain"),
}


@dataclass
class OwnedProject:
    """A seeded project, its backups and a scratch server, all with one realtime owner."""

    source: SupabaseCluster
    scratch: SupabaseCluster
    storage: Storage
    manifests: dict[str, Manifest]
    files: dict[str, Path]  # decrypted backups

    @property
    def owner(self) -> str:
        return self.source.realtime_owner


@pytest.fixture(scope="module", params=REALTIME_OWNERS)
def owned(
    request: pytest.FixtureRequest, gpg_key: GeneratedKey, decryption_key: DecryptionKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OwnedProject]:
    owner = request.param
    base = tmp_path_factory.mktemp(f"realtime-{owner}")
    with supabase_cluster(owner) as source, supabase_cluster(owner) as scratch:
        create_platform_template(scratch)
        load_demo_app(source)
        assert query(source, "SELECT pg_get_userbyid(pubowner) FROM pg_publication") == [(owner,)]
        storage = open_storage(f"file://{base}/backups")
        manifests: dict[str, Manifest] = {}
        files: dict[str, Path] = {}
        for name, (kind, dump_format) in BACKUPS.items():
            workdir = base / f"staging-{name}"
            workdir.mkdir()
            request_ = make_request(as_postgres(source), gpg_key, kind, profile="supabase", dump_format=dump_format)
            manifests[name] = take_backup("staged", request_, storage, workdir)
            files[name] = fetch(manifests[name], storage, decryption_key, base / name)
        yield OwnedProject(source, scratch, storage, manifests, files)


def add_left_out_memberships(target: SupabaseCluster, statements: list[str]) -> None:
    """What the warning tells the publication's owner to run."""
    for statement in statements:
        target.cluster.execute(statement)  # as supabase_admin


def assert_memberships_left_out(owned: OwnedProject, excluded: list[dict[str, str]]) -> list[str]:
    """The restore's report names exactly the memberships its role could not add; returns their statements."""
    left_out = {e["entry"]: e for e in excluded if "publication" in e}
    if owned.owner == "postgres":
        assert left_out == {}
        return []
    assert {entry: e["statement"] for entry, e in left_out.items()} == MEMBERSHIPS
    assert all("(supabase_admin)" in e["reason"] and "conditional" not in e for e in left_out.values())
    return list(MEMBERSHIPS.values())


@pytest.mark.fault(
    "supabase_realtime owned by supabase_admin (Supabase's initial schema) or by postgres, with user tables in "
    "it; validation restores as postgres (custom, plain, schema + data pairs)",
    "validation passes; the memberships are left out, listed in the record's excluded with the exact "
    "ALTER PUBLICATION statement, and logged as a warning; with postgres as owner they are restored",
)
@pytest.mark.parametrize(
    ("data_backup", "schema_backup"),
    [("full.custom", None), ("full.plain", None), ("data.custom", "schema.custom"),
     ("data.plain", "schema.plain"), ("data.custom", "schema.plain")],
)
def test_validation_passes_whoever_owns_the_realtime_publication(
    owned: OwnedProject, data_backup: str, schema_backup: str | None, decryption_key: DecryptionKey,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pgbackup")
    manifest = owned.manifests[data_backup]
    record = validate_backup(
        manifest, owned.storage, scratch_settings(owned.scratch, owned.source, "supabase_platform"),
        decryption_key, tmp_path / "validate", owned.manifests[schema_backup] if schema_backup else None,
    )

    assert record["status"] == "passed" and record["mismatches"] == []
    assert [r["found"] for t, r in record["tables"].items() if "Room Events" in t] == [7]
    statements = assert_memberships_left_out(owned, record["excluded"])
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert all(statement in warned for statement in statements)
    assert ("ALTER PUBLICATION" in warned) == bool(statements)


@pytest.mark.fault(
    "supabase_realtime owned by supabase_admin or by postgres, with user tables in it; a backup restored by hand "
    "with the README's commands (plain psql, plain pair, custom and custom pair through the engine)",
    "each command exits 0 in one strict transaction; memberships are restored when postgres owns the publication, "
    "else a warning gives the exact ALTER PUBLICATION statement for each; after the owner runs them the "
    "project equals the source",
)
@pytest.mark.parametrize("how", ["plain", "plain schema + data pair", "custom", "custom schema + data pair"])
def test_readme_hand_restore_works_whoever_owns_the_realtime_publication(
    owned: OwnedProject, how: str, tmp_path: Path
) -> None:
    for name, file in owned.files.items():  # the names the README uses
        target_name = {"full.plain": "backup.sql", "full.custom": "backup.dump", "schema.plain": "schema.sql",
                       "data.plain": "data.sql", "schema.custom": "schema.dump", "data.custom": "data.dump"}[name]
        shutil.copy(file, tmp_path / target_name)
    manifest = owned.manifests["data.custom" if "pair" in how else "full.custom"]
    (tmp_path / "restore.json").write_bytes(manifest.to_json())
    (tmp_path / "schema.json").write_bytes(owned.manifests["schema.custom"].to_json())
    script = readme_supabase_commands()[how]

    with supabase_cluster(owned.owner) as target:
        env = {**os.environ, "DB_HOST": target.host, "DB_PORT": str(target.port), "DB_SSLMODE": "disable",
               "DB_PASSWORD": target.postgres_password, "PGBACKUP_HOME": str(ROOT),
               # psql 15 and the project's Python (python3) first, as on a machine set up per the README.
               "PATH": f"{Path(pg_bin('psql')).parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env["PROJECT_DB_URL"] = (f"postgresql://postgres:{quote(target.postgres_password, safe='')}@{target.host}:"
                                 f"{target.port}/postgres?sslmode=disable")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                              cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300)

        assert done.returncode == 0, done.stderr
        assert "ERROR" not in done.stderr
        statements = list(MEMBERSHIPS.values()) if owned.owner == "supabase_admin" else []
        assert all(statement in done.stderr for statement in statements), done.stderr
        assert ("ALTER PUBLICATION" in done.stderr) == bool(statements)
        if statements:
            assert realtime_tables(target) == []
            add_left_out_memberships(target, statements)
        assert_restored(owned.source, target)
        assert user_acls(target) == user_acls(owned.source)


def readme_supabase_commands() -> dict[str, str]:
    """The hand-restore commands in the README's "Supabase" section, by their comment label."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Supabase\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    commands: dict[str, list[str]] = {}
    label = None
    for line in blocks[-1].splitlines():
        if line.startswith("# "):
            label = line[2:].split(":", 1)[0]
            commands[label] = []
        elif label is not None:
            commands[label].append(line)
    assert set(commands) == {"plain", "plain schema + data pair", "custom", "custom schema + data pair"}
    return {name: "\n".join(lines) + "\n" for name, lines in commands.items()}


# -- profile-specific behaviour lives behind the profile (issue 7 item 13) -----------------------

_NO_KEY = GeneratedKey("nobody@example.com", "0" * 40, Path("unused.asc"), "", "")  # never used to encrypt


def test_profile_flags_drive_config_backup_and_validation() -> None:
    from pgbackup.config import PROFILES
    from pgbackup.profiles import PROFILE_NAMES, profile_for

    assert PROFILES == PROFILE_NAMES
    sb = profile_for("supabase")
    assert sb.renders_plain_from_archive and sb.needs_scratch_template
    assert backup._renders_sql(make_request(PgConnInfo("h", 5432, "u", "d"), _NO_KEY, profile="supabase",
                                            dump_format="plain"))
    assert not backup._renders_sql(make_request(PgConnInfo("h", 5432, "u", "d"), _NO_KEY, dump_format="plain"))
    with pytest.raises(ConfigError, match="unknown profile 'rds': pgbackup knows plain, supabase"):
        profile_for("rds")
    settings = ValidationSettings(PgConnInfo("scratch", 5432, "u", "d"), PgConnInfo("source", 5432, "u", "d"))
    settings.check("projectx", "plain")
    with pytest.raises(ConfigError, match="scratch_template is required to validate a supabase-profile backup: a "
                                          "template database with a new Supabase project's platform"):
        settings.check("projectx", "supabase")


@pytest.mark.fault(
    "a user schema whose name starts with a platform schema's and a space (\"net stuff\"): pg_restore -l prints "
    "TABLE DATA net stuff t postgres, which reads as platform schema net",
    "its rows and sequence values are restored (the owner, not the ambiguous name, says whose they are)",
)
def test_filter_toc_keeps_rows_of_a_user_schema_named_like_a_platform_one() -> None:
    lines = [
        "3700; 0 17100 TABLE DATA net stuff t postgres",
        "3701; 0 17101 SEQUENCE SET net stuff t_id_seq postgres",
        "3702; 0 16600 TABLE DATA net http_request_queue supabase_admin",
        "3703; 0 16495 TABLE DATA auth schema_migrations supabase_auth_admin",
    ]
    kept, excluded = supabase.filter_toc(lines, "full")
    assert [line.split(";")[0] for line in kept] == ["3700", "3701"]
    assert {e["entry"] for e in excluded} == {"TABLE DATA net.http_request_queue", "TABLE DATA auth.schema_migrations"}
    assert supabase_profile.rows_left_out(['"net stuff".t', "net.http_request_queue", '"auth.x".y']) == {
        "net.http_request_queue": platform.NO_DATA_REASON
    }
