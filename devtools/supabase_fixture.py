"""A Supabase-shaped PostgreSQL cluster for tests: platform roles, schemas and objects.

The bootstrap superuser is ``supabase_admin`` (as on Supabase); ``postgres`` is a
NOSUPERUSER login role with Supabase's documented extra rights. The platform lives in
the ``postgres`` database, as in a Supabase project. SQL is in ``devtools/supabase_sql``.

    with supabase_cluster() as sb:
        load_demo_app(sb)
        sb.postgres_dsn()        # connect as the non-superuser postgres, like pgbackup does

``realtime_owner`` chooses who owns the ``supabase_realtime`` publication: ``supabase_admin``
(Supabase's own initial schema) or ``postgres``; only its owner may add tables to it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.db_compare import psql_file
from devtools.pg_cluster import TemporaryCluster, _quote_conninfo

SQL_DIR = Path(__file__).resolve().parent / "supabase_sql"
PLATFORM_SQL = SQL_DIR / "platform.sql"
APP_SQL = SQL_DIR / "app.sql"
SUPERUSER = "supabase_admin"
PROJECT_DB = "postgres"
REALTIME_OWNERS = ("supabase_admin", "postgres")
# The demo app's tables with "enable realtime" on, as pg_dump quotes them.
REALTIME_TABLES = ("public.messages", 'public."Room Events"')


@dataclass
class SupabaseCluster:
    cluster: TemporaryCluster
    postgres_password: str
    realtime_owner: str = "postgres"

    @property
    def host(self) -> str:
        return self.cluster.host

    @property
    def port(self) -> int:
        assert self.cluster.port is not None
        return self.cluster.port

    def postgres_dsn(self, dbname: str = PROJECT_DB) -> str:
        """DSN for the non-superuser ``postgres`` role (what a Supabase user gets)."""
        parts = {"host": self.host, "port": self.port, "user": "postgres", "dbname": dbname,
                 "password": self.postgres_password}
        return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in parts.items())

    def admin_dsn(self, dbname: str = PROJECT_DB) -> str:
        """DSN for the platform superuser ``supabase_admin`` (what Supabase itself uses)."""
        return self.cluster.dsn(dbname)


def install_platform(cluster: TemporaryCluster, postgres_password: str, realtime_owner: str = "postgres") -> None:
    """Turn a cluster bootstrapped by ``supabase_admin`` into a fresh Supabase-shaped project."""
    if realtime_owner not in REALTIME_OWNERS:
        raise ValueError(f"realtime_owner must be one of {REALTIME_OWNERS}, not {realtime_owner!r}")
    psql_file(cluster.dsn(PROJECT_DB), PLATFORM_SQL)
    conn = cluster.connect(PROJECT_DB)
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER ROLE postgres PASSWORD %s", (postgres_password,))
            if realtime_owner != SUPERUSER:
                cur.execute(f"ALTER PUBLICATION supabase_realtime OWNER TO {realtime_owner}")
    finally:
        conn.close()


@contextlib.contextmanager
def supabase_cluster(realtime_owner: str = "postgres") -> Iterator[SupabaseCluster]:
    """A fresh Supabase-shaped project on its own throwaway cluster."""
    password = secrets.token_urlsafe(18)
    with TemporaryCluster(user=SUPERUSER) as cluster:
        install_platform(cluster, password, realtime_owner)
        yield SupabaseCluster(cluster, password, realtime_owner)


def load_demo_app(project: SupabaseCluster, sql: Path = APP_SQL) -> None:
    """Load the demo app as ``postgres``, exactly as a project's SQL editor would run it, then
    enable realtime on its tables."""
    psql_file(project.postgres_dsn(), sql)
    if sql == APP_SQL:
        enable_realtime(project, REALTIME_TABLES)


def enable_realtime(project: SupabaseCluster, tables: tuple[str, ...]) -> None:
    """Add tables to ``supabase_realtime`` as its owner, like the dashboard's realtime toggle
    (the platform runs it with the owner's rights; postgres alone may not when it is not the owner)."""
    conn = project.cluster.connect(PROJECT_DB)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE {project.realtime_owner}")
            cur.execute(f"ALTER PUBLICATION supabase_realtime ADD TABLE {', '.join(tables)}")
    finally:
        conn.close()


PLATFORM_TEMPLATE = "supabase_platform"


def create_platform_template(project: SupabaseCluster, name: str = PLATFORM_TEMPLATE) -> str:
    """Copy a fresh project's database into a template that postgres may clone.

    What validation's scratch server needs for the supabase profile: every scratch database
    is ``CREATE DATABASE ... TEMPLATE <name>``, so it starts with the platform, exactly like a
    new project. Run it before loading any app (the copy is the platform only) and while no
    one is connected to the project database. IS_TEMPLATE lets the non-owner postgres clone it.
    """
    project.cluster.execute(f'CREATE DATABASE "{name}" TEMPLATE {PROJECT_DB}', dbname="template1")
    project.cluster.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true', dbname="template1")
    return name
