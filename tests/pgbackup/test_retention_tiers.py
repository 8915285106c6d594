"""Retention across the daily, weekly and monthly tiers, checked as properties over many catalogs.

Each seed builds 400 days of backups as the DAGs write them (a daily full most days, some
schema and data backups, a weekly full on Sundays, a monthly full on first Sundays), with
gaps, failed and pending verifications and a random policy (per tier an age, a count or
both; min_keep; the grace period; whether unverified backups go after it). Beside them sits
what retention must never touch: objects with no manifest, unreadable manifests, a manifest
with no object, a manifest dated a year ahead, another target's backups and a report.

The catalog is written to real storage (a local directory; S3 on moto's server, behind our
fault proxy), pruned for real, and what is left is checked against properties stated from
the policy, not against one worked example: ``doomed`` below is the policy as the README
states it, and everything else must survive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.services import MotoServer
from pgbackup.catalog import Catalog
from pgbackup.config import TIERS, RetentionConfig, load_config, parse_config
from pgbackup.errors import ConfigError, StorageError
from pgbackup.manifest import Manifest, backup_id, iso, manifest_key, object_key
from pgbackup.retention import plan_prune, prune
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from pgbackup.storage.s3 import S3Storage
from tests.pgbackup.conftest import put_fake_backup

TARGET = "projectx"
SPAN_DAYS = 400
STATUSES = ("passed", "failed", "pending")


# -- the synthetic catalog ----------------------------------------------------------------------


@dataclass
class Synthetic:
    backups: list[Manifest] = field(default_factory=list)  # sound, trusted backups
    untouchable: set[str] = field(default_factory=set)  # keys no policy may remove
    incomplete_old: set[str] = field(default_factory=set)  # objects with no manifest, written days ago
    files: dict[str, bytes] = field(default_factory=dict)  # everything to write, key -> bytes
    suspect: str = ""
    unreadable_manifests: set[str] = field(default_factory=set)


def _suffix(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}"


def _manifest(
    rng: random.Random, kind: str, tier: str, created: datetime, status: str, target: str = TARGET
) -> Manifest:
    suffix = _suffix(rng)
    return Manifest(
        backup_id=backup_id(target, kind, created, suffix=suffix),
        target=target,
        kind=kind,
        tier=tier,
        object_key=object_key(target, kind, tier, created, "dump.zst.gpg", suffix=suffix),
        created_at=iso(created),
        artifact={"sha256": "0" * 64, "size": 8},
        verification={"status": status},
    )


def synthetic_catalog(rng: random.Random, now: datetime, *, old_incomplete: bool = False) -> Synthetic:
    """400 days of daily, weekly and monthly backups up to ``now``, and what must not be touched."""
    made = Synthetic()
    gaps = rng.uniform(0.0, 0.3)  # share of days whose backup never happened
    weights = (rng.randint(70, 95), rng.randint(2, 20), rng.randint(0, 8))
    first_day = (now - timedelta(days=SPAN_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)

    def add(kind: str, tier: str, created: datetime) -> None:
        if created < now - timedelta(minutes=1) and rng.random() >= gaps:
            status = rng.choices(STATUSES, weights)[0]
            made.backups.append(_manifest(rng, kind, tier, created + timedelta(seconds=rng.randint(0, 59)), status))

    for offset in range(SPAN_DAYS + 1):
        day = first_day + timedelta(days=offset)
        add("full", "daily", day.replace(hour=6))
        if rng.random() < 0.3:
            add("schema", "daily", day.replace(hour=12))
        if rng.random() < 0.2:
            add("data", "daily", day.replace(hour=18))
        if day.weekday() == 6:  # Sunday
            add("full", "weekly", day.replace(hour=2))
            if day.day <= 7:  # the first Sunday of the month
                add("full", "monthly", day.replace(hour=3))
    for manifest in made.backups:
        made.files[manifest.object_key] = b"x" * rng.randint(1, 64)
        made.files[manifest_key(manifest.object_key)] = manifest.to_json()

    # Never to be touched, whatever the policy: each with its object and its manifest.
    future = _manifest(rng, "full", "daily", now + timedelta(days=365), "passed")
    made.suspect = future.object_key
    broken = [_manifest(rng, "full", tier, now - timedelta(days=300 + i), "passed") for i, tier in enumerate(TIERS)]
    made.files[broken[0].object_key] = b"data"
    made.files[manifest_key(broken[0].object_key)] = b"{not json"
    made.files[broken[1].object_key] = b"data"
    made.files[manifest_key(broken[1].object_key)] = json.dumps({"backup_id": "half a manifest"}).encode()
    made.files[manifest_key(broken[2].object_key)] = broken[2].to_json()  # its object is missing
    made.unreadable_manifests = {manifest_key(m.object_key) for m in broken}
    made.files[future.object_key] = b"data"
    made.files[manifest_key(future.object_key)] = future.to_json()
    in_flight = [f"{TARGET}/daily/{now:%Y-%m-%d}/backup_in_flight_{i}.dump.zst.gpg" for i in range(2)]
    for key in in_flight:
        made.files[key] = b"partial"
    neighbours = [
        _manifest(rng, "full", "daily", now - timedelta(days=200), "passed", target=target)
        for target in ("otherdb", f"{TARGET}_archive")
    ]
    for manifest in neighbours:
        made.files[manifest.object_key] = b"data"
        made.files[manifest_key(manifest.object_key)] = manifest.to_json()
    made.files["reports/2025-11.html"] = b"<html></html>"
    sound = _backup_keys(made)
    made.untouchable = {key for key in made.files if key.removesuffix(".manifest.json") not in sound}
    if old_incomplete:  # the one thing without a manifest that may go: see write()
        made.incomplete_old = {f"{TARGET}/daily/2020-01-01/backup_abandoned.dump.zst.gpg"}
        made.files.update(dict.fromkeys(made.incomplete_old, b"partial"))
    return made


def _backup_keys(made: Synthetic) -> set[str]:
    return {m.object_key for m in made.backups}


def random_policy(rng: random.Random, **fixed: Any) -> RetentionConfig:
    def tier(low: int, high: int) -> dict[str, int]:
        shape = rng.choice(("days", "keep", "both"))
        rule = {"days": rng.randint(low, high), "keep": rng.randint(1, 12)}
        return rule if shape == "both" else {shape: rule[shape]}

    values: dict[str, Any] = {
        "daily": tier(3, 60),
        "weekly": tier(14, 180),
        "monthly": tier(60, 500),
        "min_keep": rng.randint(1, 4),
        "unverified_grace_days": rng.randint(1, 14),
        "delete_unverified_after_grace": rng.random() < 0.5,
    }
    return RetentionConfig(**(values | fixed))


# -- the policy, as stated -------------------------------------------------------------------


def doomed(backups: list[Manifest], policy: RetentionConfig, now: datetime) -> dict[str, str]:
    """Every backup the policy says must go, with the reason prune gives.

    Per (kind, tier): nothing goes without a newer verified backup of the same kind and tier.
    A verified backup goes when it is neither one of the newest max(min_keep, keep) verified
    nor within the tier's days. One not verified goes only past the grace period, and only
    when delete_unverified_after_grace is set.
    """
    groups: dict[tuple[str, str], list[Manifest]] = defaultdict(list)
    for manifest in backups:
        groups[(manifest.kind, manifest.tier)].append(manifest)
    found: dict[str, str] = {}
    grace = timedelta(days=policy.unverified_grace_days)
    for (_, tier), group in groups.items():
        rule = policy.tier(tier)
        count = max(policy.min_keep, rule.keep or 0)
        verified = sorted((m for m in group if m.verified), key=lambda m: m.created, reverse=True)
        newest_kept = {m.object_key for m in verified[:count]}
        for manifest in group:
            age = now - manifest.created
            if not any(v.created > manifest.created for v in verified):
                continue
            if manifest.verified:
                if manifest.object_key in newest_kept or (rule.days is not None and age <= timedelta(days=rule.days)):
                    continue
                window = f"beyond the {tier} window of {rule.days} days and " if rule.days is not None else ""
                found[manifest.object_key] = f"{age.days} days old, {window}not one of the newest {count} verified"
            elif age > grace and policy.delete_unverified_after_grace:
                found[manifest.object_key] = (
                    f"not verified ({manifest.verification['status']}) and {age.days} days old, past the grace "
                    f"period of {grace.days} days; delete_unverified_after_grace is true"
                )
    return found


def newest_verified(backups: list[Manifest], count: int) -> set[str]:
    """The newest ``count`` verified backups of every (kind, tier)."""
    groups: dict[tuple[str, str], list[Manifest]] = defaultdict(list)
    for manifest in backups:
        if manifest.verified:
            groups[(manifest.kind, manifest.tier)].append(manifest)
    return {
        m.object_key for group in groups.values() for m in sorted(group, key=lambda m: m.created, reverse=True)[:count]
    }


def past_grace(backups: list[Manifest], policy: RetentionConfig, now: datetime) -> set[str]:
    grace = timedelta(days=policy.unverified_grace_days)
    return {m.object_key for m in backups if not m.verified and now - m.created > grace}


# -- the same properties on the planner alone, over many more seeds -----------------------------


@pytest.mark.parametrize("seed", range(40))
def test_plan_properties_over_many_catalogs(seed: int) -> None:
    rng = random.Random(seed)
    now = datetime(2026, 11, 30, 7, 0, tzinfo=UTC) - timedelta(hours=rng.randint(0, 24 * 365))
    made = synthetic_catalog(rng, now)
    policy = random_policy(rng)
    plan = plan_prune(Catalog(backups=made.backups), policy, now)
    deleted = {d.key: d.reason for d in plan.delete}
    assert deleted == doomed(made.backups, policy, now)
    assert not newest_verified(made.backups, policy.min_keep) & deleted.keys()
    assert {d.key for d in plan.unverified} == past_grace(made.backups, policy, now)
    assert {d.key for d in plan.keep} | deleted.keys() == _backup_keys(made)


@pytest.mark.parametrize("seed", range(3))
def test_daily_prunes_over_400_days_never_lose_the_newest_verified_backup_of_a_tier(seed: int) -> None:
    """Run as the DAGs do: each day's backups arrive, then prune runs; check every day."""
    rng = random.Random(1000 + seed)
    end = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    made = synthetic_catalog(rng, end)
    policy = random_policy(rng)
    arriving = sorted(made.backups, key=lambda m: m.created)
    stored: list[Manifest] = []
    for day in range(SPAN_DAYS, -1, -1):
        now = end - timedelta(days=day)
        while arriving and arriving[0].created <= now:
            stored.append(arriving.pop(0))
        plan = plan_prune(Catalog(backups=list(stored)), policy, now)
        deleted = {d.key for d in plan.delete}
        assert deleted == doomed(stored, policy, now).keys()
        assert not newest_verified(stored, policy.min_keep) & deleted
        stored = [m for m in stored if m.object_key not in deleted]
    # After 400 days, each tier holds what its rule keeps, however the backups came and went.
    for tier in TIERS:
        rule = policy.tier(tier)
        in_tier = [m for m in stored if m.tier == tier and m.verified and m.kind == "full"]
        if rule.days is None and in_tier:
            assert len(in_tier) <= max(policy.min_keep, rule.keep or 0)


