"""The monthly timetable fires on the first Sunday of each month only, and survives
serialization through the plugin that registers it (as the scheduler reads it back)."""

from __future__ import annotations

import calendar
import datetime
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable

REPO = Path(__file__).resolve().parents[2]
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MONTHS = 30  # 2026-01 .. 2028-06: months starting on Sunday (2026-02, 2026-03, 2026-11, 2027-08)
# and on Monday (2026-06, 2027-02, 2027-03, 2027-11, 2028-05), plus two year ends


def expected_first_sundays(start: datetime.datetime, months: int, hour: int, minute: int) -> list[str]:
    """Computed independently of the timetable: the first Sunday column of each month's calendar."""
    found = []
    year, month = start.year, start.month
    for _ in range(months):
        week = next(w for w in calendar.Calendar(firstweekday=calendar.MONDAY).monthdayscalendar(year, month) if w[6])
        found.append(f"{year:04d}-{month:02d}-{week[6]:02d}T{hour:02d}:{minute:02d}:00+00:00")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def test_expected_dates_cover_months_starting_on_sunday_and_monday() -> None:
    dates = expected_first_sundays(START, MONTHS, 3, 0)
    assert "2026-02-01T03:00:00+00:00" in dates  # the 1st is a Sunday
    assert "2026-06-07T03:00:00+00:00" in dates  # the 1st is a Monday: the latest possible day
    assert "2027-08-01T03:00:00+00:00" in dates and "2027-03-07T03:00:00+00:00" in dates


def _walk(timetable: object, months: int, catchup: bool = True) -> list[str]:
    from airflow.serialization.encoders import coerce_to_core_timetable

    core = coerce_to_core_timetable(timetable)  # type: ignore[call-overload]
    restriction = TimeRestriction(earliest=pendulum.instance(START), latest=None, catchup=catchup)
    last: DataInterval | None = None
    runs = []
    for _ in range(months):
        info = core.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        assert info is not None
        runs.append(info.logical_date.isoformat())
        last = info.data_interval
    return runs


def test_fires_on_the_first_sunday_of_each_month_for_30_months() -> None:
    runs = _walk(FirstSundayOfMonthTimetable(hour=3, minute=0), MONTHS)
    assert runs == expected_first_sundays(START, MONTHS, 3, 0)
    for run in runs:
        moment = datetime.datetime.fromisoformat(run)
        assert moment.weekday() == calendar.SUNDAY and moment.day <= 7


def test_cron_with_both_day_fields_would_fire_on_either() -> None:
    """Why a custom timetable: classic cron ORs day-of-month and day-of-week."""
    from airflow.sdk import CronTriggerTimetable

    cron_runs = _walk(CronTriggerTimetable("0 3 1-7 * 0", timezone="UTC"), 12)
    assert any(datetime.datetime.fromisoformat(r).weekday() != calendar.SUNDAY for r in cron_runs)
    assert set(cron_runs) - set(expected_first_sundays(START, MONTHS, 3, 0))


def test_an_odd_time_and_a_start_exactly_on_a_slot() -> None:
    timetable = FirstSundayOfMonthTimetable(hour=23, minute=59)
    slot = pendulum.datetime(2026, 2, 1, 23, 59, tz="UTC")  # a month starting on a Sunday
    restriction = TimeRestriction(earliest=slot, latest=None, catchup=True)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first is not None and first.logical_date == slot  # a start on a slot includes it
    second = timetable.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
    assert second is not None and second.logical_date == pendulum.datetime(2026, 3, 1, 23, 59, tz="UTC")


def test_latest_restriction_stops_scheduling() -> None:
    restriction = TimeRestriction(
        earliest=pendulum.instance(START), latest=pendulum.datetime(2026, 1, 4, 2, 59, tz="UTC"), catchup=True
    )
    info = FirstSundayOfMonthTimetable().next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert info is None  # the first slot, 2026-01-04 03:00, is after the end date


