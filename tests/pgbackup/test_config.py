"""The config file: typed, validated with no I/O, errors naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.config import CompressionConfig, EncryptionConfig, RetentionConfig, load_config, parse_config
from pgbackup.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "pgbackup.yaml"


def shipped() -> dict[str, Any]:
    return dict(yaml.safe_load(SHIPPED.read_text()))


def test_shipped_config_is_valid() -> None:
    config = load_config(SHIPPED)
    assert config.primary.name == "s3"
    assert config.target("projectx").profile == "supabase"
    assert [d.name for d in config.destinations_for("schema")] == ["local", "s3", "gcs", "supabase_storage"]
    assert [d.name for d in config.destinations_for("full")] == ["local", "s3", "gcs"]
    assert config.key_file_path("keys/a.asc") == SHIPPED.parent / "keys" / "a.asc"
    assert (config.retention.daily_days, config.retention.weekly_days, config.retention.monthly_days) == (30, 90, 365)
    assert config.daily.kind_for_hour_minute(12, 0) == "schema"
    assert config.daily.kind_for_hour_minute(7, 0) is None


def test_scratch_template_is_optional_except_for_supabase() -> None:
    assert load_config(SHIPPED).target("projectx").validation.scratch_template == "supabase_platform"
    data = shipped()
    data["targets"][0]["validation"].pop("scratch_template")
    data["targets"][0]["profile"] = "plain"
    assert parse_config(data).target("projectx").validation.scratch_template is None


def test_every_top_level_key_is_accepted() -> None:
    data = shipped() | {"retries": 1, "retry_delay_seconds": 5, "owner": "x"}
    config = parse_config(data)
    assert (config.retries, config.retry_delay_seconds) == (1, 5)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["compression"].update(algorithm="lzma"), "compression.algorithm: 'lzma'"),
        (lambda d: d["compression"].update(level=42), "compression.level: zstd takes 1..19, got 42"),
        (lambda d: d["targets"][0].update(profile="aurora"), "targets.projectx.profile: 'aurora'"),
        (lambda d: d["targets"][0].pop("postgres_conn_id"), "targets.projectx.postgres_conn_id: required"),
        (lambda d: d["targets"][0].update(data_path="teleport"), "targets.projectx.data_path"),
        (lambda d: d["destinations"][0].update(path="relative/dir"), "destinations.local.path: expected an absolute"),
        (lambda d: d["destinations"][1].update(primary=False), "exactly one destination needs `primary: true`"),
        (lambda d: d["destinations"][1].update(bucket="Bad_Bucket!"), "destinations.s3.bucket"),
        (lambda d: d["destinations"][3].update(kinds=["everything"]), "destinations.supabase_storage.kinds"),
        (lambda d: d["encryption"].update(recipients=[]), "encryption.recipients"),
        (lambda d: d["retention"].update(min_keep=0), "retention.min_keep"),
        (lambda d: d["schedule"]["daily"].update(full="at six"), "schedule.daily.full: 'at six' is not a five-field"),
        (lambda d: d.update(colour="blue"), "unknown key(s) colour"),
        (lambda d: d["targets"].append(dict(d["targets"][0])), "targets: the name 'projectx' is used twice"),
        (lambda d: d["targets"][0].update(name="reports"), "name: 'reports' is reserved: the destination's reports/"),
        (lambda d: d["targets"][0].update(name="app_safety"), "ends in '_safety', which is reserved"),
        (
            lambda d: d["targets"][0]["validation"].pop("scratch_template"),
            "targets.projectx.validation.scratch_template: required for profile supabase",
        ),
        (lambda d: d["targets"][0]["validation"].update(scratch_template=7), "validation.scratch_template: expected"),
        (
            lambda d: d["targets"][0].update(dump_format="plain", data_path="stream"),
            "targets.projectx.data_path: profile supabase with dump_format plain needs data_path staged",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = shipped()
    mutate(data)
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as failure:
        load_config(path)
    assert str(failure.value).startswith(str(path))
    assert expected in str(failure.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _set(section: str, **values: Any) -> Any:
    return lambda d: d.setdefault(section, {}).update(values)


def _destination(name: str, **values: Any) -> Any:
    return lambda d: next(x for x in d["destinations"] if x["name"] == name).update(values)


def _daily(**values: Any) -> Any:
    return lambda d: d["schedule"]["daily"].update(values)


# Each mistake was accepted (or misreported) before config.py moved to pydantic + croniter;
# "already rejected" marks the few the hand-written checks caught too.
BAD_INPUTS = [
    # keys that escape their prefix or directory
    ("s3 prefix ../other", _destination("s3", prefix="../other"), "destinations.s3.prefix"),
    ("s3 prefix a/../../b", _destination("s3", prefix="a/../../b"), "destinations.s3.prefix"),
    ("s3 prefix with a . segment", _destination("s3", prefix="a/./b"), "destinations.s3.prefix"),
    ("s3 prefix with an empty segment", _destination("s3", prefix="a//b"), "destinations.s3.prefix"),
    ("gcs prefix ../other", _destination("gcs", prefix="../other"), "destinations.gcs.prefix"),
    ("supabase prefix ..", _destination("supabase_storage", prefix=".."), "destinations.supabase_storage.prefix"),
    ("local path /backups/../etc", _destination("local", path="/backups/../etc"), "destinations.local.path"),
    ("staging_dir /tmp/../etc", lambda d: d.update(staging_dir="/tmp/../etc"), "staging_dir"),
    # S3 general purpose bucket naming rules
    ("s3 bucket bad..bucket", _destination("s3", bucket="bad..bucket"), "destinations.s3.bucket"),
    ("s3 bucket 192.168.1.1", _destination("s3", bucket="192.168.1.1"), "destinations.s3.bucket"),
    ("s3 bucket x.-y", _destination("s3", bucket="x.-y"), "destinations.s3.bucket"),
    ("s3 bucket x-.y", _destination("s3", bucket="x-.y"), "destinations.s3.bucket"),
    ("s3 bucket of 64 characters", _destination("s3", bucket="b" * 64), "destinations.s3.bucket"),
    ("s3 bucket with underscore", _destination("s3", bucket="my_bucket"), "destinations.s3.bucket"),
    ("s3 bucket uppercase (already rejected)", _destination("s3", bucket="ProjectX"), "destinations.s3.bucket"),
    ("s3 bucket xn-- prefix", _destination("s3", bucket="xn--backups"), "destinations.s3.bucket"),
    ("s3 bucket sthree- prefix", _destination("s3", bucket="sthree-backups"), "destinations.s3.bucket"),
    ("s3 bucket amzn-s3-demo- prefix", _destination("s3", bucket="amzn-s3-demo-x"), "destinations.s3.bucket"),
    ("s3 bucket -s3alias suffix", _destination("s3", bucket="backups-s3alias"), "destinations.s3.bucket"),
    ("s3 bucket --ol-s3 suffix", _destination("s3", bucket="backups--ol-s3"), "destinations.s3.bucket"),
    ("s3 bucket .mrap suffix", _destination("s3", bucket="backups.mrap"), "destinations.s3.bucket"),
    ("s3 bucket --x-s3 suffix", _destination("s3", bucket="backups--x-s3"), "destinations.s3.bucket"),
    # Cloud Storage bucket naming rules
    ("gcs bucket goog prefix", _destination("gcs", bucket="goog-backups"), "destinations.gcs.bucket"),
    ("gcs bucket containing google", _destination("gcs", bucket="my-google-backups"), "destinations.gcs.bucket"),
    ("gcs bucket containing g00gle", _destination("gcs", bucket="my-g00gle-backups"), "destinations.gcs.bucket"),
    ("gcs bucket 192.168.1.1", _destination("gcs", bucket="192.168.1.1"), "destinations.gcs.bucket"),
    ("gcs bucket of 64 characters", _destination("gcs", bucket="b" * 64), "destinations.gcs.bucket"),
    ("gcs bucket with an empty dot part", _destination("gcs", bucket="a..b"), "destinations.gcs.bucket"),
    ("gcs dotted bucket part of 64", _destination("gcs", bucket="b" * 64 + ".example"), "destinations.gcs.bucket"),
    ("gcs dotted bucket of 223", _destination("gcs", bucket=".".join(["b" * 55] * 4)), "destinations.gcs.bucket"),
    # numbers that overflow later, or are not numbers
    ("retention.daily_days 1000000000", _set("retention", daily_days=1_000_000_000), "retention.daily_days"),
    ("retention.weekly_days 36501", _set("retention", weekly_days=36_501), "retention.weekly_days"),
    ("retention.monthly_days 10**30", _set("retention", monthly_days=10**30), "retention.monthly_days"),
    ("retention.min_keep 10**9", _set("retention", min_keep=10**9), "retention.min_keep"),
    ("retention.daily_days true (already rejected)", _set("retention", daily_days=True), "retention.daily_days"),
    ("deadline_minutes .nan", _daily(deadline_minutes=float("nan")), "schedule.daily.deadline_minutes"),
    ("deadline_minutes .inf", _daily(deadline_minutes=float("inf")), "schedule.daily.deadline_minutes"),
    (
        "deadline_minutes -.inf (already rejected)",
        _daily(deadline_minutes=float("-inf")),
        "schedule.daily.deadline_minutes",
    ),
    ("deadline_minutes 10**9", _daily(deadline_minutes=10**9), "schedule.daily.deadline_minutes"),
    ("deadline_minutes -5 (already rejected)", _daily(deadline_minutes=-5), "schedule.daily.deadline_minutes"),
    ("deadline_minutes true (already rejected)", _daily(deadline_minutes=True), "schedule.daily.deadline_minutes"),
    ("retries 10**9", lambda d: d.update(retries=10**9), "retries"),
    ("retry_delay_seconds 10**12", lambda d: d.update(retry_delay_seconds=10**12), "retry_delay_seconds"),
    ("compression.threads 10**6", _set("compression", threads=10**6), "compression.threads"),
    # cron expressions croniter refuses
    ("cron 99 99 * * *", _daily(full="99 99 * * *"), "schedule.daily.full"),
    ("cron hour 24", _daily(data="0 24 * * *"), "schedule.daily.data"),
    ("cron weekday 8", _daily(schema="0 12 * * 8"), "schedule.daily.schema"),
    ("cron month 13", _daily(full="0 6 1 13 *"), "schedule.daily.full"),
    # timeouts: positive, finite, bounded numbers
    ("timeouts.task_minutes .nan", _set("timeouts", task_minutes=float("nan")), "timeouts.task_minutes"),
    ("timeouts.connect_seconds 0", _set("timeouts", connect_seconds=0), "timeouts.connect_seconds"),
    ("timeouts.read_seconds -1", _set("timeouts", read_seconds=-1), "timeouts.read_seconds"),
    ("timeouts.operation_minutes true", _set("timeouts", operation_minutes=True), "timeouts.operation_minutes"),
    ("timeouts.statement_minutes 10**6", _set("timeouts", statement_minutes=10**6), "timeouts.statement_minutes"),
    ("timeouts.task_minutes '7'", _set("timeouts", task_minutes="7"), "timeouts.task_minutes"),
    ("timeouts unknown key", _set("timeouts", task_secs=7), "timeouts"),
    # unknown keys stay rejected, at every level
    ("unknown retention key (already rejected)", _set("retention", daily_dayz=3), "retention"),
    ("unknown target key (already rejected)", lambda d: d["targets"][0].update(colour=1), "targets.projectx"),
    ("s3 key on a local destination (already rejected)", _destination("local", bucket="b-1"), "destinations.local"),
]


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        pytest.param(
            mutate,
            key,
            id=case,
            marks=pytest.mark.fault(f"config: {case}", "ConfigError naming file and key at load time"),
        )
        for case, mutate, key in BAD_INPUTS
    ],
)
def test_bad_input_is_a_config_error_naming_file_and_key(tmp_path: Path, mutate: Any, key: str) -> None:
    data = shipped()
    mutate(data)
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as failure:
        load_config(path)
    message = str(failure.value)
    assert message.startswith(f"{path}: ")
    assert f"{path}: {key}: " in message, message


def test_nan_and_inf_written_in_yaml_are_rejected(tmp_path: Path) -> None:
    """YAML's own spellings, as an operator would type them."""
    for value in (".nan", ".inf", "-.inf", ".NaN"):
        path = tmp_path / "pgbackup.yaml"
        path.write_text(SHIPPED.read_text().replace("deadline_minutes: 90", f"deadline_minutes: {value}"))
        with pytest.raises(ConfigError, match=r"schedule\.daily\.deadline_minutes: expected a finite number"):
            load_config(path)