# -- real storage --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url) as running:
        yield running


@dataclass
class Destination:
    storage: Storage
    root: Path | None = None  # a local destination's directory
    bucket: str = ""
    moto: MotoServer | None = None  # to read an S3 bucket past our storage layer


@pytest.fixture
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    if request.param == "local":
        return Destination(open_storage(f"file://{tmp_path}"), root=tmp_path)
    moto: MotoServer = request.getfixturevalue("moto")
    proxy: FaultProxy = request.getfixturevalue("proxy")
    proxy.pass_through()
    bucket = f"tiers-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    # Small pages, so a listing failing after its first page is a real possibility.
    storage = S3Storage(
        f"s3://{bucket}/pgbackup", endpoint_url=proxy.url, force_path_style=True, page_size=100, **moto.credentials
    )
    return Destination(storage, bucket=bucket, moto=moto)


def write(destination: Destination, made: Synthetic) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: destination.storage.put_bytes(*item), made.files.items()))
    if destination.root is not None:  # only a local file's time can be set back
        three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
        for key in made.incomplete_old:
            os.utime(destination.root / key, (three_days_ago, three_days_ago))


def stored(destination: Destination) -> dict[str, str]:
    """Every key and the md5 of its bytes, read past our storage layer (the disk, or moto itself)."""
    if destination.root is not None:
        return {
            str(path.relative_to(destination.root)): hashlib.md5(path.read_bytes()).hexdigest()
            for path in destination.root.rglob("*")
            if path.is_file()
        }
    assert destination.moto is not None
    pages = destination.moto.client().get_paginator("list_objects_v2").paginate(Bucket=destination.bucket)
    return {
        item["Key"].removeprefix("pgbackup/"): item["ETag"].strip('"')  # single-part uploads: ETag is the md5
        for page in pages
        for item in page.get("Contents", [])
    }


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {key: hashlib.md5(data).hexdigest() for key, data in files.items()}


