"""Two runs of one target started in the same second, into the same destination.

A manual run beside the scheduled one, a backfill, the CLI or a second deployment can all
start a backup of the same target in the same second (issue 7, item 1). Both runs must
succeed as two distinct backups: two keys, two manifests, both listed, and each one
restores (a real validation into the scratch server). Before unique keys and create-only
writes, the second silently replaced the first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.services import MotoServer
from pgbackup.catalog import read_catalog
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request, take_backup, validation_settings

pytestmark = pytest.mark.integration

ATTEMPTS = 4  # a loaded machine can push one start past the second boundary: then try again


def _local(tmp_path: Path, attempt: int) -> Storage:
    root = tmp_path / f"backups-{attempt}"
    root.mkdir()
    return open_storage(f"file://{root}")


def _started_second(manifest: Manifest) -> datetime:
    return datetime.fromisoformat(manifest.created_at.replace("Z", "+00:00")).replace(microsecond=0)


def _two_runs_in_one_second(run: Callable[[int], Manifest]) -> list[Manifest]:
    """Start ``run(0)`` and ``run(1)`` together, just after a second begins; both must succeed."""
    results: list[Manifest | None] = [None, None]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def one(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = run(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    time.sleep(1.02 - time.time() % 1)  # at the start of a second: the most room before the next
    threads = [threading.Thread(target=one, args=(i,), name=f"same-second-run-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    assert all(r is not None for r in results), "a run did not finish"
    return [r for r in results if r is not None]


@pytest.mark.fault(
    "two backups of one target start in the same second into the same destination",
    "both succeed as two distinct backups (distinct keys), both are listed and both restore",
)
@pytest.mark.parametrize("data_path", ["staged", "stream"])
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_runs_in_the_same_second_make_two_backups(
    backend: str,
    data_path: str,
    request: pytest.FixtureRequest,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    pg_cluster.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text); "
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 2000) g",
        dbname=source_db.dbname,
    )
    backup_request = make_request(source_db, gpg_key)
    for attempt in range(ATTEMPTS):
        if backend == "s3":
            moto: MotoServer = request.getfixturevalue("moto")
            bucket = f"same-second-{uuid.uuid4().hex[:12]}"
            moto.create_bucket(bucket)
            storage = open_storage(f"s3://{bucket}", endpoint_url=moto.endpoint_url, **moto.credentials)
        else:
            storage = _local(tmp_path, attempt)

        def run(index: int, attempt: int = attempt, storage: Storage = storage) -> Manifest:
            workdir = tmp_path / f"staging-{attempt}-{index}"
            workdir.mkdir()
            return take_backup(data_path, backup_request, storage, workdir)

        first, second = _two_runs_in_one_second(run)
        if _started_second(first) == _started_second(second):
            break
    else:
        pytest.fail(f"the two runs never started in the same second in {ATTEMPTS} attempts")

    assert first.backup_id != second.backup_id
    assert first.object_key != second.object_key
    catalog = read_catalog(storage, "projectx")
    listed = {m.object_key: m for m in catalog.backups}
    assert sorted(listed) == sorted([first.object_key, second.object_key])
    assert catalog.incomplete == [] and catalog.unreadable == []
    settings = validation_settings(scratch_cluster, source_db)
    for index, manifest in enumerate((first, second)):
        stored = listed[manifest.object_key]
        assert (stored.sha256, stored.size) == (manifest.sha256, manifest.size)
        storage.verify(manifest.object_key, manifest.sha256, manifest.size)
        record = validate_backup(manifest, storage, settings, decryption_key, tmp_path / f"validate-{index}")
        assert record["status"] == "passed", record
