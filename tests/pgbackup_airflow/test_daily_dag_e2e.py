"""pg_backup_daily under a real Airflow scheduler and triggerer (``airflow standalone``).

One run, four outcomes checked against real services:
- target ``projectx`` is dumped, uploaded to local disk, S3 (moto) and GCS (emulator), and
  restore-verified from the S3 copy; every destination holds a verified manifest;
- destination ``s3_down`` is unreachable: its upload is retried, then fails, and the other
  destinations still hold complete, verified copies;
- target ``broken`` has a wrong password: its dump fails naming the target, nothing of it is
  published anywhere, and Slack receives the alert;
- the deadline (6 s) is missed: the Deadline Alert reaches Slack from the triggerer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.airflow_runner import AirflowError, AirflowStandalone
from devtools.demo import postgres_connection
from devtools.gpg_keys import generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.services import GcsEmulator, MotoServer, SlackReceiver, free_port

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]
DAG_ID = "pg_backup_daily"
BUCKET = "e2e-backups"


def write_config(path: Path, backups: Path, key_file: Path, staging: Path) -> None:
    config = {
        "staging_dir": str(staging),
        "retries": 1,
        "retry_delay_seconds": 1,
        "targets": [
            {"name": "projectx", "postgres_conn_id": "projectx_db", "validation": {"scratch_conn_id": "scratch"}},
            {"name": "broken", "postgres_conn_id": "broken_db", "validation": {"scratch_conn_id": "scratch"}},
            {
                "name": "streamed",
                "postgres_conn_id": "projectx_db",
                "data_path": "stream",
                "validation": {"scratch_conn_id": "scratch"},
            },
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(backups)},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "moto_s3", "bucket": BUCKET, "prefix": "pg"},
            {"name": "gcs", "type": "gcs", "conn_id": "gcs_emulator", "bucket": BUCKET, "prefix": "pg"},
            {"name": "s3_down", "type": "s3", "conn_id": "s3_unreachable", "bucket": BUCKET},
        ],
        "encryption": {
            "recipients": ["e2e@projectx.example"],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
        "schedule": {"daily": {"deadline_minutes": 0.1}},
        "slack": {"conn_id": "slack_alerts"},
    }
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("e2e")
    with (
        TemporaryCluster() as source,
        TemporaryCluster() as scratch,
        MotoServer() as moto,
        GcsEmulator() as gcs,
        SlackReceiver() as slack,
    ):
        counts = load_projectx(source.dsn("postgres"), 0.05)
        moto.create_bucket(BUCKET)
        gcs.create_bucket(BUCKET)
        key = generate_key(base / "keys", "e2e@projectx.example")
        config = base / "pgbackup.yaml"
        write_config(config, base / "backups", key.public_key_file, base / "staging")
        creds = moto.credentials
        aws = {"login": creds["aws_access_key_id"], "password": creds["aws_secret_access_key"]}
        broken = json.loads(postgres_connection(source)) | {"password": "wrong-password"}
        env = {
            "PGBACKUP_CONFIG": str(config),
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            "AIRFLOW_CONN_PROJECTX_DB": postgres_connection(source),
            "AIRFLOW_CONN_BROKEN_DB": json.dumps(broken),
            "AIRFLOW_CONN_SCRATCH": postgres_connection(scratch),
            "AIRFLOW_CONN_MOTO_S3": json.dumps(
                {"conn_type": "aws", **aws, "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"}}
            ),
            "AIRFLOW_CONN_S3_UNREACHABLE": json.dumps(
                {
                    "conn_type": "aws",
                    **aws,
                    "extra": {
                        "endpoint_url": f"http://127.0.0.1:{free_port()}",
                        "region_name": "us-east-1",
                        "config_kwargs": {"connect_timeout": 2, "retries": {"max_attempts": 1}},
                    },
                }
            ),
            "AIRFLOW_CONN_GCS_EMULATOR": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": "e2e", "is_anonymous": True}}
            ),
            "AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
            "AIRFLOW_CONN_GPG_PRIVATE": json.dumps(
                {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
            ),
        }
        with AirflowStandalone(base / "airflow", env) as airflow:
            airflow.wait_for_dag(DAG_ID)
            airflow.unpause(DAG_ID)
            run_id = airflow.trigger(DAG_ID, {"kind": "full"})
            state = airflow.wait_for_run(DAG_ID, run_id, timeout=900)
            tasks = {(t["task_id"], t["map_index"]): t for t in airflow.task_instances(DAG_ID, run_id)}
            summaries = {}
            for target in ("projectx", "streamed"):
                try:
                    summaries[target] = airflow.xcom(DAG_ID, run_id, f"{target}.validate")
                except AirflowError:
                    summaries[target] = None  # the assertions below say why
            yield {
                "state": state,
                "tasks": tasks,
                "moto": moto,
                "gcs": gcs,
                "slack": slack,
                "counts": counts,
                "backups": base / "backups",
                "summaries": summaries,
                "airflow": airflow,
                "run_id": run_id,
                "logs": base / "airflow" / "logs",
                "secrets": {
                    "source password": source.password,
                    "scratch password": scratch.password,
                    "gpg passphrase": key.passphrase,
                    "gpg private key": key.private_key_armored.splitlines()[3],
                },
            }


def _manifests(e2e: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    """The manual run's manifest of ``target`` at local, S3 and GCS, read from storage.

    Unpausing also starts the latest scheduled slot, so pick the object the manual run's
    validate task reported.
    """
    found: dict[str, dict[str, Any]] = {}
    summary = e2e["summaries"].get(target)
    if summary is None:
        return found

    def keep(where: str, raw: bytes | str) -> None:
        manifest = json.loads(raw)
        if manifest["object_key"] == summary["object_key"]:
            found[where] = manifest

    for path in (e2e["backups"] / target).rglob("*.manifest.json"):
        keep("local", path.read_text())
    s3 = e2e["moto"].client()
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"pg/{target}/").get("Contents", []):
        if obj["Key"].endswith(".manifest.json"):
            keep("s3", s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
    bucket = e2e["gcs"].client().bucket(BUCKET)
    for blob in bucket.list_blobs(prefix=f"pg/{target}/"):
        if blob.name.endswith(".manifest.json"):
            keep("gcs", blob.download_as_bytes())
    return found


def test_the_run_fails_because_a_target_and_a_destination_failed(e2e: dict[str, Any]) -> None:
    states = {key: t["state"] for key, t in e2e["tasks"].items()}
    assert e2e["state"] == "failed"
    assert states[("projectx.dump", -1)] == "success"
    assert states[("projectx.validate", -1)] == "success"
    assert states[("broken.dump", -1)] == "failed"
    assert states[("broken.validate", -1)] in ("skipped", "upstream_failed")
    assert states[("broken.prune", -1)] == "upstream_failed"
    assert states[("projectx.cleanup_staging", -1)] == "success"
    assert states[("streamed.backup_stream", -1)] == "success"
    assert states[("streamed.validate", -1)] == "success"
    assert states[("broken.cleanup_staging", -1)] == "success"


@pytest.mark.parametrize("target", ["projectx", "streamed"])
def test_good_target_is_verified_at_every_reachable_destination(e2e: dict[str, Any], target: str) -> None:
    manifests = _manifests(e2e, target)
    assert set(manifests) == {"local", "s3", "gcs"}
    shas = {m["artifact"]["sha256"] for m in manifests.values()}
    assert len(shas) == 1
    for where, manifest in manifests.items():
        verification = manifest["verification"]
        assert verification["status"] == "passed", where
        assert verification["restored_from"].startswith(f"s3://{BUCKET}/pg/")
        assert verification["mismatches"] == []
        assert verification["restore_seconds"] > 0
        restored = {table: row["found"] for table, row in verification["tables"].items()}
        assert restored == {f"public.{t}": n for t, n in e2e["counts"].items()}
    local = manifests["local"]
    assert local["object_key"].startswith(f"{target}/daily/")
    assert (e2e["backups"] / local["object_key"]).stat().st_size == local["artifact"]["size"]
    assert e2e["summaries"][target]["verification"] == "passed"
    assert e2e["summaries"][target]["sha256"] == local["artifact"]["sha256"]
    if target == "streamed":
        assert manifests["s3"]["destination"]["name"] == "s3"  # the stream goes to the primary first
        assert manifests["local"]["stages"]["dump"]["mode"] == "stream"


def test_unreachable_destination_was_retried_then_failed_alone(e2e: dict[str, Any]) -> None:
    uploads = {
        t["rendered_fields"].get("destination", i): t
        for (task, i), t in e2e["tasks"].items()
        if task == "projectx.upload"
    }
    failed = [t for t in uploads.values() if t["state"] == "failed"]
    succeeded = [t for t in uploads.values() if t["state"] == "success"]
    assert len(failed) == 1 and len(succeeded) == 3
    assert failed[0]["try_number"] == 2  # retried once
    assert e2e["tasks"][("projectx.prune", -1)]["state"] == "upstream_failed"  # nothing pruned after a failure


def test_broken_target_published_nothing_and_alerted_slack(e2e: dict[str, Any]) -> None:
    assert not (e2e["backups"] / "broken").exists()
    assert e2e["moto"].client().list_objects_v2(Bucket=BUCKET, Prefix="pg/broken/").get("KeyCount") == 0
    assert list(e2e["gcs"].client().bucket(BUCKET).list_blobs(prefix="pg/broken/")) == []
    alert = e2e["slack"].wait_for(lambda post: "broken.dump" in json.dumps(post.body), timeout=30)
    text = alert.body["text"]
    assert "target broken" in text and "password" in text.lower()
    assert "wrong-password" not in json.dumps([p.body for p in e2e["slack"].posts])


def test_deadline_alert_reached_slack(e2e: dict[str, Any]) -> None:
    alert = e2e["slack"].wait_for(
        lambda post: "deadline missed" in json.dumps(post.body) and e2e["run_id"] in json.dumps(post.body), timeout=60
    )
    assert e2e["run_id"] in alert.body["text"]


def test_verified_backup_emitted_an_asset_event(e2e: dict[str, Any]) -> None:
    events = e2e["airflow"]._get_json("/api/v2/assets/events?limit=50")["asset_events"]
    ours = [e for e in events if e.get("source_run_id") == e2e["run_id"]]
    assert {e["source_task_id"] for e in ours} == {"projectx.validate", "streamed.validate"}
    projectx = next(e for e in ours if e["source_task_id"] == "projectx.validate")
    assert projectx["extra"]["verification"] == "passed"
    assert projectx["extra"]["sha256"] == e2e["summaries"]["projectx"]["sha256"]


def test_no_secret_reaches_task_logs_or_xcom(e2e: dict[str, Any]) -> None:
    logs = sorted(e2e["logs"].rglob("*.log"))
    assert len(logs) >= 10
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    xcoms = json.dumps(
        [
            e2e["airflow"].xcom(DAG_ID, e2e["run_id"], task)
            for task in ("projectx.dump", "projectx.encrypt", "streamed.backup_stream")
        ]
    )
    assert "projectx.dump" in text  # the logs really are the run's task logs
    for what, secret in e2e["secrets"].items():
        assert len(secret) >= 8, what
        assert secret not in text, f"{what} found in task logs"
        assert secret not in xcoms, f"{what} found in XCom"
