"""Compare two PostgreSQL databases: schema, per-table data, sequences, large objects.

Used by restore round-trip tests: a restore is only "proven" when the restored
database is indistinguishable from the source by all four measures.
Passwords in DSNs reach child tools through a temporary 0600 PGPASSFILE, never argv.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from devtools.pg_cluster import pg_bin

# Session settings that make every type's text form deterministic across sessions.
_STABLE_SESSION = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
    " SET extra_float_digits = 1; SET bytea_output = 'hex';"
    " SET row_security = off;"  # error out rather than silently compare RLS-filtered rows
)

_SYSTEM_SCHEMA_FILTER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)


@contextlib.contextmanager
def client_conninfo(dsn: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (conninfo without password, env for the child) for running libpq tools.

    The password, if any, goes into a private temporary PGPASSFILE that is
    deleted afterwards; PGPASSWORD from our own environment is not inherited.
    """
    params = psycopg2.extensions.parse_dsn(dsn)
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    conninfo = psycopg2.extensions.make_dsn(**params)
    if password is None:
        yield conninfo, env
        return
    with tempfile.TemporaryDirectory(prefix="pgpass-") as tmp:
        passfile = Path(tmp) / "pgpass"
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:*:{escaped}\n")
        env["PGPASSFILE"] = str(passfile)
        yield conninfo, env


def run_pg_tool(
    tool: str, args: Sequence[str], dsn: str, *, dbname_flag: str = "--dbname", timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run a libpq client (pg_dump, psql, pg_restore...) against ``dsn``; raise with stderr on failure."""
    with client_conninfo(dsn) as (conninfo, env):
        proc = subprocess.run(
            [pg_bin(tool), f"{dbname_flag}={conninfo}", *args],
            check=False,  # we raise ourselves, with stderr in the message
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def psql_file(dsn: str, path: str | os.PathLike[str]) -> None:
    """Load a SQL file with ``psql -v ON_ERROR_STOP=1 -f``."""
    run_pg_tool("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)], dsn)


# Lines that differ between two dumps of identical databases.
_IGNORED_LINE = re.compile(
    r"^(--.*"  # comments: versions, dates, TOC headers
    r"|\\(un)?restrict .*"  # random per-dump token (pg_dump >= 17.6/16.10/15.14)
    r"|SET .*"
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    r"|\s*)$"
)


def normalized_schema(dsn: str) -> str:
    """``pg_dump --schema-only`` text with volatile lines removed (diff-friendly)."""
    dump = run_pg_tool("pg_dump", ["--schema-only", "--no-owner", "--no-privileges"], dsn).stdout
    return "\n".join(line for line in dump.splitlines() if not _IGNORED_LINE.match(line)) + "\n"


def schema_fingerprint(dsn: str) -> str:
    """sha256 of :func:`normalized_schema`; equal for a faithful restore."""
    return hashlib.sha256(normalized_schema(dsn).encode()).hexdigest()


def _connect(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn)
    conn.set_session(readonly=True, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(_STABLE_SESSION)
    return conn


def table_checksums(dsn: str) -> dict[str, tuple[int, str]]:
    """``{"schema"."table": (row_count, digest)}`` for every table and materialized view.

    Rows are hashed as ``ROW(r.*)::text``: a bare ``r::text`` would silently pick a
    column named ``r`` instead of the row. The digest is order-independent (two
    64-bit sums of per-row md5 halves), so it streams over tables of any size
    instead of building one giant string.
    Partitioned parents are included (they cover their partitions) as well as each
    partition; unpopulated materialized views report ``(-1, "unpopulated")``.
    """
    conn = _connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""
                SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind, c.relispopulated
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'm') AND {_SYSTEM_SCHEMA_FILTER}
                ORDER BY 1
                """
            )
            tables = cur.fetchall()
            result: dict[str, tuple[int, str]] = {}
            for name, relkind, populated in tables:
                if relkind == "m" and not populated:
                    result[name] = (-1, "unpopulated")
                    continue
                cur.execute(
                    f"""
                    SELECT count(*),
                           coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0),
                           coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)
                    FROM (SELECT md5(coalesce(ROW(r.*)::text, '')) AS h FROM {name} AS r) AS rows
                    """
                )
                count, s1, s2 = cur.fetchone()
                result[name] = (int(count), hashlib.md5(f"{s1}:{s2}".encode()).hexdigest())
            return result
    finally:
        conn.close()


def sequence_values(dsn: str) -> dict[str, tuple[int, bool]]:
    """``{"schema"."sequence": (last_value, is_called)}`` including identity sequences."""
    conn = _connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""
                SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'S' AND {_SYSTEM_SCHEMA_FILTER}
                ORDER BY 1
                """
            )
            names = [r[0] for r in cur.fetchall()]
            result: dict[str, tuple[int, bool]] = {}
            for name in names:
                cur.execute(f"SELECT last_value, is_called FROM {name}")
                last_value, is_called = cur.fetchone()
                result[name] = (int(last_value), bool(is_called))
            return result
    finally:
        conn.close()


def large_objects_checksum(dsn: str) -> tuple[int, str]:
    """(count, md5 over every large object's oid and content md5); OIDs survive pg_dump."""
    conn = _connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT count(*),
                       md5(coalesce(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid), ''))
                FROM pg_largeobject_metadata
                """
            )
            count, digest = cur.fetchone()
            return int(count), str(digest)
    finally:
        conn.close()


@dataclass(frozen=True)
class DatabaseSnapshot:
    """Everything a faithful restore must reproduce."""

    schema: str
    tables: dict[str, tuple[int, str]]
    sequences: dict[str, tuple[int, bool]]
    large_objects: tuple[int, str]


def snapshot(dsn: str) -> DatabaseSnapshot:
    return DatabaseSnapshot(
        schema=normalized_schema(dsn),
        tables=table_checksums(dsn),
        sequences=sequence_values(dsn),
        large_objects=large_objects_checksum(dsn),
    )


def _dict_diff(kind: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            out.append(f"{kind} {key}: {a.get(key, '<missing>')} != {b.get(key, '<missing>')}")
    return out


def diff_snapshots(a: DatabaseSnapshot, b: DatabaseSnapshot) -> list[str]:
    """Human-readable differences; an empty list means the databases match."""
    import difflib

    out: list[str] = []
    if a.schema != b.schema:
        delta = difflib.unified_diff(a.schema.splitlines(), b.schema.splitlines(), "a", "b", lineterm="", n=1)
        out.append("schema differs:\n" + "\n".join(list(delta)[:60]))
    out += _dict_diff("table", a.tables, b.tables)
    out += _dict_diff("sequence", a.sequences, b.sequences)
    if a.large_objects != b.large_objects:
        out.append(f"large objects: {a.large_objects} != {b.large_objects}")
    return out


def compare_databases(dsn_a: str, dsn_b: str) -> list[str]:
    """Differences between two live databases (empty list: equal)."""
    return diff_snapshots(snapshot(dsn_a), snapshot(dsn_b))
