"""The Backups page's API on a real ``airflow standalone`` with the plugin, over real S3 (moto).

Storage holds one real backup of ``projectx`` (dumped, encrypted, uploaded to S3 and local
disk, restore-verified on a scratch server by the engine) and the history of ``analytics``
(the report sample's year of backups, drills and audit, plus enough more to make 1,000
backups), the monitor's alert state and a monthly report. Every endpoint is called without
a token (401), with a forged one (403), as a viewer (reads yes, restore no) and as an admin.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.airflow_runner import AirflowStandalone
from devtools.demo import postgres_connection
from devtools.gpg_keys import generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.report_sample import SampleHistory, build_sample
from devtools.services import MotoServer
from pgbackup import backup
from pgbackup.backup import BackupRequest
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.manifest import Manifest, iso, manifest_key
from pgbackup.monitor import StoredState, empty_state, save_state
from pgbackup.pgconn import PgConnInfo
from pgbackup.report import store_report
from pgbackup.restore import DecryptionKey, ValidationSettings, record_verification, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]

BUCKET = "backups-ui"
PREFIX = "pg"
BULK_TARGET = "analytics"
BULK_BACKUPS = 1000  # backups of BULK_TARGET in storage, for the latency figure
VERIFY_DELAY = timedelta(minutes=9)
USERS = {"admin": "admin", "viewer": "viewer"}
ENDPOINTS = (
    "/pgbackup/",
    "/pgbackup/api/overview",
    "/pgbackup/api/backups",
    "/pgbackup/api/backups/{backup_id}",
    "/pgbackup/api/backups/{backup_id}/restore",
    "/pgbackup/api/reports",
    "/pgbackup/reports/{report}",
    "/pgbackup/api/permissions",
)


@dataclass
class BackupsUi:
    airflow: AirflowStandalone
    s3: Storage
    backup: Manifest  # the real, verified projectx backup
    report: str  # its file name under reports/
    counts: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            body = json.dumps({"username": user, "password": USERS[user]}).encode()
            request = urllib.request.Request(
                f"{self.airflow.url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self.tokens[user] = json.loads(response.read())["access_token"]
        return self.tokens[user]

    def get(self, path: str, user: str | None = "admin", token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        headers = {}
        if user is not None or token is not None:
            headers["Authorization"] = f"Bearer {token or self.token(user or 'admin')}"
        request = urllib.request.Request(f"{self.airflow.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}

    def json(self, path: str, user: str = "admin") -> Any:
        status, body, _ = self.get(path, user)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


def _pg(cluster: TemporaryCluster, dbname: str, label: str) -> PgConnInfo:
    return PgConnInfo(cluster.host, cluster.port, cluster.user, dbname, cluster.password, label=label)


def real_backup(
    source: TemporaryCluster, scratch: TemporaryCluster, key: Any, storages: list[Storage], work: Path
) -> Manifest:
    """What pg_backup_daily's tasks do, by the same engine calls: dump, compress, encrypt, upload, verify."""
    request = BackupRequest(
        target="projectx",
        source=_pg(source, "projectx", "projectx"),
        kind="full",
        compression=CompressionConfig("zstd", 3),
        encryption=EncryptionConfig((key.email,), (str(key.public_key_file),), "gpg_private"),
        public_key_files=(key.public_key_file,),
    )
    work.mkdir(parents=True, exist_ok=True)
    manifest = backup.dump_to_file(request, work)
    manifest = backup.compress_file(manifest, request.compression, work)
    manifest = backup.encrypt_file(manifest, request, work)
    uploaded = [
        backup.upload_artifact(manifest, work / backup.ENCRYPTED_FILE, storage, name)
        for storage, name in zip(storages, ("s3", "local"), strict=True)
    ]
    settings = ValidationSettings(scratch=_pg(scratch, "postgres", "scratch"), source=request.source)
    verification = validate_backup(
        uploaded[0], storages[0], settings, DecryptionKey(key.private_key_armored, key.passphrase), work / "validate"
    )
    return record_verification(uploaded[0], verification, storages)


def bulk_backups(moto: MotoServer, start: datetime, count: int) -> None:
    """``count`` more manifests (with tiny objects) of BULK_TARGET, older than the sample history."""
    client = moto.client()

    def put(i: int) -> None:
        created = start - timedelta(hours=6 * (i + 1))
        kind = ("full", "schema", "data")[i % 3]
        key = f"{BULK_TARGET}/daily/{created:%Y-%m-%d}/{kind}_{created:%Y%m%d_%H%M%S}_{i:06d}.dump.zst.gpg"
        manifest = Manifest(
            backup_id=f"{BULK_TARGET}-{kind}-{created:%Y%m%dT%H%M%S}.000000Z-b{i:07d}",
            target=BULK_TARGET,
            kind=kind,
            tier="daily",
            object_key=key,
            created_at=iso(created),
            artifact={"sha256": hashlib.sha256(key.encode()).hexdigest(), "size": 40_000_000 + i},
            stages={"compress": {"ratio": 4.1}},
            source={"row_counts": {} if kind == "schema" else {"public.events": 1_000_000 + i}},
            verification={
                "status": "passed",
                "restore_seconds": 95.0,
                "verified_at": iso(created + timedelta(minutes=9)),
            },
        )
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=b"stand-in object")
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{manifest_key(key)}", Body=manifest.to_json())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, range(count)))


