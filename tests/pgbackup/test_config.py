"""The config file: typed, validated with no I/O, errors naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.config import load_config, parse_config
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
