"""The two-command demo: real PostgreSQL, a local S3 (moto server), a fresh gpg key and a
real Airflow 3 standalone running ``pg_backup_daily``.

    python -m devtools.demo run     # set up, trigger, wait, print the result; Ctrl-C stops everything
    python -m devtools.demo stop    # stop a demo running in another terminal
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / ".demo"
DAG_ID = "pg_backup_daily"
BUCKET = "projectx-backups"
TARGET = "projectx"
RECIPIENT = "backups@projectx.example"


def write_demo_config(path: Path, *, backups_dir: Path, key_file: Path, staging: Path) -> None:
    config = {
        "owner": "demo",
        "retries": 1,
        "retry_delay_seconds": 5,
        "staging_dir": str(staging),
        "targets": [
            {
                "name": TARGET,
                "postgres_conn_id": "projectx_db",
                "profile": "plain",
                "validation": {"scratch_conn_id": "pgbackup_scratch"},
            }
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(backups_dir)},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "demo_s3", "bucket": BUCKET, "prefix": "pgbackup"},
        ],
        "compression": {"algorithm": "zstd"},
        "encryption": {
            "recipients": [RECIPIENT],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "pgbackup_gpg_private_key",
        },
        "retention": {"daily_days": 30, "min_keep": 3},
        "slack": {"conn_id": "slack_backup_alerts"},
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML


def postgres_connection(cluster: Any) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": cluster.host,
            "port": cluster.port,
            "login": cluster.user,
            "password": cluster.password,
            "schema": "postgres",
        }
    )


def airflow_connections(
    source: Any, scratch: Any, moto: Any, slack_url: str, private_key: str, passphrase: str
) -> dict[str, str]:
    """Connections as AIRFLOW_CONN_* variables (the demo's secrets backend)."""
    creds = moto.credentials
    return {
        "AIRFLOW_CONN_PROJECTX_DB": postgres_connection(source),
        "AIRFLOW_CONN_PGBACKUP_SCRATCH": postgres_connection(scratch),
        "AIRFLOW_CONN_DEMO_S3": json.dumps(
            {
                "conn_type": "aws",
                "login": creds["aws_access_key_id"],
                "password": creds["aws_secret_access_key"],
                "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"},
            }
        ),
        "AIRFLOW_CONN_SLACK_BACKUP_ALERTS": json.dumps(
            {"conn_type": "slackwebhook", "password": slack_url}
        ),  # a full URL is allowed
        "AIRFLOW_CONN_PGBACKUP_GPG_PRIVATE_KEY": json.dumps(
            {"conn_type": "generic", "password": passphrase, "extra": {"private_key": private_key}}
        ),
    }


def print_restore_howto(airflow_url: str, config_path: Path, env: dict[str, str]) -> None:
    """How to restore the demo's backup from the UI and, with Airflow down, from the CLI."""
    # The CLI reads the same AIRFLOW_CONN_* values; they are the demo's throwaway secrets.
    env_file = DEMO_DIR / "cli.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    print("\nBackups page (catalog, RPO, restore tests, 'Restore this'):")
    print(f"    {airflow_url}/plugin/backups")
    print("restore from the UI: trigger pg_restore_manual (defaults: latest verified backup into a NEW database)")
    print(f"    {airflow_url}/dags/pg_restore_manual  ->  Trigger")
    print("restore with Airflow down (the break-glass CLI, same config and connections):")
    print(f"    source {env_file.relative_to(REPO)}")
    print(f"    .venv/bin/python include/scripts/pgbackup.py --config {config_path.relative_to(REPO)} list")
    print(
        f"    .venv/bin/python include/scripts/pgbackup.py --config {config_path.relative_to(REPO)} "
        f"restore --target {TARGET} --backup latest --into-database {TARGET}_restored"
    )


def ensure_system_packages() -> None:
    from devtools.system_packages import ensure

    ensure()


