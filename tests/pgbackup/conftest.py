"""Engine fixtures: a second real cluster for restore tests, real gpg keys, backup requests."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.gpg_keys import GeneratedKey, generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.services import MotoServer
from pgbackup import backup
from pgbackup.backup import BackupRequest
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.manifest import Manifest, backup_id, iso, manifest_key, name_suffix, object_key
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, ValidationSettings
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

RECIPIENT = "backups@projectx.example"
_names = itertools.count(1)


def conn_info(cluster: TemporaryCluster, dbname: str = "postgres", label: str = "") -> PgConnInfo:
    return PgConnInfo(cluster.host, cluster.port, cluster.user, dbname, cluster.password, label=label or dbname)


def scratch_databases(cluster: TemporaryCluster) -> set[str]:
    """Databases named like validation's scratch databases. The scratch server is shared by a
    worker's whole session, so tests compare this before and after, never against empty."""
    return {row[0] for row in cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_restore_%'")}


@pytest.fixture(scope="session")
def scratch_cluster() -> Iterator[TemporaryCluster]:
    """A separate server for restore tests, as the config requires."""
    with TemporaryCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> GeneratedKey:
    return generate_key(tmp_path_factory.mktemp("keys"), RECIPIENT)


@pytest.fixture(scope="session")
def decryption_key(gpg_key: GeneratedKey) -> DecryptionKey:
    return DecryptionKey(gpg_key.private_key_armored, gpg_key.passphrase)


@pytest.fixture
def source_db(pg_cluster: TemporaryCluster) -> Iterator[PgConnInfo]:
    name = f"source_{next(_names)}"
    pg_cluster.create_database(name)
    yield conn_info(pg_cluster, name, f"target test ({name})")
    pg_cluster.drop_database(name)


def make_request(source: PgConnInfo, key: GeneratedKey, kind: str = "full", **overrides: object) -> BackupRequest:
    values: dict[str, object] = {
        "target": "projectx",
        "source": source,
        "kind": kind,
        "compression": CompressionConfig("zstd", 3),
        "encryption": EncryptionConfig((key.email,), (str(key.public_key_file),), "unused"),
        "public_key_files": (key.public_key_file,),
    }
    values.update(overrides)
    return BackupRequest(**values)  # type: ignore[arg-type]


def fake_manifest(
    created: datetime,
    *,
    verified: bool = True,
    kind: str = "full",
    target: str = "projectx",
    uploaded_after: timedelta | None = None,
) -> Manifest:
    """The manifest of a 7-byte backup taken at ``created``, as catalogs and retention read it."""
    suffix = name_suffix()
    key = object_key(target, kind, "daily", created, "dump.zst.gpg", suffix=suffix)
    manifest = Manifest(
        backup_id=backup_id(target, kind, created, suffix=suffix),
        target=target,
        kind=kind,
        tier="daily",
        object_key=key,
        created_at=iso(created),
        artifact={"sha256": "0" * 64, "size": 7},
        verification={"status": "passed" if verified else "failed"},
    )
    if uploaded_after is not None:
        manifest.destination = {"name": "primary", "uploaded_at": iso(created + uploaded_after)}
    return manifest


def put_fake_backup(storage: Storage, created: datetime, **backup: Any) -> str:
    """A backup as catalogs and retention see it (a 7-byte object, then its manifest); returns its key."""
    manifest = fake_manifest(created, **backup)
    storage.put_bytes(manifest.object_key, b"payload")
    storage.put_bytes(manifest_key(manifest.object_key), manifest.to_json())
    return manifest.object_key


def take_backup(data_path: str, request: BackupRequest, storage: Storage, workdir: Path) -> Manifest:
    """The same engine calls the DAG's tasks make, in order."""
    if data_path == "stream":
        return backup.stream_backup(request, storage, "local")
    manifest = backup.dump_to_file(request, workdir)
    manifest = backup.compress_file(manifest, request.compression, workdir)
    manifest = backup.encrypt_file(manifest, request, workdir)
    return backup.upload_artifact(manifest, workdir / backup.ENCRYPTED_FILE, storage, "local")


def validation_settings(scratch: TemporaryCluster, source: PgConnInfo, **overrides: object) -> ValidationSettings:
    values: dict[str, object] = {
        "scratch": conn_info(scratch, label="scratch"),
        "source": source,
        "queries": ("SELECT count(*) FROM users",),
    }
    values.update(overrides)
    return ValidationSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """A moto S3 server for one test module."""
    with MotoServer() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def local_or_s3(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A fresh, empty destination on a real backend (local, or S3 on moto); object timestamps come from it."""
    if request.param == "local":
        (tmp_path / "store").mkdir()
        return open_storage(f"file://{tmp_path}/store")
    moto: MotoServer = request.getfixturevalue("moto")
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    moto.create_bucket(bucket)
    return open_storage(
        f"s3://{bucket}/pgbackup", endpoint_url=moto.endpoint_url, force_path_style=True, **moto.credentials
    )
