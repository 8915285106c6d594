"""PostgreSQL connection values, and how child processes get them without leaking the password.

The password never goes into argv (visible in ``ps``) nor into logs: libpq tools read it
from a private ``PGPASSFILE`` (mode 0600) that lives only as long as the command.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pgbackup.errors import ConnectionConfigError, DatabaseUnavailableError

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

    def __repr__(self) -> str:  # never print the password
        return f"PgConnInfo({self.describe()})"

    def describe(self) -> str:
        where = f"{self.user}@{self.host}:{self.port}/{self.dbname}"
        return f"{self.label} [{where}]" if self.label else where

    def with_dbname(self, dbname: str) -> PgConnInfo:
        return replace(self, dbname=dbname)

    def is_same_server(self, other: PgConnInfo) -> bool:
        return (self.host.lower(), self.port) == (other.host.lower(), other.port)

    def libpq_env(self, passfile: str | None) -> dict[str, str]:
        """Environment for libpq tools; connection values travel here, never in argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.dbname,
            "PGCONNECT_TIMEOUT": "15",
            "PGAPPNAME": "pgbackup",
        }
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        if passfile:
            env["PGPASSFILE"] = passfile
        return env

    def psycopg_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": 15,
            "application_name": "pgbackup",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        return kwargs


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
def passfile_for(conn: PgConnInfo) -> Iterator[str | None]:
    """A throwaway 0600 pgpass file for this connection, removed on exit."""
    if conn.password is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="pgbackup-pgpass-")
    try:
        os.fchmod(fd, 0o600)

        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        line = ":".join(esc(v) for v in ("*", "*", "*", conn.user, conn.password)) + "\n"
        os.write(fd, line.encode())
        os.close(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def libpq_environment(conn: PgConnInfo) -> Iterator[dict[str, str]]:
    """``os.environ`` plus this connection, for a child libpq process."""
    with passfile_for(conn) as passfile:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(conn.libpq_env(passfile))
        yield env


def connect(conn: PgConnInfo, *, autocommit: bool = True) -> Any:
    """A psycopg2 connection; failures name the target, never the password."""
    import psycopg2

    try:
        connection = psycopg2.connect(**conn.psycopg_kwargs())
    except psycopg2.OperationalError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailableError(f"cannot connect to {conn.describe()}: {detail}") from None
    connection.autocommit = autocommit
    return connection
