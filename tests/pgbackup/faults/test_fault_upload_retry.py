"""A staged upload (or a replication) retried after the task was killed between its object
landing and its manifest being written.

Uploads are create-only, so the retry finds its own key taken. It must complete the backup
when what is stored there is provably this run's artifact (no manifest, same size, same
sha256 read back), and keep refusing, changing nothing, in every other case: a different
object under the key, or a backup already published.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.services import MotoServer
from pgbackup import backup
from pgbackup.catalog import read_catalog
from pgbackup.errors import ObjectExistsError, StorageError
from pgbackup.manifest import Manifest, manifest_key
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        bucket = f"upload-retry-{uuid.uuid4().hex[:12]}"
        moto.create_bucket(bucket)
        return open_storage(f"s3://{bucket}", endpoint_url=moto.endpoint_url, **moto.credentials)
    root = tmp_path / "destination"
    root.mkdir()
    return open_storage(f"file://{root}")


@pytest.fixture
def staged(pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path) -> Manifest:
    """A staged backup up to the upload task: the manifest the upload task gets, the artifact in ``workdir``."""
    pg_cluster.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text); "
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 500) g",
        dbname=source_db.dbname,
    )
    request = make_request(source_db, gpg_key)
    manifest = backup.dump_to_file(request, workdir)
    manifest = backup.compress_file(manifest, request.compression, workdir)
    return backup.encrypt_file(manifest, request, workdir)


def _kill_before_manifest(storage: Storage, manifest: Manifest) -> None:
    """What storage holds when the task died after the upload, before the manifest: the object alone."""
    storage.delete(manifest_key(manifest.object_key))
    catalog = read_catalog(storage, "projectx")
    assert catalog.backups == [] and [i.key for i in catalog.incomplete] == [manifest.object_key]


def _snapshot(storage: Storage) -> dict[str, bytes | None]:
    return {info.key: storage.get_bytes(info.key) for info in storage.list("")}


def _assert_one_complete_verified_backup(storage: Storage, manifest: Manifest, published: Manifest) -> None:
    catalog = read_catalog(storage, "projectx")
    assert [m.backup_id for m in catalog.backups] == [manifest.backup_id]
    assert catalog.incomplete == [] and catalog.unreadable == [] and catalog.suspect == []
    listed = catalog.backups[0]
    assert (listed.object_key, listed.sha256, listed.size) == (manifest.object_key, manifest.sha256, manifest.size)
    assert listed.destination["url"] == storage.url and published.destination == listed.destination
    storage.verify(listed.object_key, listed.sha256, listed.size)  # the stored bytes are the backup's


@pytest.mark.fault(
    "the upload task is killed after its object landed and before its manifest; Airflow retries it",
    "the retry adopts the object (no manifest, same size and sha256 read back) and publishes "
    "one complete verified backup",
)
def test_upload_retried_after_a_kill_completes_the_backup(storage: Storage, staged: Manifest, workdir: Path) -> None:
    artifact = workdir / backup.ENCRYPTED_FILE
    backup.upload_artifact(staged, artifact, storage, "primary")
    _kill_before_manifest(storage, staged)

    published = backup.upload_artifact(staged, artifact, storage, "primary")

    assert published.destination["verified_by"] == backup.ADOPTED_VERIFIED_BY
    _assert_one_complete_verified_backup(storage, staged, published)


@pytest.mark.fault(
    "a replication task is killed after its copy landed and before its manifest; Airflow retries it",
    "the retry adopts the copy once its bytes read back as the backup's and publishes it at the target",
)
def test_replication_retried_after_a_kill_completes_the_copy(
    storage: Storage, staged: Manifest, workdir: Path, tmp_path: Path
) -> None:
    primary_root = tmp_path / "primary"
    primary_root.mkdir()
    primary = open_storage(f"file://{primary_root}")
    published = backup.upload_artifact(staged, workdir / backup.ENCRYPTED_FILE, primary, "primary")
    backup.replicate(published, primary, storage, "offsite")
    _kill_before_manifest(storage, staged)

    copied = backup.replicate(published, primary, storage, "offsite")

    _assert_one_complete_verified_backup(storage, staged, copied)


@pytest.mark.fault(
    "a retried upload finds another object under its key (different bytes, a truncated copy) or "
    "another backup's manifest there",
    "still refused with ObjectExistsError; nothing is overwritten, adopted, published or deleted",
)
@pytest.mark.parametrize("held", ["same size, other bytes", "truncated", "another backup's manifest"])
def test_upload_retry_never_adopts_anything_else(storage: Storage, staged: Manifest, workdir: Path, held: str) -> None:
    artifact = workdir / backup.ENCRYPTED_FILE
    ours = artifact.read_bytes()
    if held == "another backup's manifest":
        backup.upload_artifact(staged, artifact, storage, "primary")
        other_manifest = Manifest.from_json(storage.get_bytes(manifest_key(staged.object_key)) or b"", "test")
        other_manifest.backup_id += "-other"
        versioned = storage.get_bytes_versioned(manifest_key(staged.object_key))
        assert versioned is not None
        storage.replace_bytes(manifest_key(staged.object_key), other_manifest.to_json(), versioned[1])
    else:
        other = bytes(b ^ 0xFF for b in ours[:64]) + ours[64:] if held.startswith("same size") else ours[:-1]
        assert other != ours
        storage.put_bytes(staged.object_key, other)
    before = _snapshot(storage)

    with pytest.raises(ObjectExistsError) as refused:
        backup.upload_artifact(staged, artifact, storage, "primary")

    assert staged.object_key in str(refused.value) and "nothing was overwritten" in str(refused.value)
    assert _snapshot(storage) == before
    catalog = read_catalog(storage, "projectx")
    if held == "another backup's manifest":
        assert [m.backup_id for m in catalog.backups] == [staged.backup_id + "-other"]
    else:
        assert catalog.backups == [] and [i.key for i in catalog.incomplete] == [staged.object_key]


@pytest.mark.fault(
    "an upload task is killed after its manifest landed, before Airflow recorded success; Airflow retries it",
    "the retry finds this very backup published (same id, sha256, size; object reads back) and succeeds, "
    "writing nothing",
)
def test_upload_retried_after_publishing_succeeds_without_writing(
    storage: Storage, staged: Manifest, workdir: Path
) -> None:
    artifact = workdir / backup.ENCRYPTED_FILE
    first = backup.upload_artifact(staged, artifact, storage, "primary")
    before = _snapshot(storage)

    again = backup.upload_artifact(staged, artifact, storage, "primary")

    assert again.backup_id == first.backup_id and again.destination == first.destination
    assert _snapshot(storage) == before


@pytest.mark.fault(
    "the retried upload adopts its object, then writing the manifest fails",
    "the upload fails, no manifest is left, the adopted object stays in place (this run's, complete) "
    "and the next retry publishes it",
)
def test_adopted_object_survives_a_failed_manifest_write_for_the_next_retry(
    staged: Manifest, workdir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "destination"
    root.mkdir()
    storage = open_storage(f"file://{root}")
    artifact = workdir / backup.ENCRYPTED_FILE
    backup.upload_artifact(staged, artifact, storage, "primary")
    _kill_before_manifest(storage, staged)
    blocker = root / manifest_key(staged.object_key)
    blocker.mkdir()  # the manifest cannot be written: a directory holds its name

    with pytest.raises(StorageError):
        backup.upload_artifact(staged, artifact, storage, "primary")

    assert storage.get_bytes(staged.object_key) == artifact.read_bytes()
    assert read_catalog(storage, "projectx").backups == []
    blocker.rmdir()
    published = backup.upload_artifact(staged, artifact, storage, "primary")
    _assert_one_complete_verified_backup(storage, staged, published)
