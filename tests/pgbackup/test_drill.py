"""The recovery drill with real parts: a Project X database on one PostgreSQL server, a
monthly backup in moto's S3, restored into a scratch database on another server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.services import MotoServer
from pgbackup.drill import (
    PHASES,
    DrillError,
    DrillObjectives,
    DrillSettings,
    read_drills,
    record_drill,
    run_drill,
)
from pgbackup.manifest import Manifest, manifest_key
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, record_verification, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup, validation_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(moto: MotoServer) -> Storage:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return open_storage(
        f"s3://{bucket}/pgbackup", endpoint_url=moto.endpoint_url, force_path_style=True, **moto.credentials
    )


def overwrite(moto: MotoServer, storage: Storage, key: str, data: bytes) -> None:
    """Change stored bytes behind pgbackup's back (its own uploads never replace an object)."""
    bucket = storage.url.removeprefix("s3://").split("/")[0]
    moto.client().put_object(Bucket=bucket, Key=f"pgbackup/{key}", Body=data)


def scratch_databases(cluster: TemporaryCluster) -> list[str]:
    import psycopg2

    with psycopg2.connect(cluster.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill_restore%' ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def verified_monthly_backup(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    storage: Storage,
    workdir: Path,
) -> Manifest:
    manifest = take_backup("staged", make_request(source_db, gpg_key, tier="monthly"), storage, workdir)
    verification = validate_backup(
        manifest, storage, validation_settings(scratch_cluster, source_db), decryption_key, workdir / "validate"
    )
    return record_verification(manifest, verification, [storage])


@pytest.fixture
def drilled(
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    s3: Storage,
    workdir: Path,
) -> dict[str, Any]:
    counts = load_projectx(pg_cluster.dsn(source_db.dbname), scale=0.02)
    manifest = verified_monthly_backup(pg_cluster, scratch_cluster, source_db, gpg_key, decryption_key, s3, workdir)
    return {"manifest": manifest, "counts": counts, "storage": s3, "scratch": conn_info(scratch_cluster)}


def test_drill_restores_the_newest_verified_monthly_and_times_each_phase(
    drilled: dict[str, Any],
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    scratch_cluster: TemporaryCluster,
    tmp_path: Path,
) -> None:
    storage, verified = drilled["storage"], drilled["manifest"]
    # A newer monthly backup that was never verified must not be the one drilled.
    take_backup("staged", make_request(source_db, gpg_key, tier="monthly"), storage, tmp_path / "second")

    record = run_drill(
        storage, DrillSettings(target="projectx", scratch=drilled["scratch"]), decryption_key, tmp_path / "drill"
    )

    assert record.status == "passed", record.error
    assert record.backup_id == verified.backup_id
    assert list(record.phases) == list(PHASES) and all(s > 0 for s in record.phases.values())
    assert record.rto_seconds == pytest.approx(sum(record.phases.values()), abs=0.01)
    assert record.objectives["critical"]["met"] and record.objectives["full"]["met"] and record.objectives_met
    assert record.tables_checked == len(verified.source["tables"])
    assert record.rows_restored == sum(verified.source["row_counts"].values())
    assert record.rows_restored >= sum(drilled["counts"].values())
    assert record.alerts() == []
    record.raise_for_status()
    assert scratch_databases(scratch_cluster) == []  # dropped
    assert not any((tmp_path / "drill").iterdir())  # no ciphertext or plaintext left behind

    stored = record_drill(record, [("s3", storage)])
    history = read_drills(storage, "projectx")
    assert [h["key"] for h in history] == [stored["s3"]]
    assert history[0]["rto_seconds"] == record.rto_seconds and history[0]["objectives_met"] is True