def write_config(path: Path, local: Path, key_file: Path) -> None:
    config = {
        "targets": [
            {"name": "projectx", "postgres_conn_id": "projectx_db", "validation": {"scratch_conn_id": "scratch"}},
            {"name": BULK_TARGET, "postgres_conn_id": "projectx_db", "validation": {"scratch_conn_id": "scratch"}},
        ],
        "destinations": [
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "moto_s3", "bucket": BUCKET, "prefix": PREFIX},
            {"name": "local", "type": "local", "path": str(local)},
        ],
        "encryption": {
            "recipients": ["ui@projectx.example"],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
    }
    path.write_text(json.dumps(config))


@contextmanager
def backups_ui_env(base: Path) -> Iterator[BackupsUi]:
    """Everything above, started under ``base``; stopped on exit (the browser test and the demo use it too)."""
    with TemporaryCluster() as source, TemporaryCluster() as scratch, MotoServer() as moto:
        source.create_database("projectx")
        counts = load_projectx(source.dsn("projectx"), 0.02)
        moto.create_bucket(BUCKET)
        s3 = open_storage(f"s3://{BUCKET}/{PREFIX}", endpoint_url=moto.endpoint_url, **moto.credentials)
        local = open_storage(f"file://{base / 'local'}")
        key = generate_key(base / "keys", "ui@projectx.example")
        made = real_backup(source, scratch, key, [s3, local], base / "work")
        html, history = build_sample(s3, SampleHistory(target=BULK_TARGET))
        report = store_report(html, s3, f"{history.run_at:%Y-%m}").removeprefix("reports/")
        bulk_backups(moto, history.run_at - timedelta(days=400), BULK_BACKUPS - len(history.written))
        state = empty_state()
        state["active"]["freshness:analytics:daily"] = {
            "first_seen": iso(datetime.now(UTC) - timedelta(hours=3)),
            "last_alerted": iso(datetime.now(UTC) - timedelta(hours=3)),
            "message": "analytics daily: newest verified backup is 30.0 h old (RPO objective 26.0 h)",
            "target": BULK_TARGET,
            "check": "freshness",
            "alerts": 1,
        }
        save_state(s3, StoredState(empty_state()), state)
        config = base / "pgbackup.yaml"
        write_config(config, base / "local", key.public_key_file)
        creds = moto.credentials
        env = {
            "PGBACKUP_CONFIG": str(config),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW_CONN_PROJECTX_DB": postgres_connection(source),
            "AIRFLOW_CONN_SCRATCH": postgres_connection(scratch),
            "AIRFLOW_CONN_MOTO_S3": json.dumps(
                {
                    "conn_type": "aws",
                    "login": creds["aws_access_key_id"],
                    "password": creds["aws_secret_access_key"],
                    "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"},
                }
            ),
            "AIRFLOW_CONN_GPG_PRIVATE": json.dumps(
                {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
            ),
        }
        (base / "airflow").mkdir()
        # Known passwords for both users: the simple auth manager keeps those it finds in its file.
        (base / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
        with AirflowStandalone(base / "airflow", env) as airflow:
            airflow.wait_for_dag("pg_restore_manual")
            yield BackupsUi(airflow, s3, made, report, counts)


@pytest.fixture(scope="module")
def backups_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupsUi]:
    with backups_ui_env(tmp_path_factory.mktemp("backups_ui")) as ui:
        yield ui


def _paths(ui: BackupsUi) -> list[str]:
    return [p.format(backup_id=ui.backup.backup_id, report=ui.report) for p in ENDPOINTS]


# -- authorization ---------------------------------------------------------------------------------


@pytest.mark.fault("a request to the Backups page without any Airflow token", "401 on every endpoint, no data")
def test_every_endpoint_refuses_a_request_without_a_token(backups_ui: BackupsUi) -> None:
    for path in _paths(backups_ui):
        status, body, _ = backups_ui.get(path, user=None)
        assert status == 401, (path, status, body[:200])
        assert b"projectx" not in body


