"""The break-glass CLI, run as an operator would: a subprocess where ``import airflow`` fails,
connections given only as AIRFLOW_CONN_* variables, real PostgreSQL servers, moto's S3 server,
the GCS emulator and real gpg."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from devtools.db_compare import compare_databases, psql_file
from devtools.gpg_keys import GeneratedKey, generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.services import MOTO_CREDENTIALS, GcsEmulator, MotoServer
from pgbackup.backup import BackupRequest
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "include" / "scripts" / "pgbackup.py"
HARD_FEATURES = ROOT / "tests" / "sql" / "hard_features.sql"
S3_BUCKET = "cli-backups"
GCS_BUCKET = "cli-backups-gcs"
POISON = """
SET app.allow_items = 'on';
CREATE TABLE items (v int CHECK (current_setting('app.allow_items', true) IS NOT DISTINCT FROM 'on'));
INSERT INTO items VALUES (1), (2);
"""


@pytest.fixture(scope="module")
def scratch_server() -> Iterator[TemporaryCluster]:
    with TemporaryCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> GeneratedKey:
    return generate_key(tmp_path_factory.mktemp("cli-keys"), "dr@projectx.example")


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoServer]:
    with MotoServer() as server:
        server.create_bucket(S3_BUCKET)
        yield server


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        emulator.create_bucket(GCS_BUCKET)
        yield emulator


def _pg_uri(cluster: TemporaryCluster, dbname: str) -> str:
    return f"postgresql://{cluster.user}:{quote(cluster.password, safe='')}@{cluster.host}:{cluster.port}/{dbname}"


@dataclass
class Deployment:
    """A config file plus the environment an operator would export, and nothing else."""

    config: Path
    env: dict[str, str]
    source: TemporaryCluster
    database: str
    local_root: Path
    key: GeneratedKey

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=env if env is not None else self.env,
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def source_conn(self, dbname: str | None = None) -> PgConnInfo:
        c = self.source
        return PgConnInfo(c.host, c.port, c.user, dbname or self.database, c.password)


def _deployment(
    tmp: Path,
    source: TemporaryCluster,
    database: str,
    scratch: TemporaryCluster,
    key: GeneratedKey,
    s3: MotoServer,
    gcs: GcsEmulator,
    *,
    data_path: str = "staged",
    prefix: str = "pgbackup",
) -> Deployment:
    local_root = tmp / "backups"
    local_root.mkdir(parents=True, exist_ok=True)
    config = {
        "staging_dir": str(tmp / "staging"),
        "targets": [
            {
                "name": "projectx",
                "postgres_conn_id": "projectx_db",
                "data_path": data_path,
                "validation": {"scratch_conn_id": "pgbackup_scratch", "queries": []},
            }
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(local_root)},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "aws_dr", "bucket": S3_BUCKET, "prefix": prefix},
            {"name": "gcs", "type": "gcs", "conn_id": "gcp_dr", "bucket": GCS_BUCKET, "prefix": prefix},
        ],
        "encryption": {
            "recipients": [key.email],
            "public_key_files": [str(key.public_key_file)],
            "decryption_key_conn_id": "pgbackup_gpg_private_key",
        },
        "retention": {"daily_days": 1, "min_keep": 1},
    }
    path = tmp / "pgbackup.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    # A stub "airflow" package that explodes on import proves the CLI never imports Airflow.
    blocker = tmp / "no_airflow"
    (blocker / "airflow").mkdir(parents=True, exist_ok=True)
    (blocker / "airflow" / "__init__.py").write_text("raise ImportError('airflow must not be imported')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PG", "AWS_"))}
    env.update(
        PYTHONPATH=str(blocker),
        STORAGE_EMULATOR_HOST=gcs.endpoint,
        AIRFLOW_CONN_PROJECTX_DB=_pg_uri(source, database),
        AIRFLOW_CONN_PGBACKUP_SCRATCH=_pg_uri(scratch, "postgres"),
        AIRFLOW_CONN_AWS_DR=json.dumps(
            {
                "conn_type": "aws",
                "login": MOTO_CREDENTIALS["aws_access_key_id"],
                "password": MOTO_CREDENTIALS["aws_secret_access_key"],
                "extra": {
                    "endpoint_url": s3.endpoint_url,
                    "region_name": "us-east-1",
                    "config_kwargs": {"s3": {"addressing_style": "path"}},
                },
            }
        ),
        AIRFLOW_CONN_GCP_DR=json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": "pgbackup-test"}}),
        AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY=json.dumps(
            {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
        ),
    )
    return Deployment(path, env, source, database, local_root, key)


@pytest.fixture(scope="module")
def hard(
    tmp_path_factory: pytest.TempPathFactory,
    pg_cluster: TemporaryCluster,
    scratch_server: TemporaryCluster,
    key: GeneratedKey,
    s3: MotoServer,
    gcs: GcsEmulator,
) -> Iterator[Deployment]:
    """tests/sql/hard_features.sql, backed up once through the CLI to local, S3 and GCS."""
    pg_cluster.create_database("cli_hard")
    psql_file(pg_cluster.dsn("cli_hard"), HARD_FEATURES)
    deployment = _deployment(
        tmp_path_factory.mktemp("cli-hard"), pg_cluster, "cli_hard", scratch_server, key, s3, gcs, prefix="hard"
    )
    taken = deployment.run("backup", "--target", "projectx", "--kind", "full")
    assert taken.returncode == 0, taken.stderr
    assert "verified projectx-full-" in taken.stdout
    yield deployment
    pg_cluster.drop_database("cli_hard")


@pytest.mark.parametrize("destination", ["local", "s3", "gcs"])
def test_restore_round_trip_from_each_destination_is_identical(
    hard: Deployment, pg_cluster: TemporaryCluster, destination: str
) -> None:
    into = f"cli_restored_{destination}"
    try:
        done = hard.run(
            "restore",
            "--target",
            "projectx",
            "--backup",
            "latest",
            "--destination",
            destination,
            "--into-database",
            into,
        )
        assert done.returncode == 0, done.stderr
        assert "restored projectx-full-" in done.stdout and f"/{into}:" in done.stdout and "RTO " in done.stdout
        assert compare_databases(pg_cluster.dsn("cli_hard"), pg_cluster.dsn(into)) == []
        assert "Traceback" not in done.stderr
    finally:
        pg_cluster.drop_database(into)


def test_every_command_has_help_and_usage_errors_exit_2(tmp_path: Path) -> None:
    for command in ("list", "verify", "restore", "backup", "prune"):
        shown = subprocess.run(
            [sys.executable, str(SCRIPT), command, "--help"], capture_output=True, text=True, check=False, timeout=60
        )
        assert shown.returncode == 0 and "usage:" in shown.stdout and "--target" in shown.stdout
    wrong = subprocess.run(
        [sys.executable, str(SCRIPT), "restore", "--target", "x", "--bogus"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(tmp_path / "nope.yaml"), "list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert missing.returncode == 2 and "cannot read the pgbackup config file" in missing.stderr


def test_backup_list_verify_restore_prune_with_env_connections_only(
    tmp_path: Path,
    pg_cluster: TemporaryCluster,
    scratch_server: TemporaryCluster,
    key: GeneratedKey,
    s3: MotoServer,
    gcs: GcsEmulator,
) -> None:
    pg_cluster.create_database("cli_e2e")
    load_projectx(pg_cluster.dsn("cli_e2e"), scale=0.02)
    dr = _deployment(tmp_path, pg_cluster, "cli_e2e", scratch_server, key, s3, gcs, data_path="stream", prefix="e2e")
    try:
        for kind in ("full", "full", "schema"):
            taken = dr.run("backup", "--target", "projectx", "--kind", kind)
            assert taken.returncode == 0, taken.stderr
        listed = dr.run("list", "--target", "projectx")
        assert listed.returncode == 0, listed.stderr
        for destination in ("local", "s3", "gcs"):
            assert f"== target projectx at {destination}" in listed.stdout
        assert listed.stdout.count(" full    passed ") == 6 and listed.stdout.count(" schema  passed ") == 3

        verified = dr.run("verify", "--target", "projectx", "--backup", "latest", "--restore-test")
        assert verified.returncode == 0, verified.stderr
        assert "ok       projectx-" in verified.stdout and "verified projectx-" in verified.stdout
        assert "restored public.orders: expected" in verified.stdout

        restored = dr.run(
            "restore",
            "--target",
            "projectx",
            "--into-database",
            "cli_e2e_restored",
            "--record-file",
            str(tmp_path / "record.json"),
        )
        assert restored.returncode == 0, restored.stderr
        record = json.loads((tmp_path / "record.json").read_text())
        assert record["status"] == "passed" and record["rto_seconds"] > 0 and not record["mismatches"]
        assert record["triggered_by"].endswith("(pgbackup CLI)")
        assert set(record["phases"]) == {"select", "fetch", "decrypt", "restore", "verify"}
        assert compare_databases(pg_cluster.dsn("cli_e2e"), pg_cluster.dsn("cli_e2e_restored")) == []
        audit = [k for k in s3.client().list_objects_v2(Bucket=S3_BUCKET, Prefix="e2e/restores/projectx/")["Contents"]]
        assert audit, "the audit record is stored beside the backups"

        # Retention keeps the newest verified backup of each kind (min_keep 1); nothing is old enough yet.
        dry = dr.run("prune", "--target", "projectx", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "local: 0 would delete" in dry.stdout and "s3: 0 would delete" in dry.stdout
        pruned = dr.run("prune", "--target", "projectx")
        assert pruned.returncode == 0 and "gcs: 0 deleted" in pruned.stdout
        assert "gcs safety backups: 0 deleted, 0 kept" in pruned.stdout
    finally:
        pg_cluster.drop_database("cli_e2e")
        pg_cluster.drop_database("cli_e2e_restored")


# -- bad input: a clear error, nothing lost ---------------------------------------------------


def _fault(fault: str, expected: str) -> pytest.MarkDecorator:
    return pytest.mark.fault(fault, expected)


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        pytest.param(
            ["--backup", "projectx-full-20200101T000000.000000Z-deadbeef"],
            1,
            "no backup projectx-full-20200101T000000.000000Z-deadbeef for target projectx",
            marks=_fault(
                "CLI restore of a backup id that does not exist",
                "exit 1 naming the id and the destination; no database created",
            ),
            id="nonexistent",
        ),
        pytest.param(
            ["--backup", "../../etc/passwd"],
            2,
            "contains a path",
            marks=_fault("CLI restore of a backup id with ../", "exit 2 before anything is read"),
            id="path",
        ),
        pytest.param(
            ["--backup", "x;$(touch pwned)`id`"],
            2,
            "characters a backup id never has",
            marks=_fault(
                "CLI restore of a backup id with shell/SQL metacharacters",
                "exit 2 before anything is read; nothing executed",
            ),
            id="metacharacters",
        ),
        pytest.param(
            ["--into-database", 'x"; DROP DATABASE cli_hard; --'],
            2,
            "is not a valid identifier",
            marks=_fault("CLI restore into an invalid database name", "exit 2 naming the expected form"),
            id="database-name",
        ),
        pytest.param(
            ["--into-database", "cli_hard"],
            1,
            "is the source database of target projectx",
            marks=_fault(
                "CLI restore onto the source database without --force",
                "exit 1 naming the overwrite flow; the source untouched",
            ),
            id="source-without-force",
        ),
        pytest.param(
            ["--mode", "schema-then-data", "--backup", "LATEST_FULL"],
            1,
            "mode schema-then-data does not match",
            marks=_fault(
                "CLI restore with a mode that does not match the backup",
                "exit 1 naming the backup's kind and the mode that fits",
            ),
            id="mode-mismatch",
        ),
    ],
)
def test_bad_restore_input_is_refused_and_nothing_changes(
    hard: Deployment, pg_cluster: TemporaryCluster, args: list[str], status: int, message: str
) -> None:
    latest_full = json.loads(
        hard.local_root.joinpath(
            next(p for p in hard.local_root.rglob("*.manifest.json") if "/restores/" not in str(p))
        ).read_text()
    )["backup_id"]
    args = [latest_full if a == "LATEST_FULL" else a for a in args]
    if "--into-database" not in args:
        args += ["--into-database", "cli_should_not_exist"]
    before = pg_cluster.execute("SELECT datname FROM pg_database ORDER BY 1")
    done = hard.run("restore", "--target", "projectx", *args)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert pg_cluster.execute("SELECT datname FROM pg_database ORDER BY 1") == before
    assert pg_cluster.execute("SELECT count(*) FROM app.orders", dbname="cli_hard")[0][0] > 0
    assert not Path("pwned").exists()


@_fault(
    "CLI restore with the decryption key connection unset",
    "exit 2 naming AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY and its expected form; nothing read or created",
)
def test_missing_decryption_key_is_named(hard: Deployment, pg_cluster: TemporaryCluster) -> None:
    env = {k: v for k, v in hard.env.items() if k != "AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY"}
    done = hard.run("restore", "--target", "projectx", "--into-database", "cli_no_key", env=env)
    assert done.returncode == 2, done.stderr
    assert "no decryption key: AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY is not set" in done.stderr
    assert not pg_cluster.execute("SELECT 1 FROM pg_database WHERE datname = 'cli_no_key'")


def _poisoned_backup(dr: Deployment, pg_cluster: TemporaryCluster, tmp_path: Path) -> str:
    """A backup whose restore fails half-way, published at the local destination (unverified)."""
    from tests.pgbackup.conftest import make_request, take_backup

    pg_cluster.create_database("cli_poison")
    try:
        pg_cluster.execute(POISON, dbname="cli_poison")
        request = make_request(dr.source_conn("cli_poison"), dr.key)
        assert isinstance(request, BackupRequest)
        workdir = tmp_path / "poison-staging"
        workdir.mkdir()
        manifest: Manifest = take_backup("staged", request, open_storage(f"file://{dr.local_root}"), workdir)
        return manifest.backup_id
    finally:
        pg_cluster.drop_database("cli_poison")


@_fault(
    "CLI restore failing half-way into a new database",
    "exit 1 naming the phase and pg_restore's error; the new database is dropped",
)
def test_failed_restore_into_a_new_database_is_dropped(
    hard: Deployment, pg_cluster: TemporaryCluster, tmp_path: Path
) -> None:
    poisoned = _poisoned_backup(hard, pg_cluster, tmp_path)
    done = hard.run(
        "restore", "--target", "projectx", "--backup", poisoned, "--destination", "local", "--into-database", "cli_half"
    )
    assert done.returncode == 1, done.stderr
    assert "RESTORE FAILED: restore: " in done.stderr and "violates check constraint" in done.stderr
    assert "the new database cli_half was dropped" in done.stderr
    assert not pg_cluster.execute("SELECT 1 FROM pg_database WHERE datname = 'cli_half'")


@_fault(
    "CLI restore with --force failing half-way into an existing database",
    "a verified safety backup was taken first; exit 1, the error names it and prints the exact command, "
    "which brings the database back",
)
def test_failed_overwrite_prints_the_command_that_restores_the_safety_backup(
    hard: Deployment, pg_cluster: TemporaryCluster, tmp_path: Path
) -> None:
    poisoned = _poisoned_backup(hard, pg_cluster, tmp_path)
    pg_cluster.create_database("cli_precious")
    pg_cluster.execute(
        "CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep SELECT generate_series(1, 42)", dbname="cli_precious"
    )
    try:
        done = hard.run(
            "restore",
            "--target",
            "projectx",
            "--backup",
            poisoned,
            "--destination",
            "local",
            "--into-database",
            "cli_precious",
            "--force",
        )
        assert done.returncode == 1, done.stderr
        assert "The safety backup projectx_safety-full-" in done.stderr
        command = next(line.strip() for line in done.stderr.splitlines() if "--backup projectx_safety-full-" in line)
        assert " --destination local " in command and command.endswith("--force")
        back = subprocess.run(
            shlex.split(command),
            capture_output=True,
            text=True,
            env=hard.env,
            check=False,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert back.returncode == 0, back.stderr
        assert pg_cluster.execute("SELECT count(*) FROM keep", dbname="cli_precious") == [(42,)]
        listed = hard.run("list", "--target", "projectx", "--destination", "local")
        assert "-- safety backups of databases overwritten by restores of projectx" in listed.stdout
    finally:
        pg_cluster.drop_database("cli_precious")


def _cli_module() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pgbackup_cli_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_progress_redraws_on_a_terminal_and_logs_lines_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import io
    import logging

    cli = _cli_module()
    clock = iter([0.0, 0.5, 1.0, 2.0, 100.0, 100.0, 101.0, 200.0])
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))  # type: ignore[attr-defined]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = cli.Progress(terminal)  # type: ignore[attr-defined]
    for done in (1 << 20, 2 << 20, 3 << 20, 4 << 20):
        progress("fetch", done, 4 << 20)
    shown = terminal.getvalue()
    assert shown.count("\r\x1b[K") == 3 and shown.endswith("\n")
    assert "fetch: 2.0 MiB of 4.0 MiB (50%), 4.0 MiB/s, ETA 0 s" in shown

    caplog.set_level(logging.INFO, logger="pgbackup.cli")
    piped = cli.Progress(io.StringIO(), interval=5.0)  # type: ignore[attr-defined]
    for done in (1 << 20, 2 << 20, 3 << 20, 4 << 20):
        piped("fetch", done, 4 << 20)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetch:")]
    assert lines == ["fetch: 4.0 MiB of 4.0 MiB (100%), 41.0 KiB/s, ETA 0 s"]  # one line per interval, no \r
