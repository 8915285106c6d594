"""What an upload killed before its object existed leaves (a local temp file, an unfinished S3
multipart upload) is never listed, and retention removes it once it is a day old."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.services import MotoServer
from pgbackup.config import RetentionConfig
from pgbackup.manifest import object_key
from pgbackup.retention import prune
from pgbackup.storage import open_storage
from pgbackup.storage.local import TEMP_PREFIX


@pytest.mark.fault(
    "an upload to a local destination is killed (SIGKILL) while writing its temp file",
    "the temp file is never listed; the next prune removes it once a day old, and keeps a recent one",
)
def test_prune_removes_local_temp_files_of_killed_uploads(tmp_path: Path) -> None:
    folder = tmp_path / "projectx" / "daily" / "2026-11-30"
    folder.mkdir(parents=True)
    old, recent = folder / f"{TEMP_PREFIX}old", folder / f"{TEMP_PREFIX}recent"
    old.write_bytes(b"half an upload")
    recent.write_bytes(b"an upload in flight")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    storage = open_storage(f"file://{tmp_path}")
    assert list(storage.list("projectx/")) == []

    prune(storage, "projectx", RetentionConfig())

    assert not old.exists() and recent.exists()


@pytest.mark.fault(
    "a multipart upload to S3 is killed (SIGKILL) before it is completed or aborted",
    "it is never listed; cleanup aborts unfinished uploads under the target that are old enough, no others",
)
def test_unfinished_multipart_uploads_of_the_target_are_aborted(moto: MotoServer) -> None:
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    moto.create_bucket(bucket)
    client = moto.client()
    # moto reports every upload as initiated in 2010: the key's own start time (now) must keep it.
    key = object_key("projectx", "full", "daily", datetime.now(UTC), "dump.zst.gpg", suffix="0123abcd")
    mine = client.create_multipart_upload(Bucket=bucket, Key=f"pgbackup/{key}")["UploadId"]
    other = client.create_multipart_upload(Bucket=bucket, Key="pgbackup/analytics/daily/y.dump.zst.gpg")["UploadId"]
    storage = open_storage(f"s3://{bucket}/pgbackup", endpoint_url=moto.endpoint_url, force_path_style=True,
                           **moto.credentials)
    assert list(storage.list("projectx/")) == []

    assert storage.remove_abandoned_writes("projectx/") == ()  # a fresh upload may still be running
    removed = storage.remove_abandoned_writes("projectx/", older_than=timedelta(0))

    assert removed == (f"{key}?uploadId={mine}",)
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert left == {other}
