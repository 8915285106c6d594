"""run_chain's judgement of which stage failed, with real processes."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup.compress import CompressionError
from pgbackup.errors import DumpError, EncryptionError, PgBackupError
from pgbackup.pipeline import HashingReader, StageCommand, is_write_failure, run_chain, write_to_file


@dataclass
class Shell:
    script: str
    name: str
    error_class: type[PgBackupError]

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        yield StageCommand([shutil.which("sh") or "/bin/sh", "-c", self.script])


def _read_all(stream: HashingReader) -> int:
    return len(stream.read())


def test_a_stage_that_fails_on_its_own_is_blamed_not_the_upstream_one_that_lost_its_reader() -> None:
    # `yes` dies of SIGPIPE once its reader exits; the reader's own exit 3 is the cause.
    upstream = Shell("exec yes", "producer", DumpError)
    reader = Shell("head -c 10 >/dev/null; echo 'reader gave up' >&2; exit 3", "reader", CompressionError)
    with pytest.raises(CompressionError, match=r"reader failed \(exit 3\): reader gave up"):
        run_chain([upstream, reader], _read_all)


def test_a_broken_pipe_alone_is_still_reported() -> None:
    # The reader exits cleanly without reading: the producer's broken pipe is the only failure.
    upstream = Shell("exec yes", "producer", DumpError)
    reader = Shell("head -c 10 >/dev/null", "reader", CompressionError)
    with pytest.raises(DumpError, match=r"producer failed \(exit -13\)"):
        run_chain([upstream, reader], _read_all)


def test_a_stage_failing_mid_write_leaves_no_partial_file_and_publishes_nothing(tmp_path: Path) -> None:
    # A hashed sink: Python writes the file. The stage fails after all its output was read.
    stage = Shell("printf 'all of it'; echo 'late failure' >&2; exit 2", "encrypt", EncryptionError)
    target = tmp_path / "out"
    with pytest.raises(EncryptionError, match="late failure"):
        run_chain([stage], write_to_file(target, hashed=True), source=None)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .partial


def test_write_failures_are_the_programs_own_never_an_error_the_server_sent() -> None:
    own = DumpError("pg_dump failed (exit 1): pg_dump: error: could not write to output file: No space left on device")
    zstd = CompressionError("compress failed (exit 70): zstd: error 70 : Write error : No space left on device")
    server = DumpError(
        'pg_dump failed (exit 1): pg_dump: error: Dumping the contents of table "t" failed: PQgetResult() failed.\n'
        'pg_dump: detail: Error message from server: ERROR:  could not resize shared memory segment "/PostgreSQL.1" '
        "to 8388608 bytes: No space left on device"
    )
    assert is_write_failure(own) and is_write_failure(zstd)
    assert not is_write_failure(server)