def run(args: argparse.Namespace) -> int:
    ensure_system_packages()
    from devtools.airflow_runner import AirflowStandalone
    from devtools.gpg_keys import generate_key
    from devtools.pg_cluster import TemporaryCluster
    from devtools.projectx_data import load_projectx
    from devtools.services import MotoServer, SlackReceiver

    if DEMO_DIR.exists():
        _stop_previous()
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir()
    (DEMO_DIR / "demo.pid").write_text(str(os.getpid()))
    # Ctrl-C and `demo stop` (SIGTERM) unwind the same way. SIGINT is set explicitly: a shell
    # that starts us in the background hands it over ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    backups_dir = DEMO_DIR / "backups"
    stack = contextlib.ExitStack()
    try:
        with stack:
            step("starting the source PostgreSQL (Project X) and a separate scratch server for restore tests")
            source = stack.enter_context(TemporaryCluster())
            scratch = stack.enter_context(TemporaryCluster())
            step(f"loading Project X (scale {args.scale})")
            started = time.monotonic()
            counts = load_projectx(source.dsn("postgres"), args.scale)
            print(f"    {sum(counts.values()):,} rows in {time.monotonic() - started:.1f}s: {counts}")
            step("starting a local S3 API (moto server) and a Slack webhook receiver")
            moto = stack.enter_context(MotoServer())
            moto.create_bucket(BUCKET)
            slack = stack.enter_context(SlackReceiver())
            step("generating a demo gpg key")
            key = generate_key(DEMO_DIR / "keys", RECIPIENT)
            config_path = DEMO_DIR / "pgbackup.yaml"
            write_demo_config(
                config_path, backups_dir=backups_dir, key_file=key.public_key_file, staging=DEMO_DIR / "staging"
            )
            env = {
                "PGBACKUP_CONFIG": str(config_path),
                **airflow_connections(source, scratch, moto, slack.url, key.private_key_armored, key.passphrase),
            }
            step("starting Airflow 3 standalone (scheduler, triggerer, dag processor, API server)")
            airflow = stack.enter_context(AirflowStandalone(DEMO_DIR / "airflow", env, port=args.port))
            airflow.wait_for_dag(DAG_ID)
            airflow.unpause(DAG_ID)
            step(f"triggering {DAG_ID} (kind=full) and waiting for it")
            run_id = airflow.trigger(DAG_ID, {"kind": "full"})
            state = airflow.wait_for_run(DAG_ID, run_id, timeout=args.timeout)
            report(airflow, run_id, state, backups_dir, moto, slack)
            if state != "success":
                return 1
            print(f"\nAirflow UI: {airflow.url}  login: admin / {airflow.admin_password()}")
            print_restore_howto(airflow.url, config_path, env)
            if args.exit:
                return 0
            print("Press Ctrl-C (or run `make demo-stop`) to stop everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping: Airflow, moto, PostgreSQL ...")
        return 0
    finally:
        (DEMO_DIR / "demo.pid").unlink(missing_ok=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def report(airflow: Any, run_id: str, state: str, backups_dir: Path, moto: Any, slack: Any) -> None:
    print(f"\nrun {run_id}: {state}")
    for ti in sorted(airflow.task_instances(DAG_ID, run_id), key=lambda t: (t["start_date"] or "", t["map_index"])):
        suffix = f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""
        print(f"    {ti['task_id']}{suffix}: {ti['state']}")
    if state != "success":
        print(f"\nthe run failed; Slack received {len(slack.posts)} alert(s); logs under {DEMO_DIR / 'airflow'}")
        for post in slack.posts:
            print("    slack:", (post.body or {}).get("text", post.raw[:200]))
        return
    summary = airflow.xcom(DAG_ID, run_id, f"{TARGET}.validate")
    key = summary["object_key"]
    manifest = json.loads((backups_dir / (key + ".manifest.json")).read_text())
    verification = manifest["verification"]
    print("\nbackup")
    print(f"    local : {backups_dir / key}")
    print(f"    s3    : s3://{BUCKET}/pgbackup/{key}  (endpoint {moto.endpoint_url})")
    stages = manifest["stages"]
    print(
        f"    size  : {manifest['artifact']['size']:,} bytes (dump {stages['dump']['output_bytes']:,} bytes,"
        f" compression ratio {stages['compress']['ratio']})"
    )
    print(f"    sha256: {manifest['artifact']['sha256']}")
    print(f"    gpg   : {[r['fingerprint'] for r in manifest['artifact']['encryption']['recipients']]}")
    print(
        f"\nvalidation: {verification['status']} (restored from {verification['restored_from']} into "
        f"{verification['scratch_database']} in {verification['restore_seconds']}s)"
    )
    for table, row in verification["tables"].items():
        verdict = "ok" if row["ok"] else "MISMATCH"
        print(f"    {table:<28} snapshot {row['expected']:>9,}  restored {row['found']:>9,}  {verdict}")
    for query in verification["queries"]:
        print(f"    {query['query']:<40} {query['status']} {query.get('result', '')}")


def _stop_previous() -> int:
    pid_file = DEMO_DIR / "demo.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
    return 0


def stop(_: argparse.Namespace) -> int:
    _stop_previous()
    print("demo stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="set up everything and run pg_backup_daily")
    run_parser.add_argument("--scale", type=float, default=1.0, help="Project X size (1.0: ~300k rows)")
    run_parser.add_argument("--port", type=int, default=8080, help="Airflow UI/API port")
    run_parser.add_argument("--timeout", type=float, default=900)
    run_parser.add_argument("--exit", action="store_true", help="stop everything once the run has finished")
    run_parser.set_defaults(func=run)
    sub.add_parser("stop", help="stop a running demo").set_defaults(func=stop)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