@pytest.mark.parametrize(
    "mutate",
    [
        _destination("s3", bucket="my.backups-1"),
        _destination("s3", bucket="abc"),
        _destination("s3", bucket="b" * 63, prefix="team/prod/"),
        _destination("gcs", bucket="my_backups"),
        _destination("gcs", bucket=".".join(["b" * 63] * 3) + ".bbbbbbbbbbbbb"),
        _destination("supabase_storage", bucket="Schema_Backups"),
        _destination("local", path="/backups/daily.d"),
        _daily(full="*/15 6-18 * * 1-5", deadline_minutes=0.5),
        _set("timeouts", connect_seconds=2.5, task_minutes=7),
        _set("retention", daily={"days": 36_500}, weekly={"keep": 10_000}, min_keep=1),
    ],
)
def test_edge_values_that_are_valid_are_accepted(mutate: Any) -> None:
    data = shipped()
    mutate(data)
    parse_config(data)


def test_prefix_and_urls_are_normalised() -> None:
    data = shipped()
    _destination("s3", prefix="/team/prod/")(data)
    config = parse_config(data)
    assert config.destination("s3").url == "s3://projectx-backups/team/prod"
    assert config.destination("gcs").url == "gs://projectx-backups-secondary/pgbackup"
    assert config.destination("local").url == "file:///backups"
    assert config.destination("supabase_storage").url == "s3://schema-backups"


