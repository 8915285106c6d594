"""Restoring a chosen backup into a real database: the engine of the break-glass CLI and of
the ``pg_restore_manual`` DAG.

Two steps, so a caller can show what it resolved (and ask for approval) before anything
changes:

- :func:`plan_restore` resolves the choice against the manifests (latest verified, newest
  of a tier, newest on or before a time, or an exact id) and checks every input: ids with
  path tricks or metacharacters, database and table names, a mode that does not fit the
  backup, an existing database without ``force``, the target's own database. It only reads.
- :func:`execute_restore` fetches and decrypts (progress reported), takes and verifies a
  safety backup of a database it is about to overwrite, restores, and compares every table's
  rows with the snapshot counts in the manifest. It returns a :class:`RestoreRecord` whose
  phase timings are the measured RTO. A failure into a new database drops that database;
  into an overwritten one, the error names the safety backup and the command that restores it.

Safety backups are stored under ``<target>_safety/`` so that they are never "the latest
backup" of the target and never counted by its retention; they have their own rule
(``retention.safety``, applied by ``retention.prune_safety_backups``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgbackup import backup
from pgbackup.backup import BackupRequest
from pgbackup.catalog import Catalog, read_catalog
from pgbackup.config import SAFETY_SUFFIX, TIERS, CompressionConfig, EncryptionConfig
from pgbackup.dump import server_major_version, split_qualified
from pgbackup.errors import ConfigError, IntegrityError, PgBackupError, RestoreError, StorageError
from pgbackup.manifest import Manifest, iso, utcnow
from pgbackup.pgconn import PgConnInfo, connect, libpq_environment
from pgbackup.pgtools import find_program
from pgbackup.pipeline import die_with_us_prefix, minimal_environment
from pgbackup.profiles import RestoreJob, profile_for
from pgbackup.records import store_record
from pgbackup.restore import (
    DecryptionKey,
    ValidationSettings,
    compare_counts,
    count_rows,
    decryption_keyring,
    fetch_plaintext,
    record_verification,
    refresh_materialized_views,
    remove_plaintext,
    restore_archive,
    restore_schema_and_data,
    sweep_stale_scratch_databases,
    validate_backup,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import READ_CHUNK, Storage

log = logging.getLogger(__name__)

FULL, SCHEMA_ONLY, DATA_ONLY, SCHEMA_THEN_DATA, TABLES = (
    "full",
    "schema-only",
    "data-only",
    "schema-then-data",
    "tables",
)
MODES = (FULL, SCHEMA_ONLY, DATA_ONLY, SCHEMA_THEN_DATA, TABLES)
# The kind "latest" (or a tier, or a time) looks for in each mode, and the kinds a mode accepts.
_CHOSEN_KIND = {FULL: "full", SCHEMA_ONLY: "schema", DATA_ONLY: "data", SCHEMA_THEN_DATA: "data", TABLES: "full"}
_ACCEPTED_KINDS = {
    FULL: ("full",),
    SCHEMA_ONLY: ("schema", "full"),
    DATA_ONLY: ("data", "full"),
    SCHEMA_THEN_DATA: ("data",),
    TABLES: ("full", "data"),
}
LATEST = "latest"
RESTORE_RECORD_PREFIX = "restores/"
PHASES = ("select", "fetch", "decrypt", "safety_backup", "restore", "verify")
PASSED, FAILED = "passed", "failed"

# A backup id as pgbackup writes it (projectx-full-20261127T060002.123456Z-9f3a1c07); nothing
# that could leave a folder, reach a shell or end a SQL literal.
_BACKUP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,199}")
# A database we create or overwrite: a plain identifier, so no quoting question arises anywhere
# (psql, pg_restore --dbname conninfo, the printed command).
_DATABASE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# A restore into a new database runs under a name of its own and takes the name asked for only
# once its rows are verified. A restore killed half-way (SIGKILL, a lost worker, Ctrl-C twice)
# so never leaves a half-restored database under that name: the same command can simply be run
# again, and the next restore on that server drops what the killed one left, once a day old.
RESTORING_PREFIX = "pgbackup_restoring"
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})
# A Supabase project's data lives in "postgres": overwriting it (force) must stay possible.
NEVER_RESTORED_INTO = frozenset({"template0", "template1"})
# pg_restore -l: "<id>; <tableoid> <oid> <DESC> <schema> <name> <owner>"
_TOC_RE = re.compile(
    r"^(?P<id>\d+); \d+ \d+ (?P<desc>TABLE DATA|SEQUENCE SET|FK CONSTRAINT|[A-Z][A-Z ]*?) (?P<schema>\S+) (?P<name>\S+)"
)

# (phase, bytes done, bytes in all or None): how long transfers report progress.
ProgressFn = Callable[[str, int, int | None], None]


# -- checking what a person typed -----------------------------------------------------------


def check_backup_id(value: str) -> str:
    """An exact backup id, or ``latest``; anything else is refused before anything is read."""
    if not isinstance(value, str) or not value:
        raise ConfigError("backup id: expected an id like projectx-full-20261127T060002.123456Z-9f3a1c07 or 'latest'")
    if ".." in value or "/" in value or "\\" in value:
        raise ConfigError(f"backup id {value!r} contains a path ('..', '/' or '\\'); a backup id is a plain name")
    if not _BACKUP_ID_RE.fullmatch(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "_.:+-"))})
        shown = " ".join(repr(c) for c in bad) or "its first character"
        raise ConfigError(
            f"backup id {value!r} contains characters a backup id never has ({shown}); "
            "expected letters, digits and . _ : + - (e.g. projectx-full-20261127T060002.123456Z-9f3a1c07)"
        )
    return value


def check_database_name(name: str, *, overwrite: bool = False) -> str:
    """A database a restore may write into. ``postgres`` only through the overwrite flow (force:
    a verified safety backup first), as a Supabase project's own database; templates never."""
    if not isinstance(name, str) or not _DATABASE_RE.fullmatch(name):
        raise ConfigError(
            f"database name {name!r} is not a valid identifier here: expected 1 to 63 letters, digits and "
            "underscores, starting with a letter or underscore (e.g. projectx_restored)"
        )
    if name.lower().startswith(RESTORING_PREFIX):
        raise ConfigError(
            f"database name {name!r} starts with {RESTORING_PREFIX!r}, the working name of restores in progress "
            "(dropped when left for a day); choose another name"
        )
    if name.lower() in NEVER_RESTORED_INTO:
        raise ConfigError(f"database name {name!r} is a template database; restore into another database")
    if name.lower() in SYSTEM_DATABASES and not overwrite:
        raise ConfigError(
            f"database name {name!r} is a system database: restoring into it needs the overwrite flow "
            "(--force / confirm_overwrite, after a verified safety backup), or choose another database"
        )
    return name


