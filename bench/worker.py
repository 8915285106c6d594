"""Run one Python-side step in its own process, as an Airflow task would, and time it.

Every engine call (and the seed's boto3 transfers) runs here rather than in the benchmark
process, so the peak RSS the benchmark samples is that step's alone, not what earlier
steps left behind in a long-lived process. Reads a JSON spec on stdin (secrets travel
there, never in argv) and writes a JSON result on stdout: the seconds and CPU seconds of
the call itself (interpreter start-up and imports excluded), plus what the call returned.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import bench  # noqa: F401 - puts include/ on sys.path
from pgbackup import backup
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, decryption_keyring, fetch_plaintext, restore_archive
from pgbackup.storage import Storage, open_storage


def _conn(raw: dict[str, Any]) -> PgConnInfo:
    return PgConnInfo(raw["host"], int(raw["port"]), raw["user"], raw["dbname"], raw["password"], label=raw["dbname"])


def _storage(spec: dict[str, Any]) -> Storage:
    raw = spec["storage"]
    return open_storage(raw["url"], **raw["options"])


def _request(spec: dict[str, Any]) -> backup.BackupRequest:
    key = spec["key"]
    return backup.BackupRequest(
        target="projectx",
        source=_conn(spec["source"]),
        kind="full",
        compression=CompressionConfig(**spec["compression"]),
        encryption=EncryptionConfig((key["email"],), (key["public_key_file"],), "unused"),
        public_key_files=(Path(key["public_key_file"]),),
    )


def _seed_client(spec: dict[str, Any]) -> Any:
    """A boto3 client with its defaults (TransferConfig too), as ``aws s3 cp`` would use."""
    import boto3

    raw = spec["storage"]["options"]
    session = boto3.session.Session(
        aws_access_key_id=raw["aws_access_key_id"], aws_secret_access_key=raw["aws_secret_access_key"],
        region_name=raw["region_name"],
    )
    return session.client("s3", endpoint_url=raw["endpoint_url"])


def _manifest(spec: dict[str, Any]) -> Manifest:
    return Manifest.from_dict(spec["manifest"])


def prepare(spec: dict[str, Any], stack: contextlib.ExitStack) -> Callable[[], Any]:
    """Everything the call needs (keyrings, clients, parsed manifests) is set up here, untimed."""
    op = spec["op"]
    workdir = Path(spec.get("workdir", "."))
    if op == "dump_to_file":
        return partial(backup.dump_to_file, _request(spec), workdir)
    if op == "compress_file":
        return partial(backup.compress_file, _manifest(spec), _request(spec).compression, workdir)
    if op == "encrypt_file":
        return partial(backup.encrypt_file, _manifest(spec), _request(spec), workdir)
    if op == "upload_artifact":
        return partial(backup.upload_artifact, _manifest(spec), workdir / backup.ENCRYPTED_FILE, _storage(spec), "moto")
    if op == "stream_backup":
        return partial(backup.stream_backup, _request(spec), _storage(spec), "moto")
    if op == "fetch_plaintext":
        key = DecryptionKey(spec["decryption"]["armored"], spec["decryption"]["passphrase"])
        keyring = stack.enter_context(decryption_keyring(key))
        return partial(fetch_plaintext, _manifest(spec), _storage(spec), keyring, Path(spec["target"]))
    if op == "restore_archive":
        return partial(restore_archive, Path(spec["archive"]), _conn(spec["into"]), "custom", jobs=int(spec["jobs"]))
    if op == "s3_upload_file":
        return partial(_seed_client(spec).upload_file, spec["path"], spec["bucket"], spec["object_key"])
    if op == "s3_download_file":
        return partial(_seed_client(spec).download_file, spec["bucket"], spec["object_key"], spec["path"])
    raise SystemExit(f"unknown op {op!r}")


def _timed(call: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    started = time.monotonic()
    value = call()
    seconds = time.monotonic() - started
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    return {"seconds": seconds, "cpu_seconds": cpu}, value


def main() -> int:
    spec = json.load(sys.stdin)
    with contextlib.ExitStack() as stack:
        timing, value = _timed(prepare(spec, stack))
    if isinstance(value, Manifest):
        timing["manifest"] = value.to_dict()
    elif isinstance(value, dict):
        timing["value"] = value
    json.dump(timing, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