def test_timeouts_default_and_map_to_engine_options() -> None:
    assert load_config(SHIPPED).timeouts.task_minutes == 240
    data = shipped()
    data.pop("timeouts", None)
    timeouts = parse_config(data).timeouts
    assert (timeouts.connect_seconds, timeouts.read_seconds) == (10, 120)
    assert (timeouts.operation_minutes, timeouts.statement_minutes, timeouts.task_minutes) == (120, 60, 240)
    assert timeouts.storage_options() == {"connect_timeout": 10, "read_timeout": 120, "operation_timeout": 7200}
    assert timeouts.postgres_options() == {
        "connect_timeout": 10,
        "statement_timeout_ms": 3_600_000,
        "tcp_user_timeout_ms": 120_000,
    }


def test_config_is_frozen() -> None:
    config = load_config(SHIPPED)
    with pytest.raises(ValueError, match="frozen"):
        config.retention.daily_days = 1  # type: ignore[misc]


def test_sections_built_in_code_validate_too() -> None:
    assert CompressionConfig("zstd", 3).level == 3
    assert CompressionConfig(algorithm="gzip").level == 6
    assert EncryptionConfig(("a@b",), ("k.asc",), "conn").recipients == ("a@b",)
    with pytest.raises(ConfigError, match=r"^compression\.algorithm: 'lzma' is not one of gzip, zstd$"):
        CompressionConfig("lzma")
    with pytest.raises(ConfigError, match=r"^retention\.daily_days: expected 1\.\.36500 days, got 1000000000$"):
        RetentionConfig(daily_days=1_000_000_000)


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    data = shipped()
    _set("retention", daily_days=0)(data)
    _daily(full="99 99 * * *")(data)
    with pytest.raises(ConfigError) as failure:
        parse_config(data, "cfg.yaml")
    lines = str(failure.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["retention.daily_days", "schedule.daily.full"]
    assert all(line.startswith("cfg.yaml: ") for line in lines)


def test_reserved_target_names_are_every_folder_pgbackup_writes_records_to() -> None:
    """A target named like a record folder would have its retention take those records for abandoned uploads."""
    from pgbackup import audit, drill, monitor, records, recovery, report
    from pgbackup.config import RECORD_FOLDERS

    written = {
        audit.AUDIT_PREFIX,
        drill.DRILL_PREFIX,
        records.EVENTS_PREFIX,
        recovery.RESTORE_RECORD_PREFIX,
        report.REPORT_PREFIX,
        monitor.STATE_KEY,
    }
    assert {prefix.split("/")[0] for prefix in written} == set(RECORD_FOLDERS)
