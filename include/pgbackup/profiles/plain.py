"""Any PostgreSQL server: pg_dump and pg_restore as they are."""

from __future__ import annotations

from pgbackup.profiles import Profile


class PlainProfile(Profile):
    name = "plain"
