"""No password in the argv of the restore side's children (pg_restore, psql).

Catches the mutation "the password passed to pg_restore/psql in argv" (issue 7, item 14):
the argv test in test_faults.py only covers pg_dump. Here every PostgreSQL program the
engine starts during a real validation runs through a recording wrapper (picked up through
PGBACKUP_PG_BINDIR), which writes the exact argv the kernel gave it, then execs the real
program with it unchanged. Any password in that argv would be readable by every local user
in /proc/<pid>/cmdline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup.pgconn import PgConnInfo
from pgbackup.pgtools import find_program
from pgbackup.restore import DecryptionKey, validate_backup
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup, validation_settings

pytestmark = pytest.mark.integration

WRAPPED = ("pg_dump", "pg_restore", "psql")


def recording_bindir(root: Path) -> tuple[Path, Path]:
    """A bin directory whose pg_dump/pg_restore/psql record their argv, then exec the real one."""
    bindir, logdir = root / "bin", root / "argv"
    bindir.mkdir()
    logdir.mkdir()
    for program in WRAPPED:
        real = find_program(program)
        wrapper = bindir / program
        # Shell builtins only: the child may get a minimal environment without PATH.
        wrapper.write_text(
            "#!/bin/sh\n"
            f"argv_log={logdir}/{program}.$$\n"
            f'printf \'%s\\0\' "$0" "$@" > "$argv_log"\n'
            f'exec {real} "$@"\n'
        )
        wrapper.chmod(0o755)
    return bindir, logdir


def recorded_argvs(logdir: Path) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {program: [] for program in WRAPPED}
    for entry in sorted(logdir.iterdir()):
        program = entry.name.split(".")[0]
        argv = entry.read_bytes().split(b"\0")[:-1]
        found[program].append([arg.decode() for arg in argv])
    return found


@pytest.mark.fault(
    "a restore child (pg_restore or psql) is given the password on its command line",
    "no password in the argv of any pg_restore/psql/pg_dump the validation starts",
)
@pytest.mark.parametrize("dump_format", ["custom", "plain"])
def test_validation_children_never_get_the_password_in_argv(
    dump_format: str,
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
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 200) g",
        dbname=source_db.dbname,
    )
    (tmp_path / "backups").mkdir()
    storage = open_storage(f"file://{tmp_path}/backups")
    manifest = take_backup("staged", make_request(source_db, gpg_key, dump_format=dump_format), storage, workdir)

    bindir, logdir = recording_bindir(tmp_path)
    monkeypatch.setenv("PGBACKUP_PG_BINDIR", str(bindir))
    settings = validation_settings(scratch_cluster, source_db)
    record = validate_backup(manifest, storage, settings, decryption_key, tmp_path / "validate")
    assert record["status"] == "passed"

    argvs = recorded_argvs(logdir)
    restorer = "pg_restore" if dump_format == "custom" else "psql"
    restores = [argv for argv in argvs[restorer] if "--version" not in argv]
    assert restores, f"the validation never ran {restorer} through the recording wrapper: {argvs}"
    secrets = {scratch_cluster.password, pg_cluster.password, conn_info(scratch_cluster).password}
    for program, runs in argvs.items():
        for argv in runs:
            for secret in secrets:
                assert not any(secret in arg for arg in argv), f"{program} got a password in argv: {argv}"
            assert not any("password=" in arg.lower() for arg in argv), f"{program} argv names a password: {argv}"
