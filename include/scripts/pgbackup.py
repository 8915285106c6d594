#!/usr/bin/env python3
"""pgbackup's break-glass command line: list, verify, restore, back up and prune with Airflow down.

    python include/scripts/pgbackup.py --config include/pgbackup.yaml list
    python include/scripts/pgbackup.py --config FILE restore --target projectx --backup latest \\
        --into-database projectx_restored

It runs on the engine alone (no Airflow installed, no Airflow database) and reads the same
config file as the DAGs. Each connection id in it is resolved from AIRFLOW_CONN_<ID> (Airflow's
URI or JSON format), else from libpq's defaults (PG* variables, PGSERVICE, ~/.pgpass) for
PostgreSQL and the AWS / Google default credential chains for storage.

Exit status: 0 success, 1 failure (the message says what and what was done), 2 usage error
(a wrong option, config or input: nothing was touched).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # include/, for the engine

from pgbackup import backup, envconn, recovery
from pgbackup.backup import BackupRequest
from pgbackup.catalog_view import Catalog, read_catalog  # the Backups page's reader: one catalog code path
from pgbackup.config import (
    DUMP_KINDS,
    SAFETY_SUFFIX,
    TIERS,
    DestinationConfig,
    PgBackupConfig,
    TargetConfig,
    load_config,
)
from pgbackup.errors import ConfigError, IntegrityError, PgBackupError, RestoreError, VerificationError
from pgbackup.manifest import VERIFICATION_FAILED, Manifest, iso, manifest_key, utcnow
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, ValidationSettings, record_verification, validate_backup
from pgbackup.retention import prune, prune_safety_backups
from pgbackup.storage.base import READ_CHUNK, Storage

log = logging.getLogger("pgbackup.cli")
STARTED = time.monotonic()  # for the command's wall time (the ~0.5 s of imports before this aside)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SCRIPT = Path(__file__).resolve()


class UsageError(Exception):
    """The command line does not make sense (exit 2)."""


# -- progress ---------------------------------------------------------------------------------


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


class Progress:
    """Bytes, rate and ETA of a long transfer: redrawn in place on a terminal, a log line every
    ``interval`` seconds otherwise (so a CI log or a pipe gets readable lines, not carriage returns)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self._started: dict[str, float] = {}
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if phase not in self._started:  # the first chunk starts the clock: no rate from it yet
            self._started[phase], self._last = now, now
        started = self._started[phase]
        finished = total is not None and done >= total
        if not finished and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - started, 1e-6)
        rate = done / elapsed
        text = f"{phase}: {_size(done)}"
        if total:
            eta = (total - done) / rate if rate > 0 else 0.0
            text += f" of {_size(total)} ({100 * done / total:.0f}%), {_size(rate)}/s, ETA {eta:.0f} s"
        else:
            text += f", {_size(rate)}/s"
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if finished else ""))
            self.stream.flush()
        else:
            log.info("%s", text)


# -- the context: config + connections ----------------------------------------------------------