@pytest.mark.fault("a request to the Backups page with a forged token", "403 on every endpoint, no data")
def test_every_endpoint_refuses_a_forged_token(backups_ui: BackupsUi) -> None:
    forged = backups_ui.token("admin")[:-6] + "AAAAAA"
    for path in _paths(backups_ui):
        status, body, _ = backups_ui.get(path, user=None, token=forged)
        assert status == 403, (path, status, body[:200])
        assert b"projectx" not in body


@pytest.mark.fault(
    "a user who may read the backup DAGs but not trigger pg_restore_manual",
    "reads the page, is refused the restore form (403) and is told restore is not allowed",
)
def test_a_viewer_reads_but_may_not_restore(backups_ui: BackupsUi) -> None:
    for path in _paths(backups_ui):
        status, body, _ = backups_ui.get(path, user="viewer")
        expected = 403 if path.endswith("/restore") else 200
        assert status == expected, (path, status, body[:200])
    assert backups_ui.json("/pgbackup/api/permissions", "viewer") == {"read": True, "restore": False}
    assert backups_ui.json("/pgbackup/api/permissions", "admin") == {"read": True, "restore": True}


def test_the_plugin_registers_the_app_and_a_nav_entry(backups_ui: BackupsUi) -> None:
    plugins = backups_ui.json("/api/v2/plugins")["plugins"]
    ours = next(p for p in plugins if p["name"] == "pgbackup_ui")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/pgbackup"
    view = ours["external_views"][0]
    assert (view["name"], view["url_route"], view["destination"]) == ("Backups", "backups", "nav")


# -- what the page shows ---------------------------------------------------------------------------