def test_without_catchup_only_the_latest_past_slot_or_later_runs() -> None:
    timetable = FirstSundayOfMonthTimetable()
    now = pendulum.now("UTC")
    restriction = TimeRestriction(earliest=pendulum.datetime(2020, 1, 1, tz="UTC"), latest=None, catchup=False)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert info is not None
    assert info.logical_date == timetable.align_to_prev(now)  # not 2020's first slot
    assert info.logical_date.weekday() == calendar.SUNDAY and info.logical_date.day <= 7


def test_manual_run_interval_is_the_trigger_moment() -> None:
    moment = pendulum.datetime(2026, 5, 13, 10, 0, tz="UTC")
    assert FirstSundayOfMonthTimetable().infer_manual_data_interval(run_after=moment) == DataInterval.exact(moment)


@pytest.mark.parametrize(("hour", "minute"), [(24, 0), (-1, 0), (3, 60), ("3", 0)])
def test_bad_time_is_refused_naming_the_expected_range(hour: object, minute: object) -> None:
    with pytest.raises(ValueError, match="expected hour 0-23 and minute 0-59"):
        FirstSundayOfMonthTimetable(hour=hour, minute=minute)  # type: ignore[arg-type]


def test_serialized_dag_round_trip_through_the_registering_plugin(tmp_path: Path) -> None:
    """As the dag processor and scheduler do: serialize the DAG, read it back, schedule from it.

    A fresh interpreter with the repository's plugins folder, because Airflow caches plugins."""
    script = f"""
        import datetime, json
        from airflow.sdk import DAG
        from airflow.serialization.encoders import coerce_to_core_timetable
        from airflow.serialization.serialized_objects import DagSerialization
        from airflow.timetables.base import TimeRestriction
        import pendulum
        from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable

        with DAG("monthly_probe", schedule=FirstSundayOfMonthTimetable(hour=3, minute=0),
                 start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), catchup=True) as dag:
            pass
        blob = json.dumps(DagSerialization.to_dict(dag))
        restored = DagSerialization.from_dict(json.loads(blob))
        timetable = coerce_to_core_timetable(restored.timetable)
        restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, tz="UTC"), latest=None, catchup=True)
        last, runs = None, []
        for _ in range({MONTHS}):
            info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            runs.append(info.logical_date.isoformat())
            last = info.data_interval
        print(json.dumps({{"type": type(timetable).__module__ + "." + type(timetable).__name__,
                          "same": timetable == dag.timetable, "summary": timetable.summary,
                          "description": restored.timetable.description,
                          "in_blob": "pgbackup_airflow.timetables.FirstSundayOfMonthTimetable" in blob,
                          "runs": runs}}))
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=REPO, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "pgbackup_airflow.timetables.FirstSundayOfMonthTimetable"
    assert result["in_blob"] and result["same"]
    assert result["summary"] == "first Sunday 03:00 UTC"
    assert result["description"] == "First Sunday of every month at 03:00 UTC"
    assert result["runs"] == expected_first_sundays(START, MONTHS, 3, 0)


def test_unregistered_timetable_cannot_be_serialized(tmp_path: Path) -> None:
    """Without the plugin the scheduler could not read the DAG back: the registration is load-bearing."""
    script = """
        import datetime
        from airflow.sdk import DAG
        from airflow.serialization.serialized_objects import DagSerialization
        from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable
        with DAG("monthly_probe", schedule=FirstSundayOfMonthTimetable(),
                 start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)) as dag:
            pass
        try:
            DagSerialization.to_dict(dag)
        except Exception as exc:
            print("refused:", type(exc).__name__)
        else:
            print("serialized")
    """
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "no-plugins"),
        "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=REPO, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("refused:")


def test_timetable_module_is_cheap_to_import() -> None:
    """DAG files import it at parse time (budget 0.5 s per file); airflow.sdk is already loaded there."""
    script = """
        import time, airflow.sdk
        started = time.perf_counter()
        import pgbackup_airflow.timetables
        print(time.perf_counter() - started)
    """
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=REPO, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 0.1
