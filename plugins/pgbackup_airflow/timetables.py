"""The monthly cycle's schedule: the first Sunday of every month, at a fixed UTC time.

Cron cannot say this: ``0 3 1-7 * 0`` fires when the day of month is 1-7 *or* the day
is a Sunday (POSIX cron ORs the two day fields when both are restricted), i.e. on
every Sunday plus the 1st to 7th. See
https://pubs.opengroup.org/onlinepubs/9799919799/utilities/crontab.html ("If both ... are
specified, ... shall match either").

A custom timetable must subclass the core ``Timetable`` and be registered by a plugin
(``plugins/pgbackup_plugin.py``) so the scheduler can deserialize it:
https://airflow.apache.org/docs/apache-airflow/stable/howto/timetable.html
Runs are trigger-style (as ``CronTriggerTimetable``): the logical date is the slot itself.
"""

from __future__ import annotations

import calendar
import datetime
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime

SUNDAY = calendar.SUNDAY  # 6, as datetime.weekday() counts


def first_sunday(year: int, month: int) -> datetime.date:
    first = datetime.date(year, month, 1)
    return first + datetime.timedelta(days=(SUNDAY - first.weekday()) % 7)


class FirstSundayOfMonthTimetable(Timetable):
    """Fires once a month, on its first Sunday at ``hour:minute`` UTC.

    :param hour: hour of the day, 0-23 (UTC)
    :param minute: minute of the hour, 0-59
    """

    def __init__(self, hour: int = 3, minute: int = 0) -> None:
        if not (isinstance(hour, int) and 0 <= hour <= 23 and isinstance(minute, int) and 0 <= minute <= 59):
            raise ValueError(
                f"FirstSundayOfMonthTimetable: expected hour 0-23 and minute 0-59, got hour={hour!r} minute={minute!r}"
            )
        self.hour = hour
        self.minute = minute
        self.description = f"First Sunday of every month at {hour:02d}:{minute:02d} UTC"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FirstSundayOfMonthTimetable):
            return NotImplemented
        return (self.hour, self.minute) == (other.hour, other.minute)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.hour, self.minute))

    @property
    def summary(self) -> str:
        return f"first Sunday {self.hour:02d}:{self.minute:02d} UTC"

    def serialize(self) -> dict[str, Any]:
        return {"hour": self.hour, "minute": self.minute}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls(hour=int(data["hour"]), minute=int(data["minute"]))

    # -- slots -------------------------------------------------------------------------

    def slot(self, year: int, month: int) -> DateTime:
        day = first_sunday(year, month)
        return pendulum.datetime(day.year, day.month, day.day, self.hour, self.minute, tz="UTC")

    def _next_month_slot(self, moment: DateTime) -> DateTime:
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return self.slot(year, month)

    def _previous_month_slot(self, moment: DateTime) -> DateTime:
        year, month = (moment.year - 1, 12) if moment.month == 1 else (moment.year, moment.month - 1)
        return self.slot(year, month)

    def align_to_next(self, moment: datetime.datetime) -> DateTime:
        """The first slot at or after ``moment``."""
        current = pendulum.instance(moment).in_timezone("UTC")
        candidate = self.slot(current.year, current.month)
        return candidate if candidate >= current else self._next_month_slot(current)

    def align_to_prev(self, moment: datetime.datetime) -> DateTime:
        """The last slot at or before ``moment``."""
        current = pendulum.instance(moment).in_timezone("UTC")
        candidate = self.slot(current.year, current.month)
        return candidate if candidate <= current else self._previous_month_slot(current)

    def after(self, moment: datetime.datetime) -> DateTime:
        """The first slot strictly after ``moment``."""
        return self.align_to_next(pendulum.instance(moment) + datetime.timedelta(microseconds=1))

    # -- Timetable protocol --------------------------------------------------------------

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        # The same choices as CronTriggerTimetable (run_immediately=False): with catchup,
        # every slot from the start date on; without, never a slot older than the latest past one.
        if restriction.catchup:
            if last_automated_data_interval is not None:
                next_run = self.after(last_automated_data_interval.end)
            elif restriction.earliest is None:
                next_run = self.align_to_next(pendulum.now("UTC"))
            else:
                next_run = self.align_to_next(restriction.earliest)
        else:
            candidates = [self.align_to_prev(pendulum.now("UTC"))]
            if last_automated_data_interval is not None:
                candidates.append(self.after(last_automated_data_interval.end))
            elif restriction.earliest is None:
                candidates.append(self.align_to_next(pendulum.now("UTC")))
            if restriction.earliest is not None:
                candidates.append(self.align_to_next(restriction.earliest))
            next_run = max(candidates)
        if restriction.latest is not None and restriction.latest < next_run:
            return None
        return DagRunInfo.exact(next_run)