def check_tables(tables: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``orders`` or ``schema.orders`` -> (schema, table) pairs; ``public`` when no schema is given."""
    pairs: list[tuple[str, str]] = []
    for text in tables:
        parts = text.split(".")
        if len(parts) == 1:
            parts = ["public", parts[0]]
        if len(parts) != 2 or not all(_IDENT_RE.fullmatch(p) for p in parts):
            raise ConfigError(
                f"table {text!r}: expected a name like orders or public.orders (letters, digits, _ and $)"
            )
        pair = (parts[0], parts[1])
        if pair not in pairs:
            pairs.append(pair)
    return tuple(pairs)


def parse_when(text: str) -> datetime:
    """``2026-11-27``, ``2026-11-27T06:00``, ``2026-11-27 06:00:00Z`` (UTC unless an offset is given)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"time {text!r}: expected an ISO date or date-time like 2026-11-27T18:00Z") from None
    if len(text.strip()) == 10:  # a bare date means the whole day
        moment = moment.replace(hour=23, minute=59, second=59)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def default_database_name(manifest: Manifest) -> str:
    """``<target>_restored_<YYYYMMDD_HHMMSS>`` of the backup's snapshot time."""
    stem = re.sub(r"[^a-z0-9_]", "_", manifest.target.lower())[:30]
    return f"{stem}_restored_{manifest.created:%Y%m%d_%H%M%S}"