def test_the_page_is_one_self_contained_document(backups_ui: BackupsUi) -> None:
    status, body, headers = backups_ui.get("/pgbackup/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "<title>Backups" in page
    # Nothing fetched from elsewhere: no CDN, no font service.
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_overview_shows_rpo_status_restore_tests_drills_and_alerts(backups_ui: BackupsUi) -> None:
    overview = backups_ui.json("/pgbackup/api/overview")
    targets = {t["target"]: t for t in overview["targets"]}
    projectx = targets["projectx"]
    daily = next(t for t in projectx["tiers"] if t["tier"] == "daily")
    assert daily["status"] == "green" and daily["backup"]["backup_id"] == backups_ui.backup.backup_id
    assert daily["backup"]["verified_at_destinations"] == ["s3", "local"]
    assert {t["tier"]: t["status"] for t in projectx["tiers"]}["weekly"] == "red"  # none yet
    assert projectx["last_restore_test"]["result"] == "passed"
    assert projectx["last_restore_test"]["restore_seconds"] == backups_ui.backup.verification["restore_seconds"]
    assert projectx["alerts"] == []
    analytics = targets[BULK_TARGET]
    assert analytics["backups"] == BULK_BACKUPS
    assert analytics["last_drill"]["result"] == "passed" and analytics["last_drill"]["rto_seconds"] > 0
    assert [a["check"] for a in analytics["alerts"]] == ["freshness"]
    assert [d["name"] for d in overview["destinations"]] == ["s3", "local"]


def test_catalog_filters_and_pages(backups_ui: BackupsUi) -> None:
    everything = backups_ui.json("/pgbackup/api/backups?page_size=100")
    assert everything["total"] == BULK_BACKUPS + 1
    assert len(everything["backups"]) == 100
    created = [b["created_at"] for b in everything["backups"]]
    assert created == sorted(created, reverse=True)
    second = backups_ui.json("/pgbackup/api/backups?page_size=100&page=2")["backups"]
    assert not {b["backup_id"] for b in second} & {b["backup_id"] for b in everything["backups"]}
    projectx = backups_ui.json("/pgbackup/api/backups?target=projectx")
    assert [b["backup_id"] for b in projectx["backups"]] == [backups_ui.backup.backup_id]
    row = projectx["backups"][0]
    assert row["rows"] == sum(backups_ui.backup.source["row_counts"].values()) > 0
    assert row["state"] == "verified" and row["copies"] == ["s3", "local"]
    assert row["compression_ratio"] > 1
    failed = backups_ui.json(f"/pgbackup/api/backups?target={BULK_TARGET}&state=failed")
    assert failed["total"] == 1 and failed["backups"][0]["kind"] == "data"
    monthly = backups_ui.json("/pgbackup/api/backups?tier=monthly&kind=full&page_size=500")
    assert monthly["total"] == 13 and {b["tier"] for b in monthly["backups"]} == {"monthly"}
    for bad in ("state=lost", "target=nobody", "page=0", "page_size=100000"):
        assert backups_ui.get(f"/pgbackup/api/backups?{bad}")[0] in (400, 422), bad


def test_detail_shows_the_manifest_run_link_and_history_without_secrets(backups_ui: BackupsUi) -> None:
    made = backups_ui.backup
    detail = backups_ui.json(f"/pgbackup/api/backups/{made.backup_id}")
    assert detail["row_counts"] == dict(sorted(made.source["row_counts"].items()))
    assert detail["versions"]["pg_dump"] == made.source["pg_dump_version"]
    assert detail["keys"] and all(k.get("fingerprint") for k in detail["keys"])
    assert [h["event"] for h in detail["history"]][:1] == ["backup"]
    assert {(h["event"], h.get("destination"), h.get("result")) for h in detail["history"]} >= {
        ("verification", "s3", "passed"),
        ("verification", "local", "passed"),
    }
    assert detail["run"] == {"dag_id": "pg_backup_daily", "run_id": None, "url": "/dags/pg_backup_daily/runs"}
    text = json.dumps(detail)
    creds = json.loads(backups_ui.airflow.env()["AIRFLOW_CONN_MOTO_S3"])
    gpg = json.loads(backups_ui.airflow.env()["AIRFLOW_CONN_GPG_PRIVATE"])
    for secret in (creds["password"], gpg["password"], "X-Amz-Signature", "PRIVATE KEY"):
        assert secret not in text
    status, _, _ = backups_ui.get("/pgbackup/api/backups/projectx-full-19990101T000000.000000Z-nothere")
    assert status == 404


def test_restore_form_preselects_exactly_this_backup(backups_ui: BackupsUi) -> None:
    made = backups_ui.backup
    form = backups_ui.json(f"/pgbackup/api/backups/{made.backup_id}/restore")
    assert form["dag_id"] == "pg_restore_manual" and form["verified"] is True
    assert form["conf"] == {
        "target": "projectx",
        "backup": "exact_id",
        "backup_id": made.backup_id,
        "destination": "s3",
    }
    # The conf is one pg_restore_manual accepts: its params name these keys and choices.
    params = backups_ui.json("/api/v2/dags/pg_restore_manual/details")["params"]
    assert set(form["conf"]) <= set(params)
    assert "exact_id" in params["backup"]["schema"]["enum"]


def test_monthly_report_is_served_as_an_inert_document(backups_ui: BackupsUi) -> None:
    reports = backups_ui.json("/pgbackup/api/reports")["reports"]
    assert [r["name"] for r in reports] == [backups_ui.report]
    status, body, headers = backups_ui.get(f"/pgbackup/reports/{backups_ui.report}")
    assert status == 200 and b"<html" in body.lower() and BULK_TARGET.encode() in body
    assert headers["content-security-policy"].startswith("sandbox")
    assert backups_ui.get("/pgbackup/reports/..%2Fpgbackup.yaml")[0] in (400, 404)
    assert backups_ui.get("/pgbackup/reports/1999-01.html")[0] == 404


def test_answers_well_under_a_second_for_a_thousand_backups(backups_ui: BackupsUi) -> None:
    first = f"/pgbackup/api/backups/{backups_ui.backup.backup_id}"
    started = time.monotonic()
    cold = backups_ui.get("/pgbackup/api/overview?refresh=1")  # reads every manifest list again, now
    refresh_seconds = time.monotonic() - started
    assert cold[0] == 200
    timings: dict[str, list[float]] = {}
    for _ in range(10):
        for name, path in (
            ("overview", "/pgbackup/api/overview"),
            ("catalog page", "/pgbackup/api/backups?page_size=50"),
            ("filtered page", f"/pgbackup/api/backups?target={BULK_TARGET}&state=verified&tier=daily&page=5"),
            ("detail", first),
        ):
            started = time.monotonic()
            status, _, _ = backups_ui.get(path)
            timings.setdefault(name, []).append(time.monotonic() - started)
            assert status == 200
    figures = {name: round(statistics.median(values) * 1000) for name, values in timings.items()}
    worst = {name: round(max(values) * 1000) for name, values in timings.items()}
    print(
        f"\nBackups page, {BULK_BACKUPS + 1} backups on moto S3: median ms {figures}, worst ms {worst}, "
        f"full re-read of storage {refresh_seconds:.2f} s"
    )
    assert max(max(v) for v in timings.values()) < 1.0, worst


def test_the_page_names_the_dags_the_package_builds() -> None:
    from pgbackup_airflow import dag_factory, restore_dag
    from pgbackup_airflow.operators import restore
    from pgbackup_airflow.ui import app

    assert app.BACKUP_DAG_IDS == {
        "daily": dag_factory.DAILY_DAG_ID,
        "weekly": dag_factory.WEEKLY_DAG_ID,
        "monthly": dag_factory.MONTHLY_DAG_ID,
    }
    assert (app.RESTORE_DAG_ID, app.EXACT_ID) == (restore_dag.RESTORE_DAG_ID, restore.EXACT_ID)
