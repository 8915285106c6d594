"""The cycle operators' own decisions, without a scheduler: the report's period, the weekly
deadline names, when the monitor posts its health summary, and what it checks."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pgbackup.config import PgBackupConfig, parse_config
from pgbackup.errors import ConfigError
from pgbackup.storage import open_storage
from pgbackup_airflow.dag_factory import _minutes_after
from pgbackup_airflow.operators.monitor import check_breaches, health_summary, is_health_check
from pgbackup_airflow.operators.monthly import report_settings

REPO = Path(__file__).resolve().parents[2]
UTC = dt.UTC


def config(**changes: Any) -> PgBackupConfig:
    data = yaml.safe_load((REPO / "include" / "pgbackup.yaml").read_text())
    data.update(changes)
    return parse_config(data, "test.yaml")


def test_a_late_scheduled_report_covers_the_previous_month_up_to_now() -> None:
    run_at = dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # the slot, run four weeks late
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    settings = report_settings(config(), run_at, now)
    assert settings.month == "2026-11"
    assert settings.period_start == dt.datetime(2026, 10, 4, 3, 0, tzinfo=UTC)  # the previous first Sunday
    assert settings.period_end == now  # what this run just did is in it
    assert settings.rpo["weekly"] == dt.timedelta(days=8)
    assert settings.rto.critical_seconds == 15 * 60


def test_a_manual_report_mid_month_still_reviews_four_weeks() -> None:
    now = dt.datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
    settings = report_settings(config(), now, now)
    assert settings.period_start == now - dt.timedelta(days=28)
    assert settings.month == "2026-11"


def test_weekly_deadlines_read_as_the_seeds_wall_clock_times() -> None:
    assert _minutes_after("0 2 * * 0", 120) == "04:00 UTC"
    assert _minutes_after("0 2 * * 0", 240) == "06:00 UTC"
    assert _minutes_after("30 23 * * 6", 45) == "00:15 UTC"
    assert _minutes_after("*/5 2 * * 0", 10) == "10 min after the start"


def _context(moment: dt.datetime | None, run_type: str, health_check: bool = False) -> dict[str, Any]:
    return {
        "params": {"health_check": health_check},
        "logical_date": moment,
        "dag_run": SimpleNamespace(run_type=run_type, run_after=moment),
    }


def test_only_the_0700_slot_or_an_explicit_request_posts_the_health_summary() -> None:
    cfg = config()
    seven = dt.datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert is_health_check(cfg, _context(seven, "DagRunType.SCHEDULED"))
    assert not is_health_check(cfg, _context(seven.replace(hour=8), "DagRunType.SCHEDULED"))
    assert not is_health_check(cfg, _context(seven, "DagRunType.MANUAL"))
    assert is_health_check(cfg, _context(None, "DagRunType.MANUAL", health_check=True))


def test_an_empty_destination_breaches_every_tiers_rpo(tmp_path: Path) -> None:
    cfg = config(destinations=[{"name": "local", "type": "local", "path": str(tmp_path), "primary": True}])
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    breaches, checked = check_breaches(cfg, open_storage(f"file://{tmp_path}"), now)
    assert sorted(b.key for b in breaches) == [
        "freshness:projectx:daily",
        "freshness:projectx:monthly",
        "freshness:projectx:weekly",
    ]
    assert checked == {"projectx"}
    summary = health_summary(cfg, breaches, now)
    assert "3 open problem(s)" in summary and "projectx weekly: no verified backup" in summary
    assert "all healthy" in health_summary(cfg, [], now)


def test_supabase_managed_backups_are_read_through_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Management API stand-in answers the documented shape; the token comes from the
    connection's password and never from the config."""
    from devtools.supabase_api import SupabaseApiStub, backups_payload

    now = dt.datetime.now(UTC)
    ref = "abcdefghijklmnopqrst"
    cfg = config(
        destinations=[{"name": "local", "type": "local", "path": str(tmp_path), "primary": True}],
        monitor={"supabase": [{"target": "projectx", "conn_id": "supabase_api", "max_age_hours": 26}]},
    )
    with SupabaseApiStub(token="sbp_secret_token") as api:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SUPABASE_API",
            json.dumps(
                {
                    "conn_type": "generic",
                    "password": "sbp_secret_token",
                    "extra": {"project_ref": ref, "base_url": api.url},
                }
            ),
        )
        api.projects[ref] = backups_payload(now, newest_age=dt.timedelta(hours=50))
        breaches, _ = check_breaches(cfg, open_storage(f"file://{tmp_path}"), now)
        stale = [b for b in breaches if b.check == "supabase"]
        assert [b.key for b in stale] == ["supabase:projectx:daily"]
        assert "2.1 days old" in stale[0].message and "sbp_secret_token" not in stale[0].message
        api.projects[ref] = backups_payload(now, newest_age=dt.timedelta(hours=3))
        breaches, checked = check_breaches(cfg, open_storage(f"file://{tmp_path}"), now)
        assert not [b for b in breaches if b.check == "supabase"]
        assert "projectx" in checked
    monkeypatch.setenv("AIRFLOW_CONN_SUPABASE_API", json.dumps({"conn_type": "generic", "password": "x"}))
    with pytest.raises(ConfigError, match="project_ref"):
        check_breaches(cfg, open_storage(f"file://{tmp_path}"), now)


def test_a_task_failure_is_kept_as_an_event_for_the_monthly_report(tmp_path: Path) -> None:
    from pgbackup.records import read_events
    from pgbackup_airflow.notifications import record_failure_event

    backups = tmp_path / "backups"
    data = yaml.safe_load((REPO / "include" / "pgbackup.yaml").read_text())
    data["destinations"] = [{"name": "local", "type": "local", "path": str(backups), "primary": True}]
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(data))
    context = {
        "ti": SimpleNamespace(dag_id="pg_backup_monthly", task_id="projectx.drill", try_number=1),
        "task": SimpleNamespace(target="projectx"),
        "exception": RuntimeError("recovery drill FAILED: restore\n  - table a: expected 3, found 0"),
    }
    record_failure_event(context, str(path))
    events = read_events(open_storage(f"file://{backups}"))
    assert len(events) == 1
    assert events[0]["source"] == "pg_backup_monthly.projectx.drill" and events[0]["target"] == "projectx"
    assert events[0]["message"] == "failed (try 1): recovery drill FAILED: restore (details in the task log)"
    # A storage that cannot take it loses the event, never the alert: no exception.
    record_failure_event(context, str(tmp_path / "missing.yaml"))
