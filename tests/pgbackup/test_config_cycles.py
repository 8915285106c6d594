"""The weekly, monthly, monitor, recovery and audit sections: defaults from the seed, every
mistake a ConfigError naming the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.config import load_config, parse_config
from pgbackup.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "include" / "pgbackup.yaml"


def shipped() -> dict[str, Any]:
    return dict(yaml.safe_load(SHIPPED.read_text()))


def minimal() -> dict[str, Any]:
    """The shipped file without the new sections: their defaults must be the seed's."""
    data = shipped()
    for key in ("monitor", "recovery", "audit"):
        data.pop(key)
    data["schedule"] = {"daily": data["schedule"]["daily"]}
    return data


def test_defaults_are_the_seeds_times_and_objectives() -> None:
    config = parse_config(minimal())
    weekly, monthly = config.schedule.weekly, config.schedule.monthly
    assert (weekly.cron, weekly.validated_by_minutes, weekly.pruned_by_minutes) == ("0 2 * * 0", 120, 240)
    assert (monthly.hour, monthly.minute) == (3, 0)
    assert (config.monitor.cron, config.monitor.health_check_cron) == ("0 * * * *", "0 7 * * *")
    assert [config.monitor.rpo_hours.hours_for(t) for t in ("daily", "weekly", "monthly")] == [26, 192, 864]
    assert config.monitor.size.floor_bytes == 1_048_576  # the seed's "< 1 MB"
    assert (config.recovery.rto_critical_minutes, config.recovery.rto_full_minutes) == (15, 60)
    assert config.monitor.supabase == ()


def test_shipped_file_spells_out_the_same_values() -> None:
    shipped_config, defaults = load_config(SHIPPED), parse_config(minimal())
    for section in ("monitor", "recovery", "audit", "schedule"):
        assert getattr(shipped_config, section) == getattr(defaults, section), section


def test_a_supabase_target_can_be_watched() -> None:
    data = shipped()
    data["monitor"]["supabase"] = [{"target": "projectx", "conn_id": "supabase_api", "require_pitr": True}]
    watched = parse_config(data).monitor.supabase[0]
    assert (watched.target, watched.conn_id, watched.require_pitr, watched.max_age_hours) == (
        "projectx",
        "supabase_api",
        True,
        26,
    )


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _plain_target(data: dict[str, Any]) -> None:
    data["targets"][0]["profile"] = "plain"
    data["monitor"]["supabase"] = [{"target": "projectx", "conn_id": "api"}]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("schedule.weekly.cron", "0 2 * *"), "schedule.weekly.cron: '0 2 * *' is not a five-field cron"),
        (_set("schedule.weekly.validated_by_minutes", 0), "schedule.weekly.validated_by_minutes: expected more than 0"),
        (
            _set("schedule.weekly.validated_by_minutes", 300),
            "schedule.weekly.validated_by_minutes: must not be later than pruned_by_minutes",
        ),
        (_set("schedule.weekly.every", "sunday"), "schedule.weekly: unknown key(s) every"),
        (_set("schedule.monthly.time", "3am"), "schedule.monthly.time: expected a UTC time of day like '03:00'"),
        (_set("schedule.monthly.time", "24:00"), "schedule.monthly.time: expected a UTC time of day"),
        (_set("schedule.monthly.deadline_minutes", True), "schedule.monthly.deadline_minutes: expected a number"),
        (_set("monitor.cron", "hourly"), "monitor.cron: 'hourly' is not a five-field cron"),
        (_set("monitor.realert_minutes", -5), "monitor.realert_minutes: expected more than 0"),
        (_set("monitor.rpo_hours.daily", 0), "monitor.rpo_hours.daily: expected more than 0"),
        (_set("monitor.rpo_hours.yearly", 9000), "monitor.rpo_hours: unknown key(s) yearly"),
        (_set("monitor.size.low_ratio", 1.2), "monitor.size.low_ratio: expected a fraction between 0 and 1"),
        (_set("monitor.size.high_ratio", 0.9), "monitor.size.high_ratio: expected a multiple above 1"),
        (_set("monitor.size.min_history", 20), "monitor.size.min_history: must not exceed history (10)"),
        (_set("monitor.rows.drop_fraction", 1), "monitor.rows.drop_fraction: expected a fraction"),
        (
            _set("monitor.supabase", [{"target": "nope", "conn_id": "api"}]),
            "monitor.supabase[0].target: 'nope' is not one of the targets (projectx)",
        ),
        (_set("monitor.supabase", [{"target": "projectx"}]), "monitor.supabase[0].conn_id: required key is missing"),
        (_plain_target, "monitor.supabase[0].target: target 'projectx' has profile plain"),
        (_set("recovery.rto_critical_minutes", 120), "recovery.rto_critical_minutes: must not exceed rto_full_minutes"),
        (_set("recovery.drill_tier", "yearly"), "recovery.drill_tier: 'yearly' is not one of daily, weekly, monthly"),
        (_set("audit.orphan_grace_hours", -1), "audit.orphan_grace_hours: expected 0 or more hours"),
    ],
)
def test_mistakes_name_file_and_key(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    data = shipped()
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "conf/pgbackup.yaml")
    assert str(caught.value).startswith("conf/pgbackup.yaml: ")
    assert expected in str(caught.value)