# -- what to restore ------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupChoice:
    """Which backup: an exact id, else the newest verified one (of a tier, on or before a time)."""

    backup_id: str = LATEST
    tier: str | None = None
    before: datetime | None = None

    def __post_init__(self) -> None:
        check_backup_id(self.backup_id)
        if self.tier is not None and self.tier not in TIERS:
            raise ConfigError(f"tier {self.tier!r} is not one of {', '.join(TIERS)}")
        if self.backup_id != LATEST and (self.tier or self.before):
            raise ConfigError("give either an exact backup id, or a tier / a time to choose the newest by; not both")

    def describe(self) -> str:
        if self.backup_id != LATEST:
            return f"backup {self.backup_id}"
        what = "the latest verified backup"
        if self.tier:
            what += f" of the {self.tier} tier"
        if self.before:
            what += f" created on or before {iso(self.before)}"
        return what


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore, where to, and how. ``into.dbname`` is the database restored into."""

    target: str
    into: PgConnInfo
    choice: BackupChoice = BackupChoice()
    mode: str = FULL
    tables: tuple[str, ...] = ()
    force: bool = False
    source: PgConnInfo | None = None  # the target's own database: overwriting it takes force too
    schema_backup_id: str | None = None  # schema-then-data: the schema backup (default: the newest before)
    # A new database is a copy of this one (default template0). A supabase-profile backup needs
    # a database holding a new project's platform: this template, or an existing database (force).
    template: str | None = None
    jobs: int = 2
    triggered_by: str = ""
    approved_by: str | None = None
    # The command that restores a given backup into a given database, shown when an overwrite
    # fails; {backup_id}, {database} and {target} are filled in.
    restore_command: str = "pgbackup restore --target {target} --backup {backup_id} --into-database {database} --force"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        check_database_name(self.into.dbname, overwrite=self.force)
        if self.mode == TABLES and not self.tables:
            raise ConfigError("mode tables needs at least one table (e.g. --tables public.orders,public.customers)")
        if self.mode != TABLES and self.tables:
            raise ConfigError(f"tables are chosen only in mode tables, not in mode {self.mode}")
        check_tables(self.tables)
        if self.schema_backup_id is not None:
            check_backup_id(self.schema_backup_id)
            if self.mode != SCHEMA_THEN_DATA:
                raise ConfigError("a schema backup is given only in mode schema-then-data")
        if self.template is not None and not _DATABASE_RE.fullmatch(self.template):
            raise ConfigError(f"template {self.template!r} is not a valid database name")
        if not 1 <= self.jobs <= 64:
            raise ConfigError(f"jobs must be 1..64, got {self.jobs}")


@dataclass
class RestorePlan:
    """What :func:`plan_restore` resolved; nothing has changed yet."""

    request: RestoreRequest
    manifest: Manifest
    schema_manifest: Manifest | None
    restored_from: str  # storage URL
    database_exists: bool

    @property
    def overwrite(self) -> bool:
        return self.database_exists

    def summary(self) -> dict[str, Any]:
        """What an operator (or an approver) must see before anything happens."""
        m = self.manifest
        counts: dict[str, int] = m.source.get("row_counts", {})
        into = self.request.into
        consequence = (
            f"database {into.dbname} on {into.host}:{into.port} EXISTS and will be "
            + (
                "overwritten (dropped and recreated)"
                if self.request.mode in (FULL, SCHEMA_ONLY, SCHEMA_THEN_DATA) and self.manifest.profile == "plain"
                else f"restored into through the {self.manifest.profile} profile (its platform kept)"
                if self.manifest.profile != "plain"
                else "changed (the restored tables are emptied and reloaded)"
            )
            + " after a verified safety backup of it"
            if self.database_exists
            else f"a new database {into.dbname} on {into.host}:{into.port} is created (dropped if the restore fails)"
        )
        return {
            "backup_id": m.backup_id,
            "kind": m.kind,
            "tier": m.tier,
            "created_at": m.created_at,
            "size": m.size,
            "verified": m.verification.get("status"),
            "verified_at": m.verification.get("verified_at"),
            "restored_from": f"{self.restored_from}/{m.object_key}",
            "schema_backup_id": self.schema_manifest.backup_id if self.schema_manifest else None,
            "mode": self.request.mode,
            "tables": list(self.request.tables),
            "source_tables": len(counts),
            "source_rows": sum(counts.values()),
            "into": f"{into.host}:{into.port}/{into.dbname}",
            "consequence": consequence,
        }


@dataclass
class RestoreRecord:
    """The audit record of one restore; ``rto_seconds`` is the sum of the phases (the measured RTO)."""

    target: str
    started_at: str
    mode: str
    into: str = ""
    database: str = ""
    backup_id: str | None = None
    backup_created_at: str | None = None
    backup_verified: str | None = None
    schema_backup_id: str | None = None
    restored_from: str = ""
    tables: list[str] = field(default_factory=list)
    new_database: bool = True
    force: bool = False
    safety_backup_id: str | None = None
    safety_restore_command: str | None = None
    triggered_by: str = ""
    approved_by: str | None = None
    status: str = FAILED
    error: str | None = None
    working_database: str | None = None  # a new database's name until its rows were verified
    database_dropped: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    object_bytes: int | None = None
    plaintext_bytes: int | None = None
    tables_checked: int = 0
    rows_restored: int = 0
    mismatches: list[str] = field(default_factory=list)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RestoreFailed(RestoreError):
    """The restore failed after it started changing things; ``record`` says what was done."""

    def __init__(self, message: str, record: RestoreRecord) -> None:
        super().__init__(message)
        self.record = record


# -- choosing -------------------------------------------------------------------------------


def catalog_folder(target: str, backup_id: str) -> str:
    """Safety backups live under ``<target>_safety/``; their ids say so."""
    return f"{target}{SAFETY_SUFFIX}" if backup_id.startswith(f"{target}{SAFETY_SUFFIX}-") else target


def find_backup(storage: Storage, target: str, backup_id: str) -> Manifest:
    """The complete, trusted backup with this exact id, or a RestoreError saying why not."""
    check_backup_id(backup_id)
    catalog = read_catalog(storage, catalog_folder(target, backup_id))
    for manifest in catalog.backups:
        if manifest.backup_id == backup_id:
            return manifest
    for suspect in catalog.suspect:
        if suspect.manifest.backup_id == backup_id:
            raise RestoreError(f"backup {backup_id} at {storage.url} is suspect and is not restored: {suspect.reason}")
    raise RestoreError(
        f"no backup {backup_id} for target {target} at {storage.url}"
        + (f" ({len(catalog.unreadable)} unreadable manifest(s) there; see `list`)" if catalog.unreadable else "")
    )


def choose_backup(catalog: Catalog, choice: BackupChoice, kind: str, where: str) -> Manifest:
    """The newest verified backup of ``kind`` matching ``choice`` (tier, on or before a time)."""
    found = [
        m
        for m in catalog.of(kind=kind, tier=choice.tier, verified_only=True)
        if choice.before is None or m.created <= choice.before
    ]
    if not found:
        raise RestoreError(f"{where}: no verified {kind} backup matches {choice.describe()}")
    return found[0]


def _schema_for(catalog: Catalog, data: Manifest, schema_backup_id: str | None, where: str) -> Manifest:
    if schema_backup_id is not None:
        chosen = next((m for m in catalog.backups if m.backup_id == schema_backup_id), None)
        if chosen is None:
            raise RestoreError(f"{where}: no schema backup {schema_backup_id}")
    else:
        candidates = [
            m
            for m in catalog.of(verified_only=True)
            if (m.kind == "schema" or (m.kind == "full" and m.dump_format == "custom")) and m.created <= data.created
        ]
        if not candidates:
            raise RestoreError(
                f"{where}: no verified schema backup (or custom-format full backup) taken on or before the data "
                f"backup {data.backup_id} ({data.created_at}); give one with --schema-backup"
            )
        chosen = candidates[0]
    if chosen.kind == "data" or (chosen.kind == "full" and chosen.dump_format != "custom"):
        raise RestoreError(
            f"{chosen.backup_id} is a {chosen.kind} backup in {chosen.dump_format} format; schema-then-data "
            "needs a schema backup or a custom-format full backup for the schema"
        )
    return chosen


def _check_mode_fits(manifest: Manifest, mode: str) -> None:
    accepted = _ACCEPTED_KINDS[mode]
    if manifest.kind not in accepted:
        hint = {"full": "full", "schema": "schema-only", "data": "data-only or schema-then-data"}[manifest.kind]
        raise RestoreError(
            f"mode {mode} does not match backup {manifest.backup_id}: it is a {manifest.kind} backup, and mode "
            f"{mode} needs a {' or '.join(accepted)} backup (a {manifest.kind} backup restores with mode {hint})"
        )
    sections_needed = mode in (SCHEMA_ONLY, DATA_ONLY, TABLES) and manifest.kind == "full"
    if (sections_needed or mode == TABLES) and manifest.dump_format != "custom":
        raise RestoreError(
            f"mode {mode} needs a custom-format archive to pick sections or tables from; "
            f"{manifest.backup_id} is a plain SQL script (restore it with mode full)"
        )
    if manifest.profile != "plain" and mode not in (FULL, SCHEMA_THEN_DATA):
        raise RestoreError(
            f"{manifest.backup_id} is a {manifest.profile}-profile backup; it restores only with mode full or "
            "schema-then-data (through its profile's restore)"
        )


def resolve_backup(target: str, choice: BackupChoice, mode: str, storage: Storage) -> Manifest:
    """The backup ``choice`` means for ``mode``, checked to fit it; reads only the catalog."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if choice.backup_id != LATEST:
        manifest = find_backup(storage, target, choice.backup_id)
    else:
        catalog = read_catalog(storage, target)
        manifest = choose_backup(catalog, choice, _CHOSEN_KIND[mode], f"target {target} at {storage.url}")
    _check_mode_fits(manifest, mode)
    return manifest


