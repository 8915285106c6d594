"""db_compare + hard_features.sql: a pg_dump/pg_restore round trip is indistinguishable, a change is not."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from devtools import db_compare as dc
from devtools.pg_cluster import TemporaryCluster

pytestmark = pytest.mark.integration
HARD_FEATURES = Path(__file__).resolve().parents[1] / "sql" / "hard_features.sql"


@pytest.fixture(scope="module")
def source(pg_cluster: TemporaryCluster) -> Iterator[str]:
    dsn = pg_cluster.create_database("hard_src")
    dc.psql_file(dsn, HARD_FEATURES)
    yield dsn
    pg_cluster.drop_database("hard_src")


@pytest.fixture(scope="module")
def dump_file(source: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hard.dump"
        dc.run_pg_tool("pg_dump", ["--format=custom", f"--file={path}"], source)
        yield path


@pytest.fixture
def restored(pg_cluster: TemporaryCluster, dump_file: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"hard_dst_{abs(hash(request.node.nodeid))}"
    dsn = pg_cluster.create_database(name)
    dc.run_pg_tool("pg_restore", ["--exit-on-error", str(dump_file)], dsn)
    yield dsn
    pg_cluster.drop_database(name)


def _run(dsn: str, sql: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def test_hard_features_loaded(source: str) -> None:
    tables = dc.table_checksums(source)
    assert tables['"schema with ""quotes""; and semicolons"."Weird ""Name""; DROP"'][0] == 3
    assert tables['app."café_☕ menu"'][0] == 3
    assert tables["app.empty_table"][0] == 0
    assert tables["app.events"][0] == 60
    parts = ["app.events_2023", "app.events_2024_click", "app.events_2024_other", "app.events_default"]
    assert all(tables[p][0] > 0 for p in parts) and sum(tables[p][0] for p in parts) == 60
    assert tables["app.events_per_kind"][0] == 3  # populated materialized view
    assert tables['archive."Stale MV"'] == (-1, "unpopulated")
    seqs = dc.sequence_values(source)
    assert seqs["archive.reset_seq"] == (77, False)
    assert seqs["archive.never_used_seq"] == (1, False)
    assert seqs["app.orders_id_seq"] == (5000, True)
    assert dc.large_objects_checksum(source)[0] == 3


def test_round_trip_is_identical(source: str, restored: str) -> None:
    assert dc.compare_databases(source, restored) == []
    assert dc.schema_fingerprint(source) == dc.schema_fingerprint(restored)
    assert dc.table_checksums(source) == dc.table_checksums(restored)


@pytest.mark.parametrize(
    ("change", "part"),
    [
        ("UPDATE app.orders SET note = 'tampered' WHERE id = 1", "tables"),
        ('DELETE FROM "schema with ""quotes""; and semicolons"."Weird ""Name""; DROP" WHERE "id; --" = 2', "tables"),
        ("UPDATE app.numbers SET d = d + 1e-12 WHERE id = 1", "tables"),
        ("COMMENT ON TABLE app.empty_table IS 'changed'", "schema"),
        ("ALTER TABLE app.orders DISABLE ROW LEVEL SECURITY", "schema"),
        ("SELECT nextval('archive.never_used_seq')", "sequences"),
        ("SELECT lo_put((SELECT lo FROM app.blobs WHERE id = 1), 0, '\\xff')", "large_objects"),
    ],
)
def test_any_difference_is_detected(source: str, restored: str, change: str, part: str) -> None:
    before = dc.snapshot(restored)
    _run(restored, change)
    after = dc.snapshot(restored)
    assert getattr(before, part) != getattr(after, part)
    for other in {"schema", "tables", "sequences", "large_objects"} - {part}:
        assert getattr(before, other) == getattr(after, other), f"{change!r} leaked into {other}"
    assert dc.compare_databases(source, restored) != []


def test_psql_file_stops_on_error(pg_database: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE ok (i int);\nSELECT no_such_function();\nCREATE TABLE never (i int);\n")
    with pytest.raises(RuntimeError, match="no_such_function"):
        dc.psql_file(pg_database, bad)
    assert "public.never" not in dc.table_checksums(pg_database)


def test_password_reaches_tools_only_via_private_passfile(pg_cluster: TemporaryCluster) -> None:
    with dc.client_conninfo(pg_cluster.dsn()) as (conninfo, env):
        assert pg_cluster.password not in conninfo
        assert "PGPASSWORD" not in env
        passfile = Path(env["PGPASSFILE"])
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert passfile.stat().st_uid == os.geteuid()
    assert not passfile.exists()
