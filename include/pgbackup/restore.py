"""Restoring a backup, and proving it: restore into a scratch database and compare.

Validation fetches the *stored* copy (not the staging file), checks its sha256 against the
manifest while decrypting, restores it into ``test_restore_<timestamp>`` on a scratch
server, compares every table's row count with the snapshot counts in the manifest, runs
the configured queries, and always drops the scratch database.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgbackup.compress import DecompressStage
from pgbackup.dump import relation_sql, server_major_version, split_qualified
from pgbackup.errors import ConfigError, IntegrityError, PgBackupError, RestoreError, StorageError, VerificationError
from pgbackup.gpg import DecryptStage, Keyring
from pgbackup.manifest import (
    VERIFICATION_FAILED,
    VERIFICATION_PASSED,
    Manifest,
    iso,
    manifest_key,
    utcnow,
)
from pgbackup.pgconn import PgConnInfo, connect, libpq_environment
from pgbackup.pgtools import find_program, split_plain_schema
from pgbackup.pipeline import die_with_us_prefix, is_write_failure, run_chain, write_to_file
from pgbackup.profiles import RestoreJob, profile_for
from pgbackup.storage.base import Storage

log = logging.getLogger(__name__)

RESTORED_FILE = "restore.dump"
SCHEMA_FILE = "schema.dump"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1


@dataclass(frozen=True)
class DecryptionKey:
    armored_private_key: str
    passphrase: str | None = None

    def __repr__(self) -> str:
        return "DecryptionKey(<secret>)"


@contextlib.contextmanager
def decryption_keyring(key: DecryptionKey) -> Iterator[Keyring]:
    with Keyring.temporary() as keyring:
        keyring.import_private_key(key.armored_private_key, key.passphrase)
        yield keyring


def _unreadable(storage: Storage, manifest: Manifest, exc: BaseException) -> IntegrityError:
    # A corrupted object usually fails in gpg first; say what it means.
    return IntegrityError(
        f"{storage.url}/{manifest.object_key}: cannot decrypt/decompress the stored object "
        f"(corrupted, truncated, or encrypted to another key): {exc}"
    )


def fetch_plaintext(manifest: Manifest, storage: Storage, keyring: Keyring, target: Path) -> dict[str, Any]:
    """Download, check sha256 and size, decrypt and decompress into ``target`` (mode 0600).

    On any failure nothing of the plaintext is left behind.
    """
    try:
        return _decrypt_into(manifest, storage, keyring, target)
    except BaseException:
        remove_plaintext(target)
        raise


def _decrypt_into(manifest: Manifest, storage: Storage, keyring: Keyring, target: Path) -> dict[str, Any]:
    algorithm = manifest.artifact["compression"]["algorithm"]
    if storage.stat(manifest.object_key) is None:
        raise RestoreError(f"{storage.url}/{manifest.object_key}: the backup object is missing")
    started = time.monotonic()
    try:
        with storage.open_read(manifest.object_key) as stream:
            # The sink creates the file 0600: it is the plaintext of the backup.
            _, result = run_chain(
                [DecryptStage(keyring), DecompressStage(algorithm)], write_to_file(target), source=stream
            )
    except RestoreError:
        raise
    except PgBackupError as exc:
        if not is_write_failure(exc):
            raise _unreadable(storage, manifest, exc) from exc
        raise RestoreError(f"cannot write the plaintext of {storage.url}/{manifest.object_key}: {exc}") from exc
    except Exception as exc:
        raise _unreadable(storage, manifest, exc) from exc
    if result.input_sha256 != manifest.sha256 or result.input_bytes != manifest.size:
        raise IntegrityError(
            f"{storage.url}/{manifest.object_key}: stored object has sha256 {result.input_sha256} "
            f"({result.input_bytes} bytes) but the manifest says {manifest.sha256} ({manifest.size} bytes)"
        )
    return {"fetch_seconds": round(time.monotonic() - started, 3), "plaintext_bytes": result.output_bytes}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of that name may have had another mode
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def remove_plaintext(*paths: Path | None) -> None:
    """Remove decrypted files (and any half-written ``.partial`` of them)."""
    for path in paths:
        if path is not None:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".partial").unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_database(
    scratch: PgConnInfo, prefix: str = "test_restore", template: str | None = None
) -> Iterator[PgConnInfo]:
    """Create a uniquely named database (a copy of ``template`` if given) and drop it on exit, even on failure."""
    import psycopg2
    from psycopg2 import sql

    sweep_stale_scratch_databases(scratch, prefix)
    name = f"{prefix}_{utcnow():%Y%m%d_%H%M%S}_{int(time.monotonic() * 1000) % 100000}"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        # The server would silently truncate it, and then connect to and drop another name.
        raise ConfigError(f"scratch database name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    admin = connect(scratch)
    try:
        with admin.cursor() as cur:
            cur.execute(create)
    except psycopg2.Error as exc:
        if template is None:
            raise
        raise RestoreError(
            f"cannot create a scratch database from template {template!r} on {scratch.describe()}: "
            f"{str(exc).strip()} (the template must exist, be marked IS_TEMPLATE true unless "
            f"{scratch.user} owns it, and have no open connections)"
        ) from exc
    finally:
        admin.close()
    log.info("created scratch database %s on %s%s", name, scratch.describe(), f" from {template}" if template else "")
    try:
        yield scratch.with_dbname(name)
    finally:
        admin = connect(scratch)
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            log.info("dropped scratch database %s", name)
        finally:
            admin.close()


# A validation killed with SIGKILL (OOM, execution_timeout, a lost worker) never reaches its DROP.
SCRATCH_STALE_AFTER = timedelta(days=1)  # far beyond any task's execution_timeout


def sweep_stale_scratch_databases(
    scratch: PgConnInfo, prefix: str = "test_restore", stale_after: timedelta = SCRATCH_STALE_AFTER
) -> list[str]:
    """Drop scratch databases a killed run left: exactly our name pattern, older than
    ``stale_after`` by the time in their name, and with no one connected. Returns their names."""
    from psycopg2 import sql

    pattern = re.compile(rf"{re.escape(prefix)}_(\d{{8}}_\d{{6}})_\d{{1,5}}")
    admin = connect(scratch)
    dropped: list[str] = []
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database d WHERE datname LIKE %s AND NOT datistemplate "
                "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                (prefix.replace("_", r"\_") + r"\_%",),
            )
            for (name,) in cur.fetchall():
                matched = pattern.fullmatch(name)
                if not matched:
                    continue
                created = datetime.strptime(matched.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
                if utcnow() - created <= stale_after:
                    continue
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                log.warning("dropped scratch database %s on %s, left by a killed run", name, scratch.describe())
                dropped.append(name)
    finally:
        admin.close()
    return dropped


def restore_archive(
    archive: Path,
    into: PgConnInfo,
    dump_format: str,
    *,
    jobs: int = 2,
    sections: tuple[str, ...] = (),
) -> float:
    """Restore a plaintext archive; returns seconds. Stops at the first error."""
    server_major = server_major_version(into)
    started = time.monotonic()
    if dump_format == "custom":
        argv = [
            find_program("pg_restore", server_major),
            "--no-password",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            # pg_restore and psql parse --dbname as a conninfo when it holds "=" or starts with
            # postgresql://; an escaped keyword/value conninfo keeps any name a plain name.
            f"--dbname={into.conninfo()}",
        ]
        if jobs > 1:
            argv.append(f"--jobs={jobs}")
        argv += [f"--section={s}" for s in sections]
        argv.append(str(archive))
    else:
        argv = [
            find_program("psql", server_major),
            "--no-password",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            f"--dbname={into.conninfo()}",
            "-f",
            str(archive),
        ]
    # Only PATH, locale and this connection (never the task's AIRFLOW_CONN_*), and it dies with
    # the task: a killed validation must not leave pg_restore/psql writing into the scratch server.
    with libpq_environment(into) as env:
        done = subprocess.run([*die_with_us_prefix(), *argv], env=env, capture_output=True, check=False)
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()[-4000:]
        raise RestoreError(f"restore into {into.describe()} failed (exit {done.returncode}): {stderr}")
    return time.monotonic() - started


_RELATION_EXISTS_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = %s)
"""