def plan_restore(request: RestoreRequest, storage: Storage) -> RestorePlan:
    """Resolve the backup and check every input; reads the catalog and the server, changes nothing."""
    where = f"target {request.target} at {storage.url}"
    manifest = resolve_backup(request.target, request.choice, request.mode, storage)
    schema_manifest = None
    if request.mode == SCHEMA_THEN_DATA:
        catalog = read_catalog(storage, request.target)
        schema_manifest = _schema_for(catalog, manifest, request.schema_backup_id, where)
    if request.mode == TABLES:
        known = {split_qualified(t) for t in manifest.source.get("tables", [])}
        missing = [f"{s}.{t}" for s, t in check_tables(request.tables) if (s, t) not in known]
        if missing:
            raise RestoreError(f"backup {manifest.backup_id} holds no table {', '.join(missing)}")
    into = request.into
    exists = database_exists(into)
    is_source = (
        request.source is not None and into.is_same_server(request.source) and (into.dbname == request.source.dbname)
    )
    if is_source and not request.force:
        raise RestoreError(
            f"database {into.dbname} on {into.host}:{into.port} is the source database of target {request.target}; "
            "restoring over it needs the overwrite flow (--force: a verified safety backup is taken first)"
        )
    if exists and not request.force:
        raise RestoreError(
            f"database {into.dbname} already exists on {into.host}:{into.port}; choose a new name, or overwrite it "
            "with --force (a verified safety backup of it is taken first)"
        )
    if not exists and manifest.profile != "plain" and request.template is None:
        raise RestoreError(
            f"{manifest.backup_id} is a {manifest.profile}-profile backup: it restores into a database that already "
            f"holds a new project's platform. Restore into the new project's database (--into-conn <its connection> "
            "--into-database postgres --force), or give a template database holding that platform (--template)"
        )
    if not exists and request.mode == DATA_ONLY:
        raise RestoreError(
            f"mode data-only loads rows into an existing schema, and database {into.dbname} does not exist; "
            "use mode schema-then-data for a new database"
        )
    return RestorePlan(request, manifest, schema_manifest, storage.url, exists)