class Context:
    def __init__(self, config: PgBackupConfig, progress: Progress) -> None:
        self.config = config
        self.progress = progress

    def target(self, name: str) -> TargetConfig:
        try:
            return self.config.target(name)
        except (ConfigError, KeyError):
            known = ", ".join(t.name for t in self.config.targets)
            raise UsageError(f"no target {name!r} in {self.config.source_file} (targets: {known})") from None

    def destination(self, name: str | None) -> DestinationConfig:
        if name is None:
            return self.config.primary
        try:
            return self.config.destination(name)
        except (ConfigError, KeyError):
            known = ", ".join(d.name for d in self.config.destinations)
            raise UsageError(f"no destination {name!r} in {self.config.source_file} (destinations: {known})") from None

    def storage(self, destination: DestinationConfig) -> Storage:
        return envconn.storage_for(destination, self.config.timeouts)

    def target_conn(self, target: TargetConfig) -> PgConnInfo:
        return envconn.postgres_conn_info(
            target.postgres_conn_id,
            target.database,
            f"target {target.name} (connection {target.postgres_conn_id})",
            self.config.timeouts,
        )

    def server_conn(self, conn_id: str, database: str, label: str) -> PgConnInfo:
        return envconn.postgres_conn_info(conn_id, database, label, self.config.timeouts)

    def scratch_conn(self, target: TargetConfig) -> PgConnInfo:
        conn_id = target.validation.scratch_conn_id
        return envconn.postgres_conn_info(
            conn_id, None, f"scratch server for {target.name} (connection {conn_id})", self.config.timeouts
        )

    def decryption_key(self) -> DecryptionKey:
        return envconn.decryption_key(self.config.encryption.decryption_key_conn_id)

    def validation(self, target: TargetConfig) -> ValidationSettings:
        return ValidationSettings(
            scratch=self.scratch_conn(target),
            source=self.target_conn(target),
            allow_source_server=target.validation.allow_source_server,
            queries=target.validation.queries,
            restore_jobs=target.validation.restore_jobs,
            template=target.validation.scratch_template,
        )

    def backup_request(self, target: TargetConfig, kind: str) -> BackupRequest:
        config = self.config
        return BackupRequest(
            target=target.name,
            source=self.target_conn(target),
            kind=kind,
            compression=config.compression,
            encryption=config.encryption,
            public_key_files=tuple(config.key_file_path(p) for p in config.encryption.public_key_files),
            profile=target.profile,
            dump_format=target.dump_format,
            exclude_schemas=target.exclude_schemas,
        )

    @contextmanager
    def workdir(self, what: str) -> Iterator[Path]:
        """A private folder under the config's staging_dir, removed however the command ends."""
        root = Path(self.config.staging_dir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"cli-{what}-", dir=root) as path:
            os.chmod(path, 0o700)
            yield Path(path)


def _targets(ctx: Context, name: str | None) -> list[TargetConfig]:
    return [ctx.target(name)] if name else list(ctx.config.targets)


def _destinations(ctx: Context, name: str | None) -> list[DestinationConfig]:
    return [ctx.destination(name)] if name else list(ctx.config.destinations)


# -- list ---------------------------------------------------------------------------------------


def print_catalog(catalog: Catalog, out: IO[str], label: str = "") -> int:
    """One line per complete backup, then what is not one, each with its reason; 1 if any is unsound."""
    for manifest in catalog.of():
        verification = manifest.verification
        restore = verification.get("restore_seconds")
        print(
            f"{label}{manifest.created_at:<21} {manifest.tier:<8} {manifest.kind:<7} "
            f"{verification.get('status', '?'):<9} {restore if restore is not None else '':>9} "
            f"{manifest.size:>14,}  {manifest.backup_id}  {manifest.object_key}",
            file=out,
        )
    for info in catalog.incomplete:
        print(
            f"{label}{'':<21} {'':<8} {'?':<7} {'INCOMPLETE':<9} {'':>9} {info.size:>14,}  {info.key} (no manifest)",
            file=out,
        )
    for suspect in catalog.suspect:
        print(f"{label}SUSPECT  {suspect.key}: {suspect.reason} (kept, not counted)", file=out)
    for entry in catalog.unreadable:
        print(f"{label}UNREADABLE manifest {entry.key}: {entry.reason} (its object is kept)", file=out)
    return EXIT_FAILED if catalog.unreadable or catalog.suspect else EXIT_OK


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    status = EXIT_OK
    for target in _targets(ctx, args.target):
        for destination in _destinations(ctx, args.destination):
            storage = ctx.storage(destination)
            print(f"== target {target.name} at {destination.name} ({storage.url})")
            print(
                f"{'created':<21} {'tier':<8} {'kind':<7} {'verified':<9} {'restore s':>9} {'size':>14}  "
                "backup id  object"
            )
            try:
                status = max(status, print_catalog(read_catalog(storage, target.name), sys.stdout))
                safety = read_catalog(storage, f"{target.name}{SAFETY_SUFFIX}")
                if safety.backups or safety.incomplete or safety.unreadable or safety.suspect:
                    print(f"-- safety backups of databases overwritten by restores of {target.name}")
                    status = max(status, print_catalog(safety, sys.stdout))
            except PgBackupError as exc:
                print(f"LISTING FAILED at {destination.name}: {exc}")
                status = EXIT_FAILED
    return status


# -- verify -------------------------------------------------------------------------------------


