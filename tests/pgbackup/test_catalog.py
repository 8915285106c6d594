"""A malformed manifest is reported with its reason, its object is never deleted, and the
rest of the catalog (listing, pruning, the schema for data-only validation) keeps working.
Run over real storage: a local directory and S3 on moto's server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools.gpg_keys import GeneratedKey
from pgbackup.catalog import UnreadableManifest, read_catalog
from pgbackup.config import RetentionConfig
from pgbackup.errors import IntegrityError
from pgbackup.manifest import Manifest, manifest_key
from pgbackup.pgconn import PgConnInfo
from pgbackup.retention import prune
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import fake_manifest, make_request, take_backup

pytestmark = pytest.mark.integration

TARGET = "projectx"
POLICY = RetentionConfig(daily_days=30, min_keep=1)


@pytest.fixture
def storage(local_or_s3: Storage) -> Storage:
    return local_or_s3


def keys(storage: Storage) -> set[str]:
    return {info.key for info in storage.list()}


def manifest_data(created: datetime, kind: str = "full", verified: bool = True) -> dict[str, Any]:
    return fake_manifest(
        created, kind=kind, verified=verified, target=TARGET, uploaded_after=timedelta(minutes=2)
    ).to_dict()


def put(storage: Storage, data: dict[str, Any]) -> str:
    storage.put_bytes(data["object_key"], b"payload")
    storage.put_bytes(manifest_key(data["object_key"]), json.dumps(data).encode())
    return str(data["object_key"])


def put_raw(storage: Storage, key: str, raw: bytes) -> str:
    storage.put_bytes(key, b"payload")
    storage.put_bytes(manifest_key(key), raw)
    return key


def changed(**fields: Any) -> Any:
    def change(data: dict[str, Any]) -> bytes:
        data.update(fields)
        return json.dumps(data).encode()

    return change


def in_section(section: str, **fields: Any) -> Any:
    def change(data: dict[str, Any]) -> bytes:
        data[section] = {**data[section], **fields}
        return json.dumps(data).encode()

    return change


def without_field(name: str) -> Any:
    def change(data: dict[str, Any]) -> bytes:
        del data[name]
        return json.dumps(data).encode()

    return change


def without_in(section: str, name: str) -> Any:
    def change(data: dict[str, Any]) -> bytes:
        del data[section][name]
        return json.dumps(data).encode()

    return change


def raw(text: bytes) -> Any:
    return lambda data: text


# (case, how the good manifest is spoiled, what the reason must say)
MALFORMED = [
    ("JSON []", raw(b"[]"), "expected a JSON object, got []"),
    ("JSON null", raw(b"null"), "expected a JSON object, got null"),
    ("JSON string", raw(b'"a backup"'), 'expected a JSON object, got "a backup"'),
    ("JSON number", raw(b"42"), "expected a JSON object, got 42"),
    ("invalid JSON", raw(b'{"backup_id": "projectx-full-1", '), "not valid JSON"),
    ("empty file", raw(b""), "not valid JSON"),
    ("not UTF-8", raw(b"\xff\xfe\x00{"), "not valid JSON"),
    ("created_at null", changed(created_at=None), "created_at: Input should be a valid string (got None)"),
    ("created_at an integer", changed(created_at=1764223202), "created_at: Input should be a valid string"),
    ("created_at 'yesterday'", changed(created_at="yesterday"), "created_at: expected a UTC time"),
    ("created_at month 13", changed(created_at="2026-13-01T06:00:00Z"), "created_at: time data"),
    ("verification not an object", changed(verification="passed"), "verification: Input should be"),
    ("verification status unknown", in_section("verification", status="ok"), "verification.status:"),
    ("verification without status", changed(verification={}), "verification.status: missing"),
    ("unknown tier", changed(tier="hourly"), "tier: Input should be 'daily', 'weekly' or 'monthly' (got 'hourly')"),
    ("unknown kind", changed(kind="incremental"), "kind: Input should be"),
    ("missing sha256", without_in("artifact", "sha256"), "artifact.sha256: missing"),
    ("sha256 not 64 hex", in_section("artifact", sha256="abc"), "artifact.sha256: String should match"),
    ("size negative", in_section("artifact", size=-1), "artifact.size: Input should be greater than or equal to 0"),
    ("size a string", in_section("artifact", size="7"), "artifact.size: Input should be a valid integer"),
    ("artifact not an object", changed(artifact=["0" * 64, 7]), "artifact: Input should be"),
    ("missing object_key", without_field("object_key"), "object_key: missing"),
    ("row counts not numbers", in_section("source", row_counts={"public.users": "many"}),
     "source.row_counts.public.users: Input should be a valid integer"),
    ("uploaded_at not a time", in_section("destination", uploaded_at="soon"), "destination.uploaded_at:"),
    ("newer format_version", changed(format_version=2), "format_version 2 is newer than this pgbackup reads (1)"),
    ("describes another object", changed(object_key="projectx/daily/2026-11-27/other.dump.zst.gpg"),
     "describes projectx/daily/2026-11-27/other.dump.zst.gpg, not its own object"),
]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        pytest.param(spoil, reason, id=case, marks=pytest.mark.fault(
            f"malformed manifest: {case}",
            "reported unreadable with the reason; object never deleted; catalog keeps working",
        ))
        for case, spoil, reason in MALFORMED
    ],
)
def test_a_malformed_manifest_is_reported_kept_and_harms_nothing_else(
    storage: Storage, spoil: Any, reason: str
) -> None:
    now = datetime.now(UTC)
    schema = put(storage, manifest_data(now - timedelta(minutes=30), kind="schema"))
    newest = put(storage, manifest_data(now - timedelta(hours=1)))
    older = put(storage, manifest_data(now - timedelta(hours=3)))
    bad_data = manifest_data(now - timedelta(hours=4))
    bad = put_raw(storage, bad_data["object_key"], spoil(dict(bad_data)))

    catalog = read_catalog(storage, TARGET)
    assert catalog.unreadable == [UnreadableManifest(manifest_key(bad), catalog.unreadable[0].reason)]
    assert reason in catalog.unreadable[0].reason
    assert [m.object_key for m in catalog.of()] == [schema, newest, older]
    assert catalog.schema_for_data() is not None and catalog.schema_for_data().object_key == schema  # type: ignore[union-attr]
    assert catalog.incomplete == []

    if "describes" not in reason:  # that one is well formed; the catalog refuses it, not the schema
        with pytest.raises(IntegrityError, match=f"^where: unreadable manifest .*{reason[:20]}"):
            Manifest.from_json(storage.get_bytes(manifest_key(bad)) or b"", "where")

    # 40 days on, everything is beyond the window: only the newest verified full stays, and
    # the object beside the bad manifest is neither a backup to prune nor an incomplete upload.
    plan = prune(storage, TARGET, POLICY, now=now + timedelta(days=40))
    assert {d.key for d in plan.delete} == {older}
    assert [d.key for d in plan.unreadable] == [manifest_key(bad)]
    assert reason in plan.unreadable[0].reason
    assert {bad, manifest_key(bad), newest, schema} <= keys(storage)
    assert older not in keys(storage)


@pytest.mark.fault("malformed manifest: a manifest whose object is missing",
                   "reported unreadable with the reason; catalog keeps working")
def test_a_manifest_without_its_object_is_reported(storage: Storage) -> None:
    now = datetime.now(UTC)
    good = put(storage, manifest_data(now - timedelta(hours=1)))
    orphan = manifest_data(now - timedelta(hours=2))
    storage.put_bytes(manifest_key(orphan["object_key"]), json.dumps(orphan).encode())
    catalog = read_catalog(storage, TARGET)
    assert [m.object_key for m in catalog.of()] == [good]
    assert [(u.key, u.reason) for u in catalog.unreadable] == [
        (manifest_key(orphan["object_key"]), "its object is missing: a listed backup with no data")
    ]


def test_unreadable_entries_unpack_as_key_and_reason(storage: Storage) -> None:
    bad = put_raw(storage, f"{TARGET}/daily/2026-11-27/backup_20261127_060002.dump.zst.gpg", b"null")
    catalog = read_catalog(storage, TARGET)
    for key, reason in catalog.unreadable:
        assert key == manifest_key(bad) and "expected a JSON object" in reason
    assert catalog.unreadable_keys == [manifest_key(bad)]
    assert catalog.untouchable() == {bad}


@pytest.mark.parametrize("data_path", ["staged", "stream"])
def test_a_real_backup_is_listed_as_sound(
    storage: Storage, data_path: str, source_db: PgConnInfo, gpg_key: GeneratedKey, workdir: Path
) -> None:
    """What the pipeline publishes passes the schema and the date checks against the
    service's own timestamps (S3 dates a multipart object by when its upload began)."""
    source = source_db
    with psycopg2.connect(host=source.host, port=source.port, user=source.user, password=source.password,
                          dbname=source.dbname) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    published = [take_backup(data_path, make_request(source, gpg_key), storage, workdir) for _ in range(2)]
    catalog = read_catalog(storage, TARGET)
    assert (catalog.unreadable, catalog.suspect, catalog.incomplete) == ([], [], [])
    assert sorted(m.object_key for m in catalog.backups) == sorted(m.object_key for m in published)
    assert catalog.backups[0].source["row_counts"] == {"public.t": 1000}
