"""pg_dump reads the snapshot the row counts were taken in, even when the source keeps changing.

Catches the mutation "--snapshot no longer passed to pg_dump" (issue 7, item 14). A real
write lands between the snapshot export and the dump: pg_dump is started through a wrapper
(picked up through PGBACKUP_PG_BINDIR) that holds it back until the test has committed new
rows in the source, then execs the real pg_dump. The restored database must still hold
exactly the manifest's snapshot counts, and those must not include the new rows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup.pgconn import PgConnInfo
from pgbackup.pgtools import find_program
from pgbackup.restore import DecryptionKey, validate_backup
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import make_request, take_backup, validation_settings

pytestmark = pytest.mark.integration

ROWS_AT_SNAPSHOT = 1000
ROWS_WRITTEN_DURING_DUMP = 250
WAIT_SECONDS = 60


def held_back_pg_dump(root: Path) -> tuple[Path, Path, Path]:
    """A bin directory whose pg_dump announces it started, then waits for ``go`` before running."""
    bindir = root / "bin"
    bindir.mkdir()
    started, go = root / "dump-started", root / "go"
    wrapper = bindir / "pg_dump"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$1" in --version|-V) ;; *)\n'
        f"  : > {started}\n"
        f"  i=0; while [ ! -e {go} ] && [ $i -lt {WAIT_SECONDS * 20} ]; do /bin/sleep 0.05; i=$((i+1)); done ;;\n"
        "esac\n"
        f'exec {find_program("pg_dump")} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bindir, started, go


def write_while_dump_waits(cluster: TemporaryCluster, db: str, started: Path, go: Path) -> threading.Thread:
    def writer() -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            # Committed after the snapshot was exported, before pg_dump opened its own transaction.
            cluster.execute(
                f"INSERT INTO users SELECT g, 'late' || g FROM generate_series({ROWS_AT_SNAPSHOT + 1}, "
                f"{ROWS_AT_SNAPSHOT + ROWS_WRITTEN_DURING_DUMP}) g; DELETE FROM users WHERE id <= 10",
                dbname=db,
            )
        finally:
            go.touch()

    thread = threading.Thread(target=writer, name="concurrent-writer", daemon=True)
    thread.start()
    return thread


@pytest.mark.fault(
    "the source is written between the snapshot export and the start of pg_dump",
    "the dump reads the exported snapshot: restored row counts equal the manifest's, which exclude the new rows",
)
@pytest.mark.parametrize("data_path", ["staged", "stream"])
def test_rows_written_after_the_snapshot_are_in_neither_counts_nor_dump(
    data_path: str,
    pg_cluster: TemporaryCluster,
    scratch_cluster: TemporaryCluster,
    source_db: PgConnInfo,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    workdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg_cluster.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text); "
        f"INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, {ROWS_AT_SNAPSHOT}) g",
        dbname=source_db.dbname,
    )
    (tmp_path / "backups").mkdir()
    storage = open_storage(f"file://{tmp_path}/backups")
    bindir, started, go = held_back_pg_dump(tmp_path)
    monkeypatch.setenv("PGBACKUP_PG_BINDIR", str(bindir))
    writer = write_while_dump_waits(pg_cluster, source_db.dbname, started, go)
    manifest = take_backup(data_path, make_request(source_db, gpg_key), storage, workdir)
    writer.join(timeout=WAIT_SECONDS)
    monkeypatch.delenv("PGBACKUP_PG_BINDIR")

    assert started.exists() and go.exists(), "pg_dump never went through the holding wrapper"
    counts = manifest.source["row_counts"]
    assert list(counts.values()) == [ROWS_AT_SNAPSHOT], counts  # the write came after the snapshot
    now = pg_cluster.execute("SELECT count(*) FROM users", dbname=source_db.dbname)
    assert now == [(ROWS_AT_SNAPSHOT + ROWS_WRITTEN_DURING_DUMP - 10,)]  # the source did change

    record = validate_backup(
        manifest, storage, validation_settings(scratch_cluster, source_db), decryption_key, tmp_path / "validate"
    )
    assert record["status"] == "passed"
    assert record["mismatches"] == []