# -- the server side ------------------------------------------------------------------------


def _admin(into: PgConnInfo) -> Any:
    """A connection to the server's maintenance database (postgres, else template1)."""
    try:
        return connect(into.with_dbname("postgres"))
    except PgBackupError:
        return connect(into.with_dbname("template1"))


def database_exists(into: PgConnInfo) -> bool:
    connection = _admin(into)
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (into.dbname,))
            return cur.fetchone() is not None
    finally:
        connection.close()


def create_database(into: PgConnInfo, template: str | None = None) -> None:
    from psycopg2 import sql

    connection = _admin(into)
    try:
        with connection.cursor() as cur:
            # template0 by default: nothing added to template1 can collide with the restored objects.
            cur.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(into.dbname), sql.Identifier(template or "template0")
                )
            )
    finally:
        connection.close()
    log.info(
        "created database %s on %s:%s%s", into.dbname, into.host, into.port, f" from {template}" if template else ""
    )


def drop_database(into: PgConnInfo) -> None:
    from psycopg2 import sql

    connection = _admin(into)
    try:
        with connection.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(into.dbname)))
    finally:
        connection.close()
    log.info("dropped database %s on %s:%s", into.dbname, into.host, into.port)


def truncate_tables(db: PgConnInfo, pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Empty the tables that exist (one statement: foreign keys among them are fine)."""
    from psycopg2 import sql

    connection = connect(db)
    try:
        with connection.cursor() as cur:
            present = []
            for schema, table in pairs:
                cur.execute(
                    "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                    (schema, table),
                )
                if cur.fetchone() is not None:
                    present.append((schema, table))
            if present:
                cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(s, t) for s, t in present)))
    finally:
        connection.close()
    return [f"{s}.{t}" for s, t in present]


def _toc_list(
    archive: Path, into: PgConnInfo, keep: Callable[[str, str, str], bool], section: str | None = None
) -> Path:
    """A ``pg_restore -L`` list of the archive (of one section), with the entries ``keep(desc, schema, name)``
    refuses commented out."""
    program = find_program("pg_restore", server_major_version(into))
    argv = [program, "-l", *([f"--section={section}"] if section else []), str(archive)]
    # Reads a file, connects nowhere: a minimal environment (no AIRFLOW_CONN_*), dying with the task.
    done = subprocess.run(
        [*die_with_us_prefix(), *argv], env=minimal_environment(), capture_output=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise RestoreError(f"pg_restore -l {archive.name} failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    lines = []
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        match = _TOC_RE.match(line)
        refused = match is not None and not keep(match["desc"], match["schema"], match["name"])
        lines.append(";" + line if refused else line)
    listing = archive.with_name(f"{archive.name}.{section or 'all'}.list")
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    return listing


def restore_with_list(archive: Path, into: PgConnInfo, listing: Path, *, data_only: bool = False) -> None:
    program = find_program("pg_restore", server_major_version(into))
    argv = [program, "--no-password", "--exit-on-error", "--no-owner", "--no-privileges", f"--dbname={into.conninfo()}"]
    if data_only:
        argv.append("--data-only")
    argv += [f"--use-list={listing}", str(archive)]
    with libpq_environment(into) as env:  # minimal: this connection only
        done = subprocess.run([*die_with_us_prefix(), *argv], env=env, capture_output=True, check=False)
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()[-4000:]
        raise RestoreError(f"restore into {into.describe()} failed (exit {done.returncode}): {stderr}")


# -- fetching -------------------------------------------------------------------------------


def download(manifest: Manifest, storage: Storage, path: Path, progress: ProgressFn | None = None) -> int:
    """Copy the stored object to ``path`` (0600), checking its size and sha256 against the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    done = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, storage.open_read(manifest.object_key) as stream:
        while chunk := stream.read(READ_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress("fetch", done, manifest.size)
    if done != manifest.size or digest.hexdigest() != manifest.sha256:
        raise IntegrityError(
            f"{storage.url}/{manifest.object_key}: fetched {done} bytes with sha256 {digest.hexdigest()}, "
            f"the manifest says {manifest.size} bytes, {manifest.sha256}"
        )
    return done


class _Phases:
    """Times named phases into ``record.phases``; a phase entered twice adds up."""

    def __init__(self, record: RestoreRecord) -> None:
        self.record = record
        self.current: str | None = None
        self.started = time.monotonic()

    def begin(self, name: str) -> None:
        self.end()
        self.current, self.started = name, time.monotonic()

    def end(self) -> None:
        if self.current is not None:
            spent = time.monotonic() - self.started
            self.record.phases[self.current] = round(self.record.phases.get(self.current, 0.0) + spent, 3)
            log.info("restore %s: %s took %.1f s", self.record.target, self.current, spent)
            self.current = None


# -- the safety backup ----------------------------------------------------------------------


@dataclass(frozen=True)
class SafetySettings:
    """How to back up a database before it is overwritten, and prove that backup restores."""

    compression: CompressionConfig
    encryption: EncryptionConfig
    public_key_files: tuple[Path, ...]
    validation: ValidationSettings  # its scratch server restores the safety backup; ``source`` is replaced
    destination: str = "primary"
    profile: str = "plain"


def take_safety_backup(
    target: str, db: PgConnInfo, settings: SafetySettings, storage: Storage, key: DecryptionKey, workdir: Path
) -> Manifest:
    """A full backup of ``db`` under ``<target>_safety/``, restored on the scratch server and compared."""
    request = BackupRequest(
        target=f"{target}{SAFETY_SUFFIX}",
        source=db,
        kind="full",
        compression=settings.compression,
        encryption=settings.encryption,
        public_key_files=settings.public_key_files,
        profile=settings.profile,
        dump_format="custom",
    )
    staged = workdir / "safety"
    staged.mkdir(parents=True, exist_ok=True)
    try:
        manifest = backup.dump_to_file(request, staged)
        manifest = backup.compress_file(manifest, request.compression, staged)
        manifest = backup.encrypt_file(manifest, request, staged)
        manifest = backup.upload_artifact(manifest, staged / backup.ENCRYPTED_FILE, storage, settings.destination)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    validation = ValidationSettings(
        scratch=settings.validation.scratch,
        source=db,
        allow_source_server=settings.validation.allow_source_server,
        queries=(),
        restore_jobs=settings.validation.restore_jobs,
        template=settings.validation.template,
    )
    try:
        verification = validate_backup(manifest, storage, validation, key, workdir / "safety-validate")
    except RestoreError as exc:
        raise RestoreError(
            f"the safety backup {manifest.backup_id} of {db.dbname} failed its restore test, so nothing was "
            f"changed: {exc}"
        ) from exc
    return record_verification(manifest, verification, [storage])


# -- restoring ------------------------------------------------------------------------------


def execute_restore(
    plan: RestorePlan,
    storage: Storage,
    key: DecryptionKey,
    workdir: Path,
    *,
    safety: SafetySettings | None = None,
    safety_storage: Storage | None = None,
    progress: ProgressFn | None = None,
) -> RestoreRecord:
    """Restore the planned backup. Returns the record (status passed) or raises RestoreFailed
    with it. Plaintext archives live only in ``workdir`` and are removed however this ends."""
    request, manifest = plan.request, plan.manifest
    into = request.into
    record = RestoreRecord(
        target=request.target,
        started_at=iso(utcnow()),
        mode=request.mode,
        into=f"{into.host}:{into.port}/{into.dbname}",
        database=into.dbname,
        backup_id=manifest.backup_id,
        backup_created_at=manifest.created_at,
        backup_verified=manifest.verification.get("status"),
        schema_backup_id=plan.schema_manifest.backup_id if plan.schema_manifest else None,
        restored_from=f"{plan.restored_from}/{manifest.object_key}",
        tables=[f"{s}.{t}" for s, t in check_tables(request.tables)],
        new_database=not plan.database_exists,
        force=request.force,
        triggered_by=request.triggered_by,
        approved_by=request.approved_by,
        object_bytes=manifest.size,
    )
    if plan.database_exists and safety is None:
        raise RestoreError(f"overwriting {into.dbname} needs safety backup settings; nothing was changed")
    phases = _Phases(record)
    workdir.mkdir(parents=True, exist_ok=True)
    archive, schema_archive = workdir / "restore.dump", workdir / "restore-schema.dump"
    fetched = workdir / "fetched"
    changed = False  # from here on, a failure must undo (new database) or point to the safety backup
    working = plan  # a new database is restored under a working name (see RESTORING_PREFIX)
    try:
        phases.begin("decrypt")
        with decryption_keyring(key) as keyring:  # a key that cannot be imported fails here, first
            sources = [(manifest, archive)] + ([(plan.schema_manifest, schema_archive)] if plan.schema_manifest else [])
            for wanted, plaintext in sources:
                readable = storage
                if not storage.url.startswith("file://"):
                    phases.begin("fetch")
                    download(wanted, storage, fetched / wanted.object_key, progress)
                    readable = open_storage(f"file://{fetched.resolve()}")
                phases.begin("decrypt")
                got = fetch_plaintext(wanted, readable, keyring, plaintext)
                if wanted is manifest:
                    record.plaintext_bytes = got["plaintext_bytes"]
                shutil.rmtree(fetched, ignore_errors=True)  # the disk the restore needs next
        if plan.database_exists:
            assert safety is not None
            phases.begin("safety_backup")
            kept = take_safety_backup(request.target, into, safety, safety_storage or storage, key, workdir)
            record.safety_backup_id = kept.backup_id
            record.safety_restore_command = request.restore_command.format(
                target=request.target, backup_id=kept.backup_id, database=into.dbname
            )
            log.info("safety backup %s of %s verified", kept.backup_id, into.dbname)
        phases.begin("restore")
        if not plan.database_exists:
            working = _restoring_under_a_working_name(plan, record)
        changed = True
        _restore(working, archive, schema_archive, workdir, record)
        phases.begin("verify")
        _verify(working, record)
        if working is not plan:
            rename_database(working.request.into, into.dbname)
        phases.end()
    except BaseException as exc:
        failed_in = phases.current or "restore"
        phases.end()
        record.error = (
            f"{failed_in}: {exc}"
            if isinstance(exc, PgBackupError)
            else (f"{failed_in}: {type(exc).__name__}: {str(exc).strip()}")
        )
        message = record.error
        if changed and record.new_database:
            created = working.request.into.dbname
            try:
                drop_database(working.request.into)
                record.database_dropped = True
                message += f"; the new database {into.dbname} was dropped"
            except Exception as drop_exc:  # noqa: BLE001 - report it, never mask the cause
                message += f"; the new database {created} could NOT be dropped ({drop_exc}): drop it by hand"
        elif changed:
            message += (
                f"; database {into.dbname} may be half-restored. The safety backup {record.safety_backup_id} holds "
                f"it as it was; restore it with:\n  {record.safety_restore_command}"
            )
        elif plan.database_exists:
            message += f"; nothing was changed in {into.dbname}"
        record.finished_at = iso(utcnow())
        log.error("restore of %s into %s failed: %s", manifest.backup_id, into.dbname, message)
        if isinstance(exc, Exception):
            raise RestoreFailed(message, record) from exc
        raise
    finally:
        remove_plaintext(archive, schema_archive)
        for leftover in workdir.glob("restore*.list"):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(fetched, ignore_errors=True)
    record.status = PASSED
    record.rto_seconds = round(sum(record.phases.values()), 3)
    record.finished_at = iso(utcnow())
    log.info(
        "restored %s into %s: %s tables, %s rows; RTO %.1f s (%s)",
        manifest.backup_id,
        into.dbname,
        record.tables_checked,
        record.rows_restored,
        record.rto_seconds,
        ", ".join(f"{k} {v:.1f}s" for k, v in record.phases.items()),
    )
    return record


def _restoring_under_a_working_name(plan: RestorePlan, record: RestoreRecord) -> RestorePlan:
    into = plan.request.into
    try:
        sweep_stale_scratch_databases(into.with_dbname("postgres"), RESTORING_PREFIX)
    except Exception as exc:  # noqa: BLE001 - leftovers (e.g. owned by another role) cost space, never a restore
        log.warning("could not drop databases left by killed restores on %s: %s", into.describe(), exc)
    name = f"{RESTORING_PREFIX}_{utcnow():%Y%m%d_%H%M%S}_{int(time.monotonic() * 1000) % 100000}"
    record.working_database = name
    log.info("restoring under the working name %s; it becomes %s once verified", name, into.dbname)
    return RestorePlan(
        request=_with_working_name(plan.request, into.with_dbname(name)),
        manifest=plan.manifest,
        schema_manifest=plan.schema_manifest,
        restored_from=plan.restored_from,
        database_exists=False,
    )


def _with_working_name(request: RestoreRequest, working: PgConnInfo) -> RestoreRequest:
    """The request with ``into`` on the working name, which check_database_name refuses to users."""
    copied = replace(request)
    object.__setattr__(copied, "into", working)  # frozen; the only change, after validation
    return copied


def rename_database(db: PgConnInfo, new_name: str) -> None:
    """Give the restored database the name asked for (refused if that name was taken meanwhile)."""
    import psycopg2
    from psycopg2 import sql

    connection = _admin(db)
    try:
        with connection.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(db.dbname), sql.Identifier(new_name))
            )
    except psycopg2.Error as exc:
        raise RestoreError(
            f"the restore into {db.dbname} was verified, but it could not be renamed to {new_name}: {str(exc).strip()}"
        ) from exc
    finally:
        connection.close()
    log.info("renamed the verified database %s to %s", db.dbname, new_name)