def check_checksum(storage: Storage, manifest: Manifest, progress: Callable[[str, int, int | None], None]) -> None:
    """Stream the stored object and compare its size and sha256 with the manifest."""
    digest = hashlib.sha256()
    done = 0
    with storage.open_read(manifest.object_key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(f"verify {manifest.backup_id}", done, manifest.size)
    if done != manifest.size or digest.hexdigest() != manifest.sha256:
        raise IntegrityError(
            f"{storage.url}/{manifest.object_key}: stored object has {done} bytes with sha256 {digest.hexdigest()}, "
            f"the manifest says {manifest.size} bytes, {manifest.sha256}"
        )


def verify_checksums(storage: Storage, manifests: list[Manifest], progress: Any = None) -> int:
    failures = 0
    for manifest in manifests:
        try:
            check_checksum(storage, manifest, progress or (lambda *_: None))
            print(f"ok       {manifest.backup_id}  sha256 {manifest.sha256}")
        except PgBackupError as exc:
            failures += 1
            print(f"CORRUPT  {manifest.backup_id}: {exc}")
    return EXIT_FAILED if failures else EXIT_OK


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    target = ctx.target(args.target)
    destination = ctx.destination(args.destination)
    storage = ctx.storage(destination)
    catalog = read_catalog(storage, target.name)
    if args.backup in (None, "all") and not args.restore_test:
        chosen = catalog.of()
    elif args.backup in (None, "all", recovery.LATEST):
        chosen = catalog.of()[:1]
    else:
        chosen = [recovery.find_backup(storage, target.name, recovery.check_backup_id(args.backup))]
    if not chosen:
        print(f"no complete backup of {target.name} at {destination.name} ({storage.url})")
        return EXIT_FAILED
    status = verify_checksums(storage, chosen, ctx.progress)
    if status != EXIT_OK or not args.restore_test:
        return status
    manifest = chosen[0]
    key = ctx.decryption_key()
    schema = read_catalog(storage, target.name).schema_for_data() if manifest.kind == "data" else None
    storages = [ctx.storage(d) for d in ctx.config.destinations_for(manifest.kind)]
    with ctx.workdir("verify") as workdir:
        try:
            verification = validate_backup(manifest, storage, ctx.validation(target), key, workdir, schema)
        except VerificationError as exc:
            record_verification(manifest, {**exc.record, "status": VERIFICATION_FAILED, "error": str(exc)}, storages)
            raise
    record_verification(manifest, verification, storages)
    for table, row in verification["tables"].items():
        print(f"restored {table}: expected {row['expected']}, found {row['found']}{'' if row['ok'] else '  MISMATCH'}")
    print(
        f"verified {manifest.backup_id}: {verification['tables_checked']} tables, restore "
        f"{verification['restore_seconds']} s, total {verification['total_seconds']} s (recorded in its manifests)"
    )
    return EXIT_OK


# -- restore ------------------------------------------------------------------------------------


def _restore_command(args: argparse.Namespace, destination: str) -> str:
    parts = [sys.executable, str(SCRIPT)]
    if args.config:
        parts += ["--config", str(Path(args.config).resolve())]
    parts += ["restore", "--target", "{target}", "--backup", "{backup_id}", "--into-database", "{database}"]
    parts += ["--destination", destination]
    if args.into_conn:
        parts += ["--into-conn", args.into_conn]
    parts.append("--force")
    return " ".join(p if p.startswith("{") else shlex.quote(p) for p in parts)


def _confirm_overwrite(database: str, summary: dict[str, Any]) -> None:
    """On a terminal, overwriting asks for the database's name (--yes skips it, for scripts)."""
    if not sys.stdin.isatty():
        return
    print(f"\n{summary['consequence']}.\nType the database name ({database}) to go on: ", end="", flush=True)
    if sys.stdin.readline().strip() != database:
        raise UsageError("not confirmed; nothing was changed")


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    target = ctx.target(args.target)
    destination = ctx.destination(args.destination)
    recovery.check_backup_id(args.backup)
    choice = recovery.BackupChoice(
        backup_id=args.backup,
        tier=args.tier,
        before=recovery.parse_when(args.before) if args.before else None,
    )
    if args.into_database is not None:
        recovery.check_database_name(args.into_database)
    tables = tuple(t.strip() for t in (args.tables or "").split(",") if t.strip())
    key = ctx.decryption_key()  # a missing key stops here, before anything is read or changed
    storage = ctx.storage(destination)
    source = ctx.target_conn(target)
    into_conn = args.into_conn or target.postgres_conn_id
    placeholder = args.into_database or "pgbackup_unnamed"
    into = (
        source.with_dbname(placeholder)
        if into_conn == target.postgres_conn_id
        else ctx.server_conn(into_conn, placeholder, f"restore server (connection {into_conn})")
    )
    request_values: dict[str, Any] = {
        "target": target.name,
        "into": into,
        "choice": choice,
        "mode": args.mode,
        "tables": tables,
        "force": args.force,
        "source": source,
        "schema_backup_id": args.schema_backup,
        "jobs": args.jobs,
        "template": args.template,
        "triggered_by": f"{getpass.getuser()}@{socket.gethostname()} (pgbackup CLI)",
        "restore_command": _restore_command(args, destination.name),
    }
    if args.into_database is None:  # the default name comes from the backup, so resolve it first
        found = recovery.resolve_backup(target.name, choice, args.mode, storage)
        request_values["into"] = into.with_dbname(recovery.default_database_name(found))
        request_values["choice"] = recovery.BackupChoice(found.backup_id)
    request = recovery.RestoreRequest(**request_values)
    started = time.monotonic()
    plan = recovery.plan_restore(request, storage)
    selected = round(time.monotonic() - started, 3)
    summary = plan.summary()
    print("resolved:")
    for name, value in summary.items():
        print(f"  {name:<17} {value}")
    if plan.database_exists and not args.yes:
        _confirm_overwrite(request.into.dbname, summary)
    safety = recovery.SafetySettings(
        compression=ctx.config.compression,
        encryption=ctx.config.encryption,
        public_key_files=tuple(ctx.config.key_file_path(p) for p in ctx.config.encryption.public_key_files),
        validation=ctx.validation(target),
        destination=destination.name,
        profile=target.profile,
    )
    records_at = [(d.name, ctx.storage(d)) for d in ctx.config.destinations]
    with ctx.workdir("restore") as workdir:
        try:
            record = recovery.execute_restore(
                plan, storage, key, workdir, safety=safety if plan.database_exists else None, progress=ctx.progress
            )
        except recovery.RestoreFailed as exc:
            exc.record.phases["select"] = selected
            stored = recovery.record_restore(exc.record, records_at)
            print(f"RESTORE FAILED: {exc}", file=sys.stderr)
            if stored:
                print(f"audit record: {', '.join(f'{n}:{k}' for n, k in stored.items())}", file=sys.stderr)
            return EXIT_FAILED
    record.phases["select"] = selected
    record.rto_seconds = round(sum(record.phases.values()), 3)
    stored = recovery.record_restore(record, records_at)
    for table, row in record.comparison.items():
        print(f"restored {table}: expected {row['expected']}, found {row['found']}")
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in recovery.iter_phases(record))
    print(
        f"restored {record.backup_id} into {record.into}: {record.tables_checked} tables, {record.rows_restored} rows"
    )
    if record.safety_backup_id:
        print(f"safety backup of the previous {record.database}: {record.safety_backup_id}")
    if record.left_out:
        print(f"left out: {'; '.join(record.left_out)}")
    print(f"RTO {record.rto_seconds:.1f} s ({phases}); the whole command took {time.monotonic() - STARTED:.1f} s")
    if stored:
        print(f"audit record: {', '.join(f'{n}:{k}' for n, k in stored.items())}")
    if args.record_file:
        Path(args.record_file).write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