def count_rows(conn: PgConnInfo, tables: list[str]) -> dict[str, int | None]:
    """Exact row counts; None for a table that does not exist."""
    from psycopg2 import sql

    found: dict[str, int | None] = {}
    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            for table in tables:
                cur.execute(_RELATION_EXISTS_SQL, split_qualified(table))
                if not cur.fetchone()[0]:
                    found[table] = None
                    continue
                cur.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(relation_sql(table)))
                found[table] = int(cur.fetchone()[0])
    finally:
        connection.close()
    return found


def run_queries(conn: PgConnInfo, queries: tuple[str, ...]) -> list[dict[str, Any]]:
    """The seed's validation queries, where their tables exist."""
    import psycopg2

    results: list[dict[str, Any]] = []
    connection = connect(conn, autocommit=True)
    try:
        for query in queries:
            with connection.cursor() as cur:
                try:
                    cur.execute(query)
                    row = cur.fetchone()
                    results.append({"query": query, "status": "ok", "result": list(row) if row else None})
                except psycopg2.errors.UndefinedTable:
                    results.append({"query": query, "status": "skipped", "reason": "table absent"})
                except psycopg2.Error as exc:
                    results.append({"query": query, "status": "error", "error": str(exc).strip()})
    finally:
        connection.close()
    return results