def _restore(plan: RestorePlan, archive: Path, schema_archive: Path, workdir: Path, record: RestoreRecord) -> None:
    request, manifest = plan.request, plan.manifest
    into, jobs = request.into, request.jobs
    rebuilds = request.mode in (FULL, SCHEMA_ONLY, SCHEMA_THEN_DATA) or not plan.database_exists
    # A profile's database (a Supabase project's postgres) holds a platform we could not recreate,
    # so it is restored into as it is; its profile's restore knows what it may replace.
    keeps_platform = manifest.profile != "plain" and plan.database_exists
    if plan.database_exists and rebuilds and not keeps_platform:
        drop_database(into)
    if rebuilds and not keeps_platform:
        create_database(into, request.template)
    if request.mode in (FULL, SCHEMA_THEN_DATA):
        schema = plan.schema_manifest
        outcome = profile_for(manifest.profile).restore(
            RestoreJob(manifest, archive, into, workdir, schema_archive if schema else None, schema, request.template)
        )
        if outcome is not None:
            record.left_out = sorted(outcome.rows_not_compared)
        elif schema is not None:
            restore_schema_and_data(
                schema_archive,
                archive,
                into,
                schema.dump_format,
                manifest.dump_format,
                schema.source.get("populated_matviews", []),
                jobs,
            )
        else:
            restore_archive(archive, into, manifest.dump_format, jobs=jobs)
    elif request.mode == SCHEMA_ONLY:
        if manifest.kind == "full":
            restore_archive(archive, into, "custom", jobs=1, sections=("pre-data",))
            restore_archive(archive, into, "custom", jobs=jobs, sections=("post-data",))
        else:
            restore_archive(archive, into, manifest.dump_format, jobs=jobs)
    elif request.mode == DATA_ONLY:
        record.left_out = []
        truncate_tables(into, [split_qualified(t) for t in manifest.source.get("tables", [])])
        # One job: rows load in the archive's foreign-key order into tables whose constraints exist.
        sections = ("data",) if manifest.kind == "full" else ()
        restore_archive(archive, into, manifest.dump_format, jobs=1, sections=sections)
        refresh_materialized_views(into, list(manifest.source.get("populated_matviews", [])))
    else:
        _restore_tables(plan, archive, record)


