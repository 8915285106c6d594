"""Registers pgbackup's custom timetable with Airflow.

Airflow loads every ``.py`` in the plugins folder under its bare file name, so the class
is imported here through its package: the registered name must be the one DAG files use
(``pgbackup_airflow.timetables.FirstSundayOfMonthTimetable``) or a serialized DAG cannot
be read back by the scheduler.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable


class PgBackupPlugin(AirflowPlugin):
    name = "pgbackup"
    timetables = [FirstSundayOfMonthTimetable]
