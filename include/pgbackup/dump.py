"""pg_dump as a pipeline stage, plus exact row counts taken in the dump's own snapshot.

The counting session exports a snapshot (``pg_export_snapshot()``), pg_dump imports it
with ``--snapshot``, and the counts are taken in the exporting transaction while the dump
runs, so both see exactly the same data.
See https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-SNAPSHOT-SYNCHRONIZATION
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgbackup.errors import DumpError, RestoreError
from pgbackup.pgconn import PgConnInfo, connect, libpq_environment
from pgbackup.pgtools import find_program, program_version
from pgbackup.pipeline import StageCommand

if TYPE_CHECKING:
    from psycopg2 import sql

log = logging.getLogger(__name__)

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# Ordinary tables and leaf partitions hold the rows; extension-owned tables are not dumped.
_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname <> ALL(%s)
  AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# Neither a schema-only nor a data-only dump populates these; a restore of the pair refreshes them.
_POPULATED_MATVIEWS_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname <> ALL(%s)
ORDER BY c.oid
"""


def qualified(schema: str, table: str) -> str:
    """The manifest's table key: ``schema.table``, each part double-quoted unless it is a
    plain lowercase ASCII word.

    The key is for people and for matching (it must stay stable across versions), not SQL:
    ``order.select`` is a valid key but not valid SQL. :func:`split_qualified` turns it back
    into its exact (schema, table) pair and :func:`relation_sql` quotes that pair for a query.
    """
    return f"{_key_part(schema)}.{_key_part(table)}"


def _key_part(name: str) -> str:
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


# One key part as qualified() writes it: a bare lowercase ASCII word, or a quoted name with "" for ".
_KEY_PART = r'(?:[a-z_][a-z0-9_]*|"(?:[^"]|"")*")'
_KEY_RE = re.compile(rf"(?P<schema>{_KEY_PART})\.(?P<table>{_KEY_PART})", re.DOTALL)


def split_qualified(key: str) -> tuple[str, str]:
    """The exact (schema, table) pair of a manifest key written by :func:`qualified`.

    The grammar is unambiguous (a bare part holds no dot or quote; a quoted part doubles
    its quotes), so every key any version wrote parses back to its pair.
    """
    match = _KEY_RE.fullmatch(key)
    if match is None:
        raise RestoreError(f"manifest table key {key!r} is not a schema.table name as pgbackup writes it")
    return _unquote_key_part(match["schema"]), _unquote_key_part(match["table"])


def _unquote_key_part(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def relation_sql(key: str) -> sql.Composable:
    """``schema.table`` of a manifest key, quoted by the driver for use in SQL text."""
    from psycopg2 import sql

    return sql.Identifier(*split_qualified(key))


def exact_name_pattern(name: str) -> str:
    """A pg_dump/psql name pattern matching exactly ``name`` (no wildcards, case kept).

    Inside double quotes a pattern's ``*``, ``?`` and ``.`` are literal and ``""`` is a quote.
    https://www.postgresql.org/docs/current/app-psql.html#APP-PSQL-PATTERNS
    """
    return '"' + name.replace('"', '""') + '"'


@dataclass
class SourceInfo:
    database: str
    server_version: str
    server_version_num: int
    snapshot: str | None
    tables: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    populated_matviews: list[str] = field(default_factory=list)

    @property
    def server_major(self) -> int:
        return self.server_version_num // 10000

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "snapshot": self.snapshot,
            "tables": self.tables,
            "row_counts": self.row_counts,
            "populated_matviews": self.populated_matviews,
        }