def _restore_tables(plan: RestorePlan, archive: Path, record: RestoreRecord) -> None:
    """The chosen tables' rows; into a new database, onto the backup's whole schema without foreign keys."""
    request, manifest = plan.request, plan.manifest
    into = request.into
    chosen = set(check_tables(request.tables))

    def chosen_rows(desc: str, schema: str, name: str) -> bool:
        return desc == "SEQUENCE SET" or (desc == "TABLE DATA" and (schema, name) in chosen)

    if not plan.database_exists:
        if manifest.kind == "data":
            raise RestoreError("mode tables into a new database needs a full backup (a data backup holds no schema)")
        restore_archive(archive, into, "custom", jobs=1, sections=("pre-data",))
        restore_with_list(archive, into, _toc_list(archive, into, chosen_rows, "data"), data_only=True)
        # The other tables stay empty, so foreign keys could not hold: all are left out.
        no_fks = _toc_list(archive, into, lambda desc, schema, name: desc != "FK CONSTRAINT", "post-data")
        restore_with_list(archive, into, no_fks)
        record.left_out = ["all foreign keys (only the chosen tables have rows, so they could not hold)"]
    else:
        truncate_tables(into, sorted(chosen))
        restore_with_list(archive, into, _toc_list(archive, into, chosen_rows, "data"), data_only=True)


