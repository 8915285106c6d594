"""Connection checks for the supabase profile and Supabase hosts."""

from __future__ import annotations

import pytest

from pgbackup.errors import ConnectionConfigError
from pgbackup.pgconn import PgConnInfo, check_profile


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