def test_a_drill_slower_than_the_objective_alerts(
    drilled: dict[str, Any], decryption_key: DecryptionKey, tmp_path: Path
) -> None:
    settings = DrillSettings(
        target="projectx",
        scratch=drilled["scratch"],
        objectives=DrillObjectives(critical_seconds=0.01, full_seconds=0.02),
    )
    record = run_drill(drilled["storage"], settings, decryption_key, tmp_path / "drill")
    assert record.status == "passed" and not record.objectives_met
    alerts = record.alerts()
    assert len(alerts) == 2 and "exceeds the critical objective of 0 s" in alerts[0]
    with pytest.raises(DrillError, match="exceeds the full objective"):
        record.raise_for_status()


@pytest.mark.fault(
    "the monthly backup chosen for the drill was corrupted at rest after it was verified",
    "the drill fails in its fetch phase naming the object and the sha256 mismatch; no scratch database is created",
)
def test_corrupted_object_fails_the_drill_in_fetch(
    drilled: dict[str, Any],
    moto: MotoServer,
    decryption_key: DecryptionKey,
    scratch_cluster: TemporaryCluster,
    tmp_path: Path,
) -> None:
    storage, manifest = drilled["storage"], drilled["manifest"]
    data = bytearray(storage.get_bytes(manifest.object_key) or b"")
    data[len(data) // 2] ^= 0x01
    overwrite(moto, storage, manifest.object_key, bytes(data))
    drill_dir = tmp_path / "drill"
    record = run_drill(storage, DrillSettings(target="projectx", scratch=drilled["scratch"]), decryption_key, drill_dir)
    assert record.status == "failed" and record.error is not None
    assert record.error.startswith("fetch: ") and manifest.object_key in record.error and "sha256" in record.error
    assert "restore" not in record.phases and record.rto_seconds is None
    assert "FAILED" in record.alerts()[0]
    assert scratch_databases(scratch_cluster) == []
    assert sorted(p.name for p in drill_dir.iterdir()) == []  # the fetched copy is gone too


@pytest.mark.fault(
    "the restored database has fewer rows than the snapshot the manifest recorded",
    "the drill fails naming the table, expected and found counts, and still drops its scratch database",
)
def test_row_count_mismatch_fails_and_the_scratch_database_is_dropped(
    drilled: dict[str, Any],
    moto: MotoServer,
    decryption_key: DecryptionKey,
    scratch_cluster: TemporaryCluster,
    tmp_path: Path,
) -> None:
    storage, manifest = drilled["storage"], drilled["manifest"]
    stored = json.loads(storage.get_bytes(manifest_key(manifest.object_key)) or b"{}")
    stored["source"]["row_counts"]["public.orders"] += 5
    overwrite(moto, storage, manifest_key(manifest.object_key), json.dumps(stored).encode())
    record = run_drill(storage, DrillSettings(target="projectx", scratch=drilled["scratch"]), decryption_key, tmp_path)
    assert record.status == "failed"
    assert record.mismatches == ["public.orders"]
    expected = manifest.source["row_counts"]["public.orders"]
    assert f"public.orders: expected {expected + 5}, found {expected}" in (record.error or "")
    assert record.scratch_database is not None and scratch_databases(scratch_cluster) == []


def test_no_verified_backup_in_the_tier_is_a_failed_drill(
    s3: Storage, decryption_key: DecryptionKey, scratch_cluster: TemporaryCluster, tmp_path: Path
) -> None:
    record = run_drill(
        s3, DrillSettings(target="projectx", scratch=conn_info(scratch_cluster)), decryption_key, tmp_path
    )
    assert record.status == "failed"
    assert "no verified full backup in the monthly tier" in (record.error or "")


def test_bad_settings_are_refused() -> None:
    scratch = PgConnInfo("127.0.0.1", 5432, "postgres", "postgres", "x")
    with pytest.raises(ValueError, match="expected daily, weekly or monthly"):
        DrillSettings(target="projectx", scratch=scratch, tier="yearly")
    with pytest.raises(ValueError, match="critical_seconds <= full_seconds"):
        DrillObjectives(critical_seconds=7200, full_seconds=3600)