@pytest.mark.integration
@pytest.mark.fault(
    "400 days of daily, weekly and monthly backups under a random policy; an S3 listing that fails "
    "after its first page; a dry run",
    "the newest verified backup of every tier survives, exactly what the policy rejects goes (manifest "
    "and object), nothing without a manifest is touched; the failed listing and the dry run delete "
    "nothing, the dry run logging each deletion with its reason",
)
# Local storage is cheap: five seeds. S3 (every key a request to moto, about a minute a seed on
# two cores) on one, whose policy deletes unverified backups past grace.
@pytest.mark.parametrize(
    ("destination", "seed"),
    [("local", seed) for seed in range(5)] + [("s3", 3)],
    indirect=["destination"],
)
def test_pruning_a_400_day_catalog_in_real_storage(
    destination: Destination, seed: int, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    local = destination.root is not None
    made = synthetic_catalog(rng, now, old_incomplete=local)
    policy = random_policy(rng)
    write(destination, made)
    before = stored(destination)
    assert before == digests(made.files)
    expected = doomed(made.backups, policy, now)
    if local:  # the incomplete-object rule: old, and a verified backup exists
        assert any(m.verified for m in made.backups)
        expected |= dict.fromkeys(made.incomplete_old, "incomplete (no manifest) and older than a day")
    url = destination.storage.url

    # A dry run deletes nothing and says exactly what would go, and why.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pgbackup.retention"):
        plan = prune(destination.storage, TARGET, policy, dry_run=True, now=now)
    would = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dry run: would delete ")]
    assert sorted(would) == sorted(f"dry run: would delete {url}/{key} ({why})" for key, why in expected.items())
    assert f"dry run: {len(expected)} would be deleted at {url}, nothing was" in caplog.messages
    assert stored(destination) == before

    # Every finding is reported: the suspect date, the refused manifests, the unverified past grace.
    assert [d.key for d in plan.suspect] == [made.suspect]
    assert {d.key for d in plan.unreadable} == made.unreadable_manifests
    assert {d.key for d in plan.unverified} == past_grace(made.backups, policy, now)

    if not local:
        # A listing that fails on its second page: prune raises and deletes nothing.
        proxy: FaultProxy = request.getfixturevalue("proxy")
        proxy.fail_next(10_000, 500, matching="continuation-token")
        try:
            with pytest.raises(StorageError):
                prune(destination.storage, TARGET, policy, dry_run=False, now=now)
            assert proxy.failed_requests > 0
        finally:
            proxy.pass_through()
        assert stored(destination) == before

    plan = prune(destination.storage, TARGET, policy, dry_run=False, now=now)
    after = stored(destination)
    assert {d.key: d.reason for d in plan.delete} == expected
    # Nothing outside the policy survives; what goes, goes with its manifest.
    for key in expected:
        assert key not in after and manifest_key(key) not in after
    # Everything inside it survives, byte for byte: sound backups, the newest verified of every
    # tier among them, and all that has no trusted manifest (beyond the incomplete-object rule).
    assert after == {key: data for key, data in before.items() if key.removesuffix(".manifest.json") not in expected}
    assert newest_verified(made.backups, policy.min_keep) <= after.keys()
    assert made.untouchable <= after.keys()


@pytest.mark.integration
def test_the_operator_prunes_each_destination_with_its_own_policy(tmp_path: Path) -> None:
    from pgbackup_airflow.operators.maintenance import PruneBackupsOperator

    rng = random.Random(7)
    now = datetime.now(UTC)
    made = synthetic_catalog(rng, now)
    roots = {name: tmp_path / name for name in ("near", "far")}
    for root in roots.values():
        root.mkdir()
        write(Destination(open_storage(f"file://{root}"), root=root), made)
    key_file = tmp_path / "admin.asc"
    key_file.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    config = {
        "targets": [{"name": TARGET, "postgres_conn_id": "db", "validation": {"scratch_conn_id": "scratch"}}],
        "destinations": [
            {"name": "near", "type": "local", "path": str(roots["near"]), "primary": True},
            {"name": "far", "type": "local", "path": str(roots["far"])},
        ],
        "encryption": {"recipients": ["a@b.c"], "public_key_files": [str(key_file)], "decryption_key_conn_id": "k"},
        "retention": {
            "daily": {"days": 10},
            "weekly": {"keep": 4},
            "min_keep": 2,
            "unverified_grace_days": 3,
            "by_destination": {"far": {"daily": {"days": 60}, "monthly": {"days": 3000}, "min_keep": 5}},
        },
    }
    path = tmp_path / "pgbackup.yaml"
    path.write_text(json.dumps(config))
    safety = open_storage(f"file://{roots['near']}")
    ages = (300, 200, 1)
    oldest, *newest = (put_fake_backup(safety, now - timedelta(days=d), target=f"{TARGET}_safety") for d in ages)
    operator = PruneBackupsOperator(task_id="prune", target=TARGET, config_path=str(path))
    result = operator.execute({})
    # retention.safety is 90 days by default; the newest min_keep (2) stay however old.
    assert result["near"]["safety_backups"] == {"deleted": 1, "kept": 2}
    assert safety.stat(oldest) is None and all(safety.stat(key) for key in newest)
    safety.delete_many([*newest, *(manifest_key(key) for key in newest)])  # out of the target's comparison below
    assert result["far"]["safety_backups"] == {"deleted": 0, "kept": 0}

    policy = operator.config.retention
    for name, root in roots.items():
        own = policy.for_destination(name)
        expected = doomed(made.backups, own, now)
        after = stored(Destination(open_storage(f"file://{root}"), root=root))
        assert not expected.keys() & after.keys()
        assert {k for k in made.files if k.removesuffix(".manifest.json") not in expected} == after.keys()
        assert result[name]["deleted"] == len(expected)
        assert result[name]["suspect"] == 1 and result[name]["unreadable"] == 3
        assert result[name]["unverified_past_grace"] == len(past_grace(made.backups, own, now))
        assert [f["key"] for f in result[name]["findings"]["suspect"]] == [made.suspect]
    assert result["far"]["deleted"] < result["near"]["deleted"]  # the far copy keeps more, as configured


@pytest.mark.integration
@pytest.mark.fault(
    "prune deletes backups from S3, where one DeleteObjects request may carry a manifest and its object "
    "in no promised order (a partial failure could leave a manifest whose data is gone)",
    "every manifest of the deleted backups is gone before the request deleting their objects is sent",
)
def test_manifests_are_gone_before_any_object_is_deleted(moto: MotoServer) -> None:
    bucket = f"order-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    rng = random.Random(11)
    now = datetime.now(UTC)
    backups = [_manifest(rng, "full", "daily", now - timedelta(days=days), "passed") for days in (1, 2, 40, 50, 60)]
    present_at_delete: list[set[str]] = []

    def snapshot(_line: str) -> None:  # runs in the proxy before the request is forwarded
        listed = moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        present_at_delete.append({item["Key"].removeprefix("pgbackup/") for item in listed})

    with FaultProxy(moto.endpoint_url) as watcher:
        storage = S3Storage(
            f"s3://{bucket}/pgbackup", endpoint_url=watcher.url, force_path_style=True, **moto.credentials
        )
        for manifest in backups:
            storage.put_bytes(manifest.object_key, b"data")
            storage.put_bytes(manifest_key(manifest.object_key), manifest.to_json())
        watcher.on_request("?delete", snapshot)
        plan = prune(storage, TARGET, RetentionConfig(daily_days=30, min_keep=2), now=now)
    gone = {m.object_key for m in backups[2:]}
    assert {d.key for d in plan.delete} == gone
    assert present_at_delete, "no delete request went through the proxy"
    # When the objects' deletion is asked for, their manifests are already gone.
    last = present_at_delete[-1]
    assert gone <= last
    assert not {manifest_key(key) for key in gone} & last


# -- the config section ------------------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "pgbackup.yaml"


def _shipped_with(retention: dict[str, Any]) -> dict[str, Any]:
    import yaml

    data = dict(yaml.safe_load(SHIPPED.read_text()))
    data["retention"] = retention
    return data


def test_the_shipped_tiers_and_the_older_form_read_the_same() -> None:
    shipped = load_config(SHIPPED).retention
    assert (shipped.daily.days, shipped.weekly.days, shipped.monthly.days) == (30, 90, 365)
    assert (shipped.unverified_grace_days, shipped.delete_unverified_after_grace) == (7, False)
    older = parse_config(_shipped_with({"daily_days": 30, "weekly_days": 90, "monthly_days": 365, "min_keep": 3}))
    assert older.retention == shipped
    counted = parse_config(_shipped_with({"weekly": {"days": 90, "keep": 8}, "monthly": {"keep": 12}})).retention
    assert (counted.weekly.days, counted.weekly.keep, counted.monthly.days, counted.monthly.keep) == (90, 8, None, 12)
    assert counted.daily.days == counted.daily_days == 30  # unset tiers keep their defaults


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"weekly": {}}, "retention.weekly: expected days (an age), keep (a count of verified backups) or both"),
        ({"weekly": {"keep": 0}}, "retention.weekly.keep: expected 1..10000 backups, got 0"),
        ({"monthly": {"days": 36_501}}, "retention.monthly.days: expected 1..36500 days, got 36501"),
        ({"weekly": {"weeks": 8}}, "retention.weekly: unknown key(s) weeks; allowed: days, keep"),
        (
            {"weekly_days": 90, "weekly": {"keep": 8}},
            "retention.weekly_days: give either weekly_days: N (the older form) or weekly: {days: N, keep: M}",
        ),
        ({"unverified_grace_days": 0}, "retention.unverified_grace_days: expected 1..36500 days, got 0"),
        ({"delete_unverified_after_grace": "yes"}, "retention.delete_unverified_after_grace: expected true or false"),
        (
            {"by_destination": {"gsc": {"min_keep": 5}}},
            "retention.by_destination.gsc: 'gsc' is not one of the destinations (local, s3, gcs, supabase_storage)",
        ),
        ({"by_destination": {"gcs": {"min_keep": 0}}}, "retention.by_destination.gcs.min_keep: expected 1..10000"),
    ],
)
def test_retention_mistakes_name_the_file_and_the_key(retention: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_config(_shipped_with(retention), source="include/pgbackup.yaml")
    assert str(failure.value).startswith(f"include/pgbackup.yaml: {message}"), str(failure.value)


def test_a_destination_inherits_what_it_does_not_set() -> None:
    config = parse_config(
        _shipped_with({"weekly": {"keep": 8}, "min_keep": 2, "by_destination": {"gcs": {"monthly": {"days": 730}}}})
    )
    gcs, s3 = config.retention.for_destination("gcs"), config.retention.for_destination("s3")
    assert (gcs.monthly.days, gcs.monthly_days, gcs.weekly.keep, gcs.min_keep) == (730, 730, 8, 2)
    assert s3 == config.retention and s3.monthly.days == 365
    # A frozen config still hashes (as every section did before by_destination, a mapping).
    assert hash(config) == hash(parse_config(_shipped_with(config.retention.model_dump(exclude_defaults=True))))
