"""Connection values: supabase-profile checks, the escaped conninfo, session bounds."""

from __future__ import annotations

import os
import subprocess

import pytest

from devtools.pg_cluster import TemporaryCluster, quote_ident
from pgbackup.errors import ConnectionConfigError
from pgbackup.pgconn import PgConnInfo, check_profile, connect


def conn(host: str, port: int, sslmode: str | None = None) -> PgConnInfo:
    return PgConnInfo(host, port, "postgres", "postgres", "secret-pw", sslmode=sslmode, label="target projectx")


def test_transaction_pooler_is_refused_with_the_alternatives() -> None:
    with pytest.raises(ConnectionConfigError) as failure:
        check_profile(conn("aws-0-eu-west-1.pooler.supabase.com", 6543, "require"), "supabase")
    message = str(failure.value)
    assert "transaction pooler" in message and "5432" in message and "target projectx" in message
    assert "secret-pw" not in message


def test_supabase_hosts_require_tls() -> None:
    with pytest.raises(ConnectionConfigError, match="require TLS"):
        check_profile(conn("db.abcdefghijklmnop.supabase.co", 5432, None), "plain")
    check_profile(conn("db.abcdefghijklmnop.supabase.co", 5432, "verify-full"), "supabase")


def test_plain_profile_accepts_any_port_off_supabase() -> None:
    check_profile(conn("10.0.0.5", 6543), "plain")


# Names a libpq conninfo parser would misread unless each value is quoted and escaped.
HOSTILE_DBNAMES = (
    "postgresql://evil@elsewhere:1/x",
    "rt=1 host=elsewhere",
    "with space and 'quote'",
    "back\\slash\\' end\\",
    'Ünïcode "double" = \'',
)


def test_conninfo_quotes_every_value_and_leaves_out_the_password() -> None:
    info = PgConnInfo("db.example", 5433, "o'neil", "a b=c\\'d", "secret-pw", sslmode="require").conninfo()
    assert "dbname='a b=c\\\\\\'d'" in info
    assert "user='o\\'neil'" in info
    assert "host='db.example'" in info and "port='5433'" in info and "sslmode='require'" in info
    assert "connect_timeout='10'" in info and "tcp_user_timeout='120000'" in info and "keepalives='1'" in info
    assert "secret-pw" not in info and "password" not in info


@pytest.mark.parametrize("dbname", HOSTILE_DBNAMES)
def test_conninfo_reaches_a_database_with_a_hostile_name(pg_cluster: TemporaryCluster, dbname: str) -> None:
    """psql, psycopg2 and our connect() all land in exactly the named database."""
    pg_cluster.create_database(dbname)
    try:
        target = PgConnInfo(pg_cluster.host, pg_cluster.port, pg_cluster.user, dbname, pg_cluster.password)
        env = {"PATH": os.environ["PATH"], "PGPASSWORD": pg_cluster.password}
        result = subprocess.run(
            [pg_cluster.bin("psql"), "-XAtq", "-c", "SELECT current_database()", "--dbname", target.conninfo()],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n") == dbname
        import psycopg2

        raw = psycopg2.connect(target.conninfo(), password=pg_cluster.password)
        try:
            with raw.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone() == (dbname,)
        finally:
            raw.close()
        ours = connect(target)
        try:
            with ours.cursor() as cursor:
                cursor.execute("SELECT current_database(), current_setting('statement_timeout')")
                assert cursor.fetchone() == (dbname, "1h")
        finally:
            ours.close()
    finally:
        pg_cluster.drop_database(dbname)


def test_conninfo_carries_a_hostile_user_name(pg_cluster: TemporaryCluster) -> None:
    role = "o'ne\\il = x"
    password = "pw with ' and \\ and :"
    pg_cluster.execute(f"CREATE ROLE {quote_ident(role)} LOGIN PASSWORD %s", (password,))
    try:
        target = PgConnInfo(pg_cluster.host, pg_cluster.port, role, "postgres", password)
        result = subprocess.run(
            [pg_cluster.bin("psql"), "-XAtq", "-c", "SELECT current_user", "--dbname", target.conninfo()],
            env={"PATH": os.environ["PATH"], "PGPASSWORD": password},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n") == role
    finally:
        pg_cluster.execute(f"DROP ROLE {quote_ident(role)}")


def test_every_session_carries_the_connect_tcp_and_statement_bounds(pg_cluster: TemporaryCluster) -> None:
    import psycopg2.errors

    target = PgConnInfo(
        pg_cluster.host,
        pg_cluster.port,
        pg_cluster.user,
        "postgres",
        pg_cluster.password,
        connect_timeout=7,
        statement_timeout_ms=1500,
        tcp_user_timeout_ms=30_000,
    )
    session = connect(target, autocommit=False)
    try:
        used = session.get_dsn_parameters()
        assert used["connect_timeout"] == "7" and used["tcp_user_timeout"] == "30000"
        assert used["keepalives"] == "1" and used["keepalives_idle"] == "30"
        assert session.autocommit is False
        with session.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("1500ms",)
            with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"):
                cursor.execute("SELECT pg_sleep(5)")
    finally:
        session.close()