# -- backup ---------------------------------------------------------------------------------------


def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    """The DAG's chain, staged or stream as the target says, then the restore test."""
    config = ctx.config
    target = ctx.target(args.target)
    request = ctx.backup_request(target, args.kind)
    key = ctx.decryption_key()  # validation needs it: fail before dumping, not after
    destinations = config.destinations_for(args.kind)
    primary = config.primary
    if primary not in destinations:
        raise UsageError(f"the primary destination {primary.name} does not take {args.kind} backups")
    storages = {d.name: ctx.storage(d) for d in destinations}
    failures: list[str] = []
    with ctx.workdir("backup") as workdir:
        started = time.monotonic()
        if target.data_path == "stream":
            log.info("streaming a %s backup of %s to %s", args.kind, target.name, primary.name)
            manifest = backup.stream_backup(request, storages[primary.name], primary.name)
            for destination in destinations:
                if destination.name == primary.name:
                    continue
                try:
                    backup.replicate(manifest, storages[primary.name], storages[destination.name], destination.name)
                    log.info("replicated to %s", destination.name)
                except PgBackupError as exc:
                    failures.append(f"{destination.name}: {exc}")
        else:
            manifest = backup.dump_to_file(request, workdir)
            manifest = backup.compress_file(manifest, config.compression, workdir)
            manifest = backup.encrypt_file(manifest, request, workdir)
            artifact = workdir / backup.ENCRYPTED_FILE
            for destination in destinations:
                began = time.monotonic()
                try:
                    backup.upload_artifact(manifest, artifact, storages[destination.name], destination.name)
                except PgBackupError as exc:
                    failures.append(f"{destination.name}: {exc}")
                    continue
                seconds = max(time.monotonic() - began, 1e-6)
                log.info(
                    "uploaded %s to %s in %.1f s (%s/s)",
                    _size(manifest.size),
                    destination.name,
                    seconds,
                    _size(manifest.size / seconds),
                )
            artifact.unlink(missing_ok=True)
        print(
            f"backup {manifest.backup_id}: {_size(manifest.size)}, sha256 {manifest.sha256}, "
            f"{time.monotonic() - started:.1f} s"
        )
        primary_storage = storages[primary.name]
        raw = primary_storage.get_bytes(manifest_key(manifest.object_key))
        if raw is None:
            print(
                f"FAILED: the primary destination {primary.name} holds no complete copy; {'; '.join(failures)}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        stored = Manifest.from_json(raw, f"{primary_storage.url}/{manifest_key(manifest.object_key)}")
        schema = read_catalog(primary_storage, target.name).schema_for_data() if stored.kind == "data" else None
        published = list(storages.values())
        try:
            verification = validate_backup(
                stored, primary_storage, ctx.validation(target), key, workdir / "validate", schema
            )
        except VerificationError as exc:
            record_verification(stored, {**exc.record, "status": VERIFICATION_FAILED, "error": str(exc)}, published)
            raise
        except RestoreError as exc:
            record_verification(
                stored, {"status": VERIFICATION_FAILED, "error": str(exc), "verified_at": iso(utcnow())}, published
            )
            raise
    record_verification(stored, verification, published)
    print(
        f"verified {stored.backup_id}: {verification['tables_checked']} tables, restore "
        f"{verification['restore_seconds']} s"
    )
    if failures:
        print(f"FAILED at some destinations: {'; '.join(failures)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- prune --------------------------------------------------------------------------------------


def cmd_prune(ctx: Context, args: argparse.Namespace) -> int:
    target = ctx.target(args.target)
    status = EXIT_OK
    dry_run = True if args.dry_run else None
    for destination in ctx.config.destinations:
        storage = ctx.storage(destination)
        for what, prune_folder in (("", prune), (" safety backups", prune_safety_backups)):
            try:
                plan = prune_folder(
                    storage, target.name, ctx.config.retention, destination=destination.name, dry_run=dry_run
                )
            except PgBackupError as exc:
                print(f"FAILED at {destination.name}{what}: {exc} (nothing deleted there)")
                status = EXIT_FAILED
                continue
            policy = ctx.config.retention.for_destination(destination.name)
            verb = "would delete" if (args.dry_run or policy.dry_run) else "deleted"
            for decision in plan.delete:
                print(f"{destination.name}: {verb} {decision.key} ({decision.reason})")
            print(f"{destination.name}{what}: {len(plan.delete)} {verb}, {len(plan.keep)} kept")
    return status


# -- main ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 itself; keep its wording
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgbackup.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the pgbackup YAML file (default: $PGBACKUP_CONFIG or include/pgbackup.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (tracebacks of failures)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = sub.add_parser(
        "list",
        help="backups per target, tier and destination, with verification state",
        description="Backups per target, tier and destination, with their verification state; "
        "incomplete, unreadable and suspect ones with their reasons. Exit 1 when "
        "any listing failed or any manifest is unreadable or suspect.",
    )
    listing.add_argument("--target", help="one target (default: all)")
    listing.add_argument("--destination", help="one destination (default: all)")
    listing.set_defaults(func=cmd_list)

    verify = sub.add_parser(
        "verify",
        help="re-hash stored backups; optionally restore one on the scratch server",
        description="Stream stored objects back and compare their sha256 and size with the "
        "manifests. --restore-test also restores the backup into a scratch database "
        "on the target's scratch server, compares every table's rows with the "
        "snapshot counts, and records the result in its manifests.",
    )
    verify.add_argument("--target", required=True)
    verify.add_argument(
        "--backup", help="an exact backup id, 'latest', or 'all' (default: all; latest with --restore-test)"
    )
    verify.add_argument("--destination", help="where to read from (default: the primary)")
    verify.add_argument("--restore-test", action="store_true", help="also restore it on the scratch server")
    verify.set_defaults(func=cmd_verify)

    restore = sub.add_parser(
        "restore",
        help="restore a backup into a new database (or an existing one with --force)",
        description="Restore a backup into a NEW database on the target's server (or on "
        "--into-conn's). An existing database is overwritten only with --force, "
        "after a safety backup of it has been taken and proved to restore. A failed "
        "restore into a new database drops it. The restored tables' rows are "
        "compared with the backup's snapshot counts, and an audit record with "
        "the phase timings (the measured RTO) is stored beside the backups.",
    )
    restore.add_argument("--target", required=True)
    restore.add_argument(
        "--backup", default=recovery.LATEST, help="an exact backup id, or 'latest' (the newest verified; default)"
    )
    restore.add_argument("--tier", choices=TIERS, help="with 'latest': the newest verified of this tier")
    restore.add_argument(
        "--before",
        metavar="TIME",
        help="with 'latest': the newest verified created on or before TIME (ISO, UTC unless an offset is given)",
    )
    restore.add_argument(
        "--into-database",
        metavar="NAME",
        help="the database to restore into (default: <target>_restored_<backup time>)",
    )
    restore.add_argument(
        "--into-conn",
        metavar="CONN_ID",
        help="restore onto this server's connection instead of the target's (e.g. a replacement server)",
    )
    restore.add_argument("--destination", help="where to read the backup from (default: the primary)")
    restore.add_argument("--mode", choices=recovery.MODES, default=recovery.FULL, help="what to restore (default full)")
    restore.add_argument("--tables", help="mode tables: comma-separated tables, e.g. public.orders,customers")
    restore.add_argument(
        "--schema-backup",
        metavar="ID",
        help="mode schema-then-data: the schema backup (default: the newest verified one before the data)",
    )
    restore.add_argument(
        "--template",
        metavar="DB",
        help="create the new database as a copy of DB (a supabase-profile backup needs one holding a new "
        "project's platform)",
    )
    restore.add_argument("--force", action="store_true", help="overwrite an existing database (safety backup first)")
    restore.add_argument("--yes", action="store_true", help="do not ask for the database name on a terminal")
    restore.add_argument("--jobs", type=int, default=2, help="pg_restore parallel jobs (default 2)")
    restore.add_argument("--record-file", help="also write the audit record (JSON) to this file")
    restore.set_defaults(func=cmd_restore)

    take = sub.add_parser(
        "backup",
        help="take a backup now: the DAG's chain, then its restore test",
        description="The same chain as pg_backup_daily: dump (with snapshot row counts), "
        "compress, encrypt, upload to every destination that takes the kind (or "
        "stream to the primary and replicate, per the target's data_path), then "
        "restore the primary's copy on the scratch server and record the result.",
    )
    take.add_argument("--target", required=True)
    take.add_argument("--kind", choices=DUMP_KINDS, default="full")
    take.set_defaults(func=cmd_backup)

    pruning = sub.add_parser(
        "prune",
        help="apply retention at every destination",
        description="Retention from manifests only, as the DAG applies it: the newest "
        "min_keep verified backups of each kind are always kept; nothing is "
        "deleted where a listing fails.",
    )
    pruning.add_argument("--target", required=True)
    pruning.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    pruning.set_defaults(func=cmd_prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
        return int(args.func(Context(config, Progress()), args))
    except (UsageError, ConfigError) as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return EXIT_USAGE
    except PgBackupError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