def compare_counts(
    manifest: Manifest, found: dict[str, int | None], rows_left_out: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per table: expected vs found rows. Tables in ``rows_left_out`` (table -> why) must
    exist, but their rows are not compared: the restore deliberately does not load them."""
    expected: dict[str, int] = manifest.source.get("row_counts", {})
    left_out = rows_left_out or {}
    report: dict[str, dict[str, Any]] = {}
    for table in manifest.source.get("tables", []):
        want = expected.get(table) if manifest.kind != "schema" else None
        got = found.get(table)
        if manifest.kind == "schema" or table in left_out:
            ok = got is not None
        else:
            ok = got is not None and got == want
        report[table] = {"expected": want, "found": got, "ok": ok}
        if table in left_out and manifest.kind != "schema":
            report[table]["rows_not_compared"] = left_out[table]
    return report


@dataclass(frozen=True)
class ValidationSettings:
    scratch: PgConnInfo
    source: PgConnInfo
    allow_source_server: bool = False
    queries: tuple[str, ...] = ()
    restore_jobs: int = 2
    template: str | None = None  # scratch databases are created from it (validation.scratch_template)

    def check(self, target: str, profile: str = "plain") -> None:
        chosen = profile_for(profile)
        if chosen.needs_scratch_template and not self.template:
            raise ConfigError(
                f"target {target}: validation.scratch_template is required to validate a {profile}-profile backup: "
                + chosen.scratch_template_needed
            )
        if self.scratch.is_same_server(self.source) and not self.allow_source_server:
            raise ConfigError(
                f"target {target}: the validation scratch server {self.scratch.describe()} is the source server; "
                "restore tests belong on a separate server (set validation.allow_source_server: true to accept this)"
            )


def required_scratch_major(manifest: Manifest) -> int:
    """The oldest PostgreSQL major a backup restores into: its server's, or its pg_dump's if newer.

    A pg_dump N archive is readable only by pg_restore >= N, whose output sets parameters older
    servers reject (pg_restore 18 into 15: ``unrecognized configuration parameter
    "transaction_timeout"``): so the scratch server must be at least as new as both.
    """
    source = manifest.source
    majors = [int(source.get("server_version_num") or 0) // 10000]
    dumped_by = str(source.get("pg_dump_version") or "").partition(".")[0]
    if dumped_by.isdigit():
        majors.append(int(dumped_by))
    return max(majors)


def check_scratch_version(manifest: Manifest, scratch: PgConnInfo, schema_manifest: Manifest | None = None) -> int:
    """Refuse, before any work, a scratch server older than what the backup needs; its major otherwise."""
    scratch_major = server_major_version(scratch)
    for backup in (manifest, schema_manifest):
        if backup is None:
            continue
        needed = required_scratch_major(backup)
        if scratch_major < needed:
            server, dumped_by = backup.source.get("server_version", "?"), backup.source.get("pg_dump_version", "?")
            raise RestoreError(
                f"target {backup.target}: backup {backup.backup_id} comes from PostgreSQL {needed} "
                f"(server {server}, pg_dump {dumped_by}) and cannot be restored into the scratch server "
                f"{scratch.describe()}, which runs PostgreSQL {scratch_major}: a dump restores only into the same "
                f"or a newer major. Point validation.scratch_conn_id at a PostgreSQL {needed} (or newer) server"
            )
    return scratch_major


def validate_backup(
    manifest: Manifest,
    storage: Storage,
    settings: ValidationSettings,
    key: DecryptionKey,
    workdir: Path,
    schema_manifest: Manifest | None = None,
) -> dict[str, Any]:
    """Restore the stored copy into a scratch database and compare it with the manifest.

    Returns the verification record (status passed). Raises VerificationError with the
    record attached when anything differs; the caller records that too. The decrypted
    archives live only in ``workdir`` (mode 0600) and are removed however this ends.
    """
    try:
        return _restore_and_compare(manifest, storage, settings, key, workdir, schema_manifest)
    finally:
        # The archives and whatever was derived from them (.partial, split or rendered scripts).
        for name in (RESTORED_FILE, SCHEMA_FILE):
            remove_plaintext(*workdir.glob(glob.escape(name) + "*"))


def _restore_and_compare(
    manifest: Manifest,
    storage: Storage,
    settings: ValidationSettings,
    key: DecryptionKey,
    workdir: Path,
    schema_manifest: Manifest | None,
) -> dict[str, Any]:
    settings.check(manifest.target, manifest.profile)
    check_scratch_version(manifest, settings.scratch, schema_manifest)
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / RESTORED_FILE
    started = time.monotonic()
    record: dict[str, Any] = {
        "started_at": iso(utcnow()),
        "scratch_server": f"{settings.scratch.host}:{settings.scratch.port}",
        "restored_from": f"{storage.url}/{manifest.object_key}",
    }
    with decryption_keyring(key) as keyring:
        record.update(fetch_plaintext(manifest, storage, keyring, archive))
        schema_archive = None
        if manifest.kind == "data":
            schema_archive = workdir / SCHEMA_FILE
            if schema_manifest is not None:
                fetch_plaintext(schema_manifest, storage, keyring, schema_archive)
                record["schema_from"] = f"backup {schema_manifest.backup_id}"
            else:
                # First data backup of a target: nothing verified to restore it onto yet.
                dump_schema_now(settings.source, schema_archive, manifest.profile)
                record["schema_from"] = "the source's schema at validation time (no verified schema or full backup yet)"
    rows_left_out: dict[str, str] = {}
    with scratch_database(settings.scratch, template=settings.template) as db:
        record["scratch_database"] = db.dbname
        if settings.template:
            record["scratch_template"] = settings.template
        restore_started = time.monotonic()
        restored = profile_for(manifest.profile).restore(
            RestoreJob(manifest, archive, db, workdir, schema_archive, schema_manifest, settings.template)
        )
        if restored is not None:
            record.update(restored.record)
            rows_left_out = restored.rows_not_compared
        elif schema_archive is not None:
            schema_format = schema_manifest.dump_format if schema_manifest else "custom"
            matviews = schema_manifest.source.get("populated_matviews", []) if schema_manifest else []
            restore_schema_and_data(
                schema_archive, archive, db, schema_format, manifest.dump_format, matviews, settings.restore_jobs
            )
        else:
            restore_archive(archive, db, manifest.dump_format, jobs=settings.restore_jobs)
        record["restore_seconds"] = round(time.monotonic() - restore_started, 3)
        tables = list(manifest.source.get("tables", []))
        report = compare_counts(manifest, count_rows(db, tables), rows_left_out)
        record["queries"] = run_queries(db, settings.queries)
    archive.unlink(missing_ok=True)
    if schema_archive is not None:
        schema_archive.unlink(missing_ok=True)
    record["tables"] = report
    record["tables_checked"] = len(report)
    record["mismatches"] = sorted(t for t, r in report.items() if not r["ok"])
    record["query_errors"] = [q for q in record["queries"] if q["status"] == "error"]
    record["total_seconds"] = round(time.monotonic() - started, 3)
    record["verified_at"] = iso(utcnow())
    record["rto_seconds"] = record["total_seconds"]
    if record["mismatches"] or record["query_errors"]:
        record["status"] = VERIFICATION_FAILED
        details = ", ".join(
            f"{t}: expected {report[t]['expected']}, found {report[t]['found']}" for t in record["mismatches"][:20]
        )
        errors = "; ".join(q["error"] for q in record["query_errors"])
        raise VerificationError(
            f"{manifest.backup_id}: restored database differs from the manifest: {details or errors}", record
        )
    record["status"] = VERIFICATION_PASSED
    return record


def dump_schema_now(source: PgConnInfo, target: Path, profile: str = "plain") -> None:
    """A custom-format schema-only dump of the source as it is now, as the profile dumps it."""
    from pgbackup.dump import DumpStage
    from pgbackup.profiles import profile_for

    chosen = profile_for(profile)
    stage = DumpStage(
        source,
        "schema",
        server_major=server_major_version(source),
        exclude_schemas=chosen.excluded_schemas("schema"),
        privileges=chosen.keep_privileges,
    )
    run_chain([stage], write_to_file(target))


def restore_schema_and_data(
    schema_archive: Path,
    data_archive: Path,
    db: PgConnInfo,
    schema_format: str,
    data_format: str,
    populated_matviews: list[str],
    jobs: int = 2,
) -> None:
    """Schema pre-data, then the data, then post-data (constraints, indexes, triggers), in
    every combination of formats, so neither FK order nor a NOT VALID constraint that old
    rows violate can fail the load, and no trigger fires on restored rows.

    Materialized views are data that neither a schema-only nor a data-only dump carries,
    so the ones populated at the source are refreshed at the end, as a full restore would.
    """
    if schema_format == "custom":
        restore_archive(schema_archive, db, "custom", jobs=1, sections=("pre-data",))
        restore_archive(data_archive, db, data_format, jobs=jobs)
        restore_archive(schema_archive, db, "custom", jobs=jobs, sections=("post-data",))
    else:
        # A plain script has no TOC for --section: split it at its first post-data entry.
        pre_data, post_data = split_plain_schema(schema_archive.read_bytes().decode("utf-8", "surrogateescape"))
        pre_file = schema_archive.with_name(schema_archive.name + ".pre-data.sql")
        post_file = schema_archive.with_name(schema_archive.name + ".post-data.sql")
        try:
            _write_private(pre_file, pre_data.encode("utf-8", "surrogateescape"))
            _write_private(post_file, post_data.encode("utf-8", "surrogateescape"))
            restore_archive(pre_file, db, "plain")
            restore_archive(data_archive, db, data_format, jobs=jobs)
            if post_data:
                restore_archive(post_file, db, "plain")
        finally:
            remove_plaintext(pre_file, post_file)
    refresh_materialized_views(db, populated_matviews)


def refresh_materialized_views(db: PgConnInfo, names: list[str]) -> None:
    """Refresh these materialized views, in the given (creation) order."""
    from psycopg2 import sql

    connection = connect(db)
    try:
        with connection.cursor() as cur:
            for name in names:
                cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(relation_sql(name)))
    finally:
        connection.close()


def record_verification(manifest: Manifest, verification: dict[str, Any], storages: list[Storage]) -> Manifest:
    """Rewrite the manifest at every destination that holds this backup.

    An unreachable destination is skipped with a warning: its own upload task has already
    failed and alerted, and it must not undo the proof recorded everywhere else.
    """
    manifest.verification = verification
    for storage in storages:
        key = manifest_key(manifest.object_key)

        def with_verification(raw: bytes, where: str = f"{storage.url}/{key}") -> bytes:
            stored = Manifest.from_json(raw, where)
            stored.verification = verification
            return stored.to_json()

        try:
            # Uploads never overwrite; this deliberate rewrite replaces only the version it read
            # (a missing manifest means that destination has no complete copy: nothing is written).
            storage.update_bytes(key, with_verification)
        except StorageError as exc:
            log.warning("could not record the verification at %s: %s", storage.url, exc)
    return manifest
