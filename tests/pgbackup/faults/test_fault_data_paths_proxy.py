"""Both data paths (staged and stream) through the fault proxy, against moto and the GCS
emulator: a short 5xx burst is absorbed; an endpoint that hangs mid-upload fails the backup
within the bound, publishes nothing, and (stream) leaves no session on the source database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.services import GcsEmulator, MotoServer
from pgbackup.errors import StorageError
from pgbackup.manifest import manifest_key
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup

pytestmark = pytest.mark.integration

TIMEOUTS = {"connect_timeout": 0.5, "read_timeout": 1.0, "operation_timeout": 4.0}
BOUND = 3 * TIMEOUTS["operation_timeout"]


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        yield emulator


class Service:
    """One stand-in, a fresh bucket on it, and storages through a proxy or direct."""

    def __init__(self, name: str, server: MotoServer | GcsEmulator) -> None:
        self.name = name
        self.bucket = f"p-{uuid.uuid4().hex[:12]}"
        server.create_bucket(self.bucket)
        self.upstream = server.endpoint_url if isinstance(server, MotoServer) else server.endpoint

    def open(self, endpoint: str, **options: Any) -> Storage:
        if self.name == "s3":
            return open_storage(
                f"s3://{self.bucket}/pg",
                endpoint_url=endpoint,
                force_path_style=True,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
                **options,
            )
        return open_storage(f"gs://{self.bucket}/pg", endpoint=endpoint, **options)

    def direct(self) -> Storage:
        return self.open(self.upstream)

    def is_object_upload(self, line: str) -> bool:
        """The first request that sends backup bytes (after the create-only check)."""
        if ".manifest.json" in line:
            return False
        return line.startswith("PUT ") if self.name == "s3" else line.startswith("POST /upload/")


@pytest.fixture(params=["s3", "gcs"])
def service(request: pytest.FixtureRequest) -> Service:
    return Service(request.param, request.getfixturevalue("moto" if request.param == "s3" else "gcs"))


def _load(cluster: TemporaryCluster, db: PgConnInfo) -> None:
    cluster.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text); "
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 2000) g",
        dbname=db.dbname,
    )


def _sessions(cluster: TemporaryCluster, dbname: str) -> list[tuple[Any, ...]]:
    return cluster.execute(
        "SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    )


def _no_sessions_left(cluster: TemporaryCluster, dbname: str, wait: float = 5.0) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + wait  # a killed pg_dump's backend needs a moment to notice
    while (left := _sessions(cluster, dbname)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("data_path", ["staged", "stream"])
@pytest.mark.fault("5xx burst during a backup's upload", "retried: the backup is published and verifies")
def test_backup_survives_a_short_5xx_burst(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    service: Service,
    data_path: str,
    workdir: Path,
) -> None:
    _load(pg_cluster, source_db)
    with FaultProxy(service.upstream) as proxy:
        storage = service.open(proxy.url, **TIMEOUTS)
        proxy.fail_next(2)
        manifest = take_backup(data_path, make_request(source_db, gpg_key), storage, workdir)
        assert proxy.failed_requests == 2
        # Checked while the proxy still runs: the GCS emulator puts the upload's host into mediaLink.
        direct = service.direct()
        assert direct.stat(manifest_key(manifest.object_key)) is not None
        direct.verify(manifest.object_key, manifest.sha256, manifest.size)


@pytest.mark.parametrize("data_path", ["staged", "stream"])
@pytest.mark.fault(
    "endpoint hangs mid-upload during a backup",
    "fails in < 3x the timeouts; nothing published; no source session left",
)
def test_backup_against_an_endpoint_hanging_mid_upload(
    pg_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    service: Service,
    data_path: str,
    workdir: Path,
) -> None:
    _load(pg_cluster, source_db)
    hung: list[float] = []

    with FaultProxy(service.upstream) as proxy:

        def hang(line: str) -> None:
            if not hung and service.is_object_upload(line):
                hung.append(time.monotonic())
                proxy.blackhole()

        proxy.on_request("", hang)
        storage = service.open(proxy.url, **TIMEOUTS)
        with pytest.raises(StorageError) as excinfo:
            take_backup(data_path, make_request(source_db, gpg_key), storage, workdir)
        assert hung, "the endpoint never hung: no object upload was seen"
        elapsed = time.monotonic() - hung[0]
        print(f"\n{data_path} backup to {service.name}: failed {elapsed:.2f}s after the endpoint hung: {excinfo.value}")
        assert elapsed < BOUND
        # The exported snapshot's session (and pg_dump's) is gone, not left idle in transaction.
        assert _no_sessions_left(pg_cluster, source_db.dbname) == []
        proxy.pass_through()
    assert list(service.direct().list()) == []
