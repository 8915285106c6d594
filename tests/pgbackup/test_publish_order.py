"""The manifest is written last: an upload that fails leaves no manifest at that destination.

Catches the mutation "manifest written before the staged upload" (issue 7, item 14): the
destination really fails mid-upload (a full disk, or the object's path taken), and the
manifest, which would fit, must still not be there.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.services import MotoServer
from devtools.tmpfs import NOT_ROOT_REASON, can_mount, mounted_tmpfs
from pgbackup import backup
from pgbackup.catalog import read_catalog
from pgbackup.errors import PgBackupError
from pgbackup.manifest import MANIFEST_SUFFIX, Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import make_request

pytestmark = pytest.mark.integration

INCOMPRESSIBLE_ROWS = 40_000  # ~1.3 MB of random bytes: larger than the small destination disk
RESET_AFTER_BYTES = 256 * 1024  # far more than a manifest, far less than the artifact


def _staged_artifact(cluster: TemporaryCluster, source: PgConnInfo, key: GeneratedKey, workdir: Path) -> Manifest:
    cluster.execute(
        "CREATE TABLE blobs (id int PRIMARY KEY, payload bytea); "
        "INSERT INTO blobs SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') "
        f"FROM generate_series(1, {INCOMPRESSIBLE_ROWS}) g",
        dbname=source.dbname,
    )
    request = make_request(source, key)
    manifest = backup.dump_to_file(request, workdir)
    manifest = backup.compress_file(manifest, request.compression, workdir)
    return backup.encrypt_file(manifest, request, workdir)


def _files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.fault(
    "the destination's disk fills during the staged upload",
    "the upload fails naming the object; no manifest (nor object) is left at that destination",
)
def test_upload_that_fills_the_destination_disk_leaves_no_manifest(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path, tmp_path: Path
) -> None:
    if not can_mount():
        pytest.skip(NOT_ROOT_REASON)
    manifest = _staged_artifact(pg_cluster, source_db, gpg_key, workdir)
    artifact = workdir / backup.ENCRYPTED_FILE
    assert artifact.stat().st_size > 1_000_000
    with mounted_tmpfs(tmp_path / "destination", 512 * 1024) as root:
        storage = open_storage(f"file://{root}")
        with pytest.raises(PgBackupError) as failure:
            backup.upload_artifact(manifest, artifact, storage, "local")
        assert manifest.object_key in str(failure.value)
        assert not any(name.endswith(MANIFEST_SUFFIX) for name in _files_below(root)), _files_below(root)
        assert _files_below(root) == []
        assert read_catalog(storage, "projectx").backups == []


@pytest.mark.fault(
    "the staged upload fails because the object's path is taken at the destination",
    "the upload fails; no manifest is written beside the object's key",
)
def test_upload_refused_by_the_destination_leaves_no_manifest(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path, tmp_path: Path
) -> None:
    manifest = _staged_artifact(pg_cluster, source_db, gpg_key, workdir)
    root = tmp_path / "destination"
    # A directory where the object must go: every write of the object fails, the manifest beside it would not.
    (root / manifest.object_key).mkdir(parents=True)
    storage = open_storage(f"file://{root}")
    with pytest.raises(PgBackupError):
        backup.upload_artifact(manifest, workdir / backup.ENCRYPTED_FILE, storage, "local")
    assert not any(name.endswith(MANIFEST_SUFFIX) for name in _files_below(root)), _files_below(root)
    assert read_catalog(storage, "projectx").backups == []


@pytest.mark.fault(
    "the S3 connection is reset in the middle of every upload of the staged artifact",
    "the upload fails after its retries; no manifest (nor object) is left in the bucket",
)
def test_s3_upload_reset_mid_transfer_leaves_no_manifest(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path, moto: MotoServer
) -> None:
    manifest = _staged_artifact(pg_cluster, source_db, gpg_key, workdir)
    bucket = f"publish-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    with FaultProxy(moto.endpoint_url) as proxy:
        storage = open_storage(f"s3://{bucket}", endpoint_url=proxy.url, **moto.credentials)
        proxy.reset_after(RESET_AFTER_BYTES)  # every connection: retries fail too
        with pytest.raises(PgBackupError):
            backup.upload_artifact(manifest, workdir / backup.ENCRYPTED_FILE, storage, "local")
        assert proxy.resets >= 1
    stored = sorted(o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", []))
    assert not any(key.endswith(MANIFEST_SUFFIX) for key in stored), stored
    assert stored == []
