"""PostgreSQL connection values, and how child processes get them without leaking the password.

The password never goes into argv (visible in ``ps``), logs or a file: libpq tools read it
from ``PGPASSWORD`` in their own environment (readable only by our uid, and gone with the
process, so a SIGKILL leaves nothing on disk). That environment is otherwise minimal: the
parent's (with Airflow's ``AIRFLOW_CONN_*`` secrets) is never passed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pgbackup.errors import ConnectionConfigError, DatabaseUnavailableError
from pgbackup.pipeline import minimal_environment

SUPABASE_TRANSACTION_POOLER_PORT = 6543
SUPABASE_HOST_SUFFIXES = (".supabase.co", ".supabase.com")
TLS_SSLMODES = ("require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PgConnInfo:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None = None
    sslmode: str | None = None
    label: str = ""  # what to call it in messages, e.g. "target projectx (conn projectx_db)"
    # Bounds so a hung server or a dead network path fails instead of blocking for ever
    # (issue 7 item 4); the Airflow layer fills them from the config's ``timeouts`` section.
    connect_timeout: int = 10
    statement_timeout_ms: int = 3_600_000
    tcp_user_timeout_ms: int = 120_000
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 6

    def __repr__(self) -> str:  # never print the password
        return f"PgConnInfo({self.describe()})"

    def describe(self) -> str:
        where = f"{self.user}@{self.host}:{self.port}/{self.dbname}"
        return f"{self.label} [{where}]" if self.label else where

    def with_dbname(self, dbname: str) -> PgConnInfo:
        return replace(self, dbname=dbname)

    def is_same_server(self, other: PgConnInfo) -> bool:
        return (self.host.lower(), self.port) == (other.host.lower(), other.port)

    def connection_parameters(self) -> dict[str, str]:
        """Every libpq keyword we set, except the password.

        No ``options`` startup parameter: poolers (PgBouncer, Supavisor) may refuse it. Our own
        sessions get ``statement_timeout`` with a SET in ``connect``; pg_dump, pg_restore and dump
        scripts set it to 0 themselves, so the bound for child programs is the TCP one.
        """
        params = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": str(self.connect_timeout),
            "tcp_user_timeout": str(self.tcp_user_timeout_ms),
            "keepalives": "1",
            "keepalives_idle": str(self.keepalives_idle),
            "keepalives_interval": str(self.keepalives_interval),
            "keepalives_count": str(self.keepalives_count),
            "application_name": "pgbackup",
        }
        if self.sslmode:
            params["sslmode"] = self.sslmode
        return params

    def conninfo(self) -> str:
        """A libpq keyword/value conninfo string (for ``--dbname=`` or psql), never the password.

        Each value is single-quoted with backslash and quote escaped, so names holding ``=``,
        spaces, quotes or a ``postgresql://`` prefix stay plain values (issue 7 item 8).
        """
        return " ".join(f"{key}={quote_conninfo_value(value)}" for key, value in self.connection_parameters().items())

    def libpq_env(self) -> dict[str, str]:
        """Environment for libpq tools; connection values travel here, never in argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": "pgbackup",
        }
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def psycopg_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(self.connection_parameters())
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


def quote_conninfo_value(value: str) -> str:
    """Quote one conninfo value per libpq's keyword/value rules."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_profile(conn: PgConnInfo, profile: str) -> None:
    """Refuse connections that cannot produce a consistent, private dump for this profile."""
    host = conn.host.lower()
    on_supabase = host.endswith(SUPABASE_HOST_SUFFIXES)
    if profile == "supabase" or on_supabase:
        if conn.port == SUPABASE_TRANSACTION_POOLER_PORT:
            raise ConnectionConfigError(
                f"{conn.describe()}: port 6543 is Supabase's transaction pooler, which cannot hold the "
                "exported snapshot and session state pg_dump needs. Use the session pooler "
                "(same pooler host, port 5432) or the direct connection db.<project-ref>.supabase.co:5432."
            )
    if on_supabase and conn.sslmode not in TLS_SSLMODES:
        raise ConnectionConfigError(
            f"{conn.describe()}: Supabase hosts require TLS; set the connection's extra "
            f'{{"sslmode": "require"}} (or verify-full with the Supabase CA), got sslmode={conn.sslmode!r}'
        )


@contextlib.contextmanager
def libpq_environment(conn: PgConnInfo) -> Iterator[dict[str, str]]:
    """A minimal environment plus this connection, for a child libpq process."""
    yield minimal_environment(conn.libpq_env())


def connect(conn: PgConnInfo, *, autocommit: bool = True) -> Any:
    """A psycopg2 connection; failures name the target, never the password."""
    import psycopg2

    try:
        connection = psycopg2.connect(**conn.psycopg_kwargs())
    except psycopg2.OperationalError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailableError(f"cannot connect to {conn.describe()}: {detail}") from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, false)", (f"{conn.statement_timeout_ms}ms",))
    except psycopg2.Error as exc:
        connection.close()
        raise DatabaseUnavailableError(f"cannot set up a session on {conn.describe()}: {exc}".strip()) from None
    connection.autocommit = autocommit
    return connection
