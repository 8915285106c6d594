"""The stream path after its upload started: every failure (row counting that fails once the
upload has finished, a manifest that cannot be written, Ctrl-C while publishing) removes this
run's own object and leaves no manifest; nothing is listed that is not complete."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.services import MotoServer
from pgbackup import backup
from pgbackup.errors import DumpError, StorageError
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import make_request

pytestmark = pytest.mark.integration

BIG_TABLE_ROWS = 3_000_000  # counting it takes far longer than COUNT_TIMEOUT_MS
COUNT_TIMEOUT_MS = 40


def _s3(moto: MotoServer, endpoint: str | None = None) -> Storage:
    bucket = f"c-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return _s3_at(moto, bucket, endpoint)


def _s3_at(moto: MotoServer, bucket: str, endpoint: str | None = None) -> Storage:
    return open_storage(
        f"s3://{bucket}/backups",
        endpoint_url=endpoint or moto.endpoint_url,
        force_path_style=True,
        **moto.credentials,
    )


def _direct(storage: Storage, moto: MotoServer) -> Storage:
    return _s3_at(moto, storage.url.split("/")[2])


def _load(cluster: TemporaryCluster, db: PgConnInfo, rows: int = 500) -> None:
    cluster.execute(
        f"CREATE TABLE users (id int PRIMARY KEY, email text); "
        f"INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, {rows}) g",
        dbname=db.dbname,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        (tmp_path / "backups").mkdir()
        return open_storage(f"file://{tmp_path}/backups")
    return _s3(request.getfixturevalue("moto"))


@pytest.mark.fault(
    "row counting fails after the stream upload finished", "this run's object is removed; nothing listed"
)
def test_row_count_failing_after_the_upload_removes_the_object(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, storage: Storage
) -> None:
    # A real counting failure that pg_dump does not share: our session's statement_timeout
    # (pg_dump sets its own to 0) cancels the count of a big table. Counting runs alongside the
    # dump and its error surfaces when the pipeline, upload included, has finished.
    pg_cluster.execute(
        f"CREATE TABLE big (id int); INSERT INTO big SELECT generate_series(1, {BIG_TABLE_ROWS})",
        dbname=source_db.dbname,
    )
    impatient = replace(source_db, statement_timeout_ms=COUNT_TIMEOUT_MS)
    uploads: list[str] = []
    put_stream = storage.put_stream

    def recording_put_stream(key: str, stream: object) -> object:
        result = put_stream(key, stream)  # type: ignore[arg-type]
        uploads.append(key)  # the upload itself succeeded
        return result

    storage.put_stream = recording_put_stream  # type: ignore[method-assign,assignment]
    with pytest.raises(DumpError, match="counting rows failed"):
        backup.stream_backup(make_request(impatient, gpg_key), storage, "local")
    assert uploads, "the upload must have finished before counting failed"
    assert list(storage.list()) == []


@pytest.mark.fault("the manifest cannot be written (5xx on its PUT)", "this run's object is removed; nothing listed")
def test_manifest_write_failing_removes_this_runs_object(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, moto: MotoServer
) -> None:
    _load(pg_cluster, source_db)
    with FaultProxy(moto.endpoint_url) as proxy:
        storage = _s3(moto, proxy.url)
        proxy.fail_next(10_000, matching=".manifest.json")
        with pytest.raises(StorageError, match="manifest.json"):
            backup.stream_backup(make_request(source_db, gpg_key), storage, "local")
        assert proxy.failed_requests >= 1
        assert any(".dump.zst.gpg " in r.split("\r\n")[0] for r in proxy.requests if r.startswith("PUT"))
    assert list(_direct(storage, moto).list()) == []


@pytest.mark.fault("Ctrl-C while the manifest is being written", "object and any landed manifest removed")
def test_keyboard_interrupt_while_publishing_leaves_nothing(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, moto: MotoServer
) -> None:
    _load(pg_cluster, source_db)
    with FaultProxy(moto.endpoint_url) as proxy:
        storage = _s3(moto, proxy.url)
        put_bytes = storage.put_bytes

        def interrupted_put_bytes(key: str, data: bytes) -> object:
            # Ctrl-C lands once the manifest's PUT went through, before its answer was read. (A
            # SIGINT sent from the proxy's thread was flaky: Python runs the handler at some
            # later bytecode of the main thread, and one inside a __del__ is swallowed.)
            if key.endswith(".manifest.json"):
                put_bytes(key, data)
                raise KeyboardInterrupt
            return put_bytes(key, data)

        storage.put_bytes = interrupted_put_bytes  # type: ignore[method-assign,assignment]
        with pytest.raises(KeyboardInterrupt):
            backup.stream_backup(make_request(source_db, gpg_key), storage, "local")
        assert any(".manifest.json " in r.split("\r\n")[0] for r in proxy.requests if r.startswith("PUT"))
    assert list(_direct(storage, moto).list()) == []