def _verify(plan: RestorePlan, record: RestoreRecord) -> None:
    request = plan.request
    manifest = plan.manifest
    tables = list(manifest.source.get("tables", []))
    if request.mode == TABLES:
        chosen = set(check_tables(request.tables))
        tables = [t for t in tables if split_qualified(t) in chosen]
    found = count_rows(request.into, tables)
    report = compare_counts(manifest, found, dict.fromkeys(record.left_out, "not loaded by this restore"))
    report = {t: r for t, r in report.items() if t in tables}
    if request.mode == SCHEMA_ONLY:  # the rows are not restored: only that every table exists
        report = {t: {"expected": None, "found": found.get(t), "ok": found.get(t) is not None} for t in tables}
    record.comparison = report
    record.tables_checked = len(report)
    record.rows_restored = sum(r["found"] or 0 for r in report.values())
    record.mismatches = sorted(t for t, r in report.items() if not r["ok"])
    if record.mismatches:
        details = ", ".join(
            f"{t}: expected {report[t]['expected']}, found {report[t]['found']}" for t in record.mismatches[:20]
        )
        raise RestoreError(f"the restored database differs from the backup's snapshot counts: {details}")


def restore_backup(
    request: RestoreRequest,
    storage: Storage,
    key: DecryptionKey,
    workdir: Path,
    *,
    safety: SafetySettings | None = None,
    progress: ProgressFn | None = None,
) -> RestoreRecord:
    """:func:`plan_restore` then :func:`execute_restore`, with the selection time in the record."""
    started = time.monotonic()
    plan = plan_restore(request, storage)
    selected = round(time.monotonic() - started, 3)
    record = execute_restore(plan, storage, key, workdir, safety=safety, progress=progress)
    record.phases["select"] = selected
    record.rto_seconds = round(sum(record.phases.values()), 3)
    return record


def record_restore(record: RestoreRecord, storages: Iterable[tuple[str, Storage]]) -> dict[str, str]:
    """Store the audit record at ``restores/<target>/<started>.json`` (create-only) in every reachable storage."""
    try:
        return store_record(f"{RESTORE_RECORD_PREFIX}{record.target}/", record.to_dict(), storages)
    except StorageError as exc:
        log.error("the restore record could not be stored: %s", exc)
        return {}


def iter_phases(record: RestoreRecord) -> Iterator[tuple[str, float]]:
    for name in PHASES:
        if name in record.phases:
            yield name, record.phases[name]