class SnapshotSession:
    """A REPEATABLE READ transaction that exports its snapshot and counts rows in it."""

    def __init__(self, conn: PgConnInfo, exclude_schemas: tuple[str, ...] = ()) -> None:
        self.conn_info = conn
        self.exclude_schemas = exclude_schemas
        self._conn: Any = None
        self._count_thread: threading.Thread | None = None
        self._count_error: list[BaseException] = []
        self.info: SourceInfo | None = None

    def __enter__(self) -> SnapshotSession:
        self._conn = connect(self.conn_info, autocommit=False)
        try:
            with self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(
                    "SELECT pg_export_snapshot(), current_setting('server_version'), "
                    "current_setting('server_version_num')::int, current_database()"
                )
                snapshot, version, version_num, database = cur.fetchone()
                cur.execute(_TABLES_SQL, (list(SYSTEM_SCHEMAS + self.exclude_schemas),))
                tables = [qualified(s, t) for s, t in cur.fetchall()]
                cur.execute(_POPULATED_MATVIEWS_SQL, (list(SYSTEM_SCHEMAS + self.exclude_schemas),))
                matviews = [qualified(s, t) for s, t in cur.fetchall()]
        except Exception as exc:
            self._conn.close()
            raise DumpError(f"{self.conn_info.describe()}: cannot start the snapshot session: {exc}") from exc
        self.info = SourceInfo(database, version, version_num, snapshot, tables, populated_matviews=matviews)
        return self

    def start_counting(self) -> None:
        """Count every table's rows in a thread, inside the exported snapshot."""
        self._count_thread = threading.Thread(target=self._count, name="pgbackup-rowcount", daemon=True)
        self._count_thread.start()

    def _count(self) -> None:
        from psycopg2 import sql

        assert self.info is not None
        count_sql = sql.SQL("SELECT count(*) FROM ONLY {}")
        try:
            with self._conn.cursor() as cur:
                for table in self.info.tables:
                    # A failed count must not abort the transaction: pg_dump may not have
                    # imported the exported snapshot yet, and an aborted one cannot be imported.
                    cur.execute("SAVEPOINT pgbackup_count")
                    try:
                        cur.execute(count_sql.format(relation_sql(table)))
                        self.info.row_counts[table] = int(cur.fetchone()[0])
                    except Exception:
                        cur.execute("ROLLBACK TO SAVEPOINT pgbackup_count")
                        raise
                    cur.execute("RELEASE SAVEPOINT pgbackup_count")
        except BaseException as exc:  # noqa: BLE001 - surfaced by finish_counting
            self._count_error.append(exc)

    def finish_counting(self) -> dict[str, int]:
        if self._count_thread is not None:
            self._count_thread.join()
        if self._count_error:
            raise DumpError(f"{self.conn_info.describe()}: counting rows failed: {self._count_error[0]}")
        assert self.info is not None
        return dict(self.info.row_counts)

    def __exit__(self, *exc: object) -> None:
        if self._count_thread is not None and self._count_thread.is_alive():
            with contextlib.suppress(Exception):
                self._conn.cancel()
            self._count_thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._conn.rollback()
        with contextlib.suppress(Exception):
            self._conn.close()


def server_major_version(conn: PgConnInfo) -> int:
    """The server's major version, via a short connection."""
    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            cur.execute("SHOW server_version_num")
            return int(cur.fetchone()[0]) // 10000
    finally:
        connection.close()


@dataclass
class DumpStage:
    """``pg_dump`` writing one archive to stdout."""

    conn: PgConnInfo
    kind: str  # full | schema | data
    dump_format: str = "custom"
    snapshot: str | None = None
    server_major: int | None = None
    exclude_schemas: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    privileges: bool = False  # keep GRANT/REVOKE (the supabase profile restores them exactly)
    name: str = "pg_dump"
    error_class: type[DumpError] = DumpError

    def argv(self, program: str) -> list[str]:
        # The connection as an escaped conninfo: its TCP timeouts bound a hung server, and a
        # database name holding "=" or "postgresql://" stays a name.
        argv = [program, f"--dbname={self.conn.conninfo()}", "--no-password", "--no-owner"]
        if not self.privileges:
            argv.append("--no-privileges")
        if self.dump_format == "custom":
            # Compression is its own stage (multi-threaded, and the same for both paths).
            argv += ["--format=custom", "--compress=0"]
        else:
            argv += ["--format=plain"]
        if self.kind == "full":
            argv += ["--clean", "--if-exists"]  # plain only; pg_restore takes --clean for archives
        elif self.kind == "schema":
            argv += ["--schema-only"]
        elif self.kind == "data":
            argv += ["--data-only"]
        else:
            raise DumpError(f"unknown dump kind {self.kind!r}; expected full, schema or data")
        if self.snapshot:
            argv += [f"--snapshot={self.snapshot}"]
        for schema in self.exclude_schemas:
            # Exactly that schema, as the snapshot's table list excludes it (not a pattern).
            argv += [f"--exclude-schema={exact_name_pattern(schema)}"]
        argv += list(self.extra_args)
        return argv

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        program = find_program("pg_dump", self.server_major)
        with libpq_environment(self.conn) as env:
            yield StageCommand(self.argv(program), env)

    def pg_dump_version(self) -> str:
        major, minor = program_version(find_program("pg_dump", self.server_major))
        return f"{major}.{minor}"
