"""Two writers of the same key at once (two runs of one target in the same instant, a retry
racing its original): exactly one wins, the other gets ObjectExistsError, the winner's bytes
are intact and nothing of the winner is deleted, on every backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.services import GcsEmulator
from pgbackup.errors import ObjectExistsError
from pgbackup.storage.base import Storage, UploadResult
from tests.pgbackup.storage.test_storage_contract import (
    NO_SERVICE_PRECONDITION,
    Backend,
    NonSeekable,
    gcs_backend,
    local_backend,
    payload,
    s3_backend,
    s3_open_uploads,
    sha,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        yield emulator


@pytest.fixture(params=["local", "s3", "supabase", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "local":
        return local_backend(tmp_path)
    if name in ("s3", "supabase"):
        return s3_backend(request.getfixturevalue("moto"), supabase=name == "supabase")
    return gcs_backend(request.getfixturevalue("gcs"))


class _StartTogether(NonSeekable):
    """Blocks its first read until the other writer reaches its own: both have passed the
    backend's check before writing, so only the write itself can decide the race."""

    def __init__(self, data: bytes, barrier: threading.Barrier) -> None:
        super().__init__(data)
        self._barrier: threading.Barrier | None = barrier

    def readinto(self, buffer: Any) -> int:
        if self._barrier is not None:
            self._barrier, barrier = None, self._barrier
            barrier.wait(timeout=30)
        return super().readinto(buffer)


# moto's server is threaded and checks If-None-Match on CompleteMultipartUpload before storing,
# not atomically: two completes racing in the same instant can both pass (seen in about half the
# runs here). Real S3 evaluates conditional writes atomically (one gets 412, or 409 while the other
# is in flight). Single PutObject races were always decided correctly by moto in our runs.
MOTO_MULTIPART_RACE = (
    "moto checks If-None-Match on CompleteMultipartUpload non-atomically: two racing completes can both "
    "succeed on the stand-in (real S3 decides atomically)"
)


def _race(backend: Backend, size: int) -> tuple[list[bytes], list[UploadResult | None], list[BaseException | None]]:
    datas = [payload(size, seed=11), payload(size, seed=12)]
    barrier = threading.Barrier(2)
    results: list[UploadResult | None] = [None, None]
    errors: list[BaseException | None] = [None, None]
    storages: list[Storage] = [backend.open(), backend.open()]  # two runs: two storages, one key

    def write(i: int) -> None:
        try:
            results[i] = storages[i].put_stream("race/key", _StartTogether(datas[i], barrier))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - inspected by the caller
            errors[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return datas, results, errors


@pytest.mark.parametrize("size_name", ["single", "multi"])
@pytest.mark.fault(
    "two writers of one key at the same instant (any service)",
    "the key holds one writer's complete bytes; nothing of it deleted; the other never claims it",
)
def test_concurrent_writers_never_leave_mixed_or_deleted_bytes(
    request: pytest.FixtureRequest, backend: Backend, size_name: str
) -> None:
    if backend.name == "gcs":
        # Both writes land (no ifGenerationMatch=0), and the loser's read-back sees the winner's object,
        # whose deletion with ifGenerationMatch=<the loser's generation> the emulator does not refuse either.
        request.applymarker(pytest.mark.xfail(strict=False, reason=NO_SERVICE_PRECONDITION["gcs"]))
    size = 2000 if size_name == "single" else backend.big_size
    datas, results, errors = _race(backend, size)
    stored = backend.open().get_bytes("race/key")
    assert stored is not None, f"the key is gone: results={results} errors={errors}"
    holder = [i for i in range(2) if sha(stored) == sha(datas[i])]
    assert len(holder) == 1  # complete bytes of exactly one writer, never a mix
    assert backend.raw_keys() == ["pfx/sub/race/key"]
    assert s3_open_uploads(backend) == []
    other = 1 - holder[0]
    # The writer whose bytes are not there never comes back with success from a service that enforces
    # the precondition (stand-ins that do not are the strict/non-strict xfails of the test below).
    if results[other] is not None and backend.name not in NO_SERVICE_PRECONDITION:
        if not (backend.name == "s3" and size_name == "multi"):
            pytest.fail(f"writer {other} reported success but its bytes are not stored")


@pytest.mark.parametrize("size_name", ["single", "multi"])
@pytest.mark.fault(
    "two writers of one key at the same instant",
    "exactly one wins; the other gets ObjectExistsError; the winner's bytes stay intact",
)
def test_exactly_one_of_two_concurrent_writers_wins(
    request: pytest.FixtureRequest, backend: Backend, size_name: str
) -> None:
    if backend.name in NO_SERVICE_PRECONDITION:
        request.applymarker(pytest.mark.xfail(strict=True, reason=NO_SERVICE_PRECONDITION[backend.name]))
    if backend.name == "s3" and size_name == "multi":
        request.applymarker(pytest.mark.xfail(strict=False, reason=MOTO_MULTIPART_RACE))
    size = 2000 if size_name == "single" else backend.big_size
    datas, results, errors = _race(backend, size)
    winners = [i for i in range(2) if results[i] is not None]
    losers = [i for i in range(2) if errors[i] is not None]
    assert len(winners) == 1 and len(losers) == 1, f"results={results} errors={errors}"
    winner, loser = winners[0], losers[0]
    assert isinstance(errors[loser], ObjectExistsError), repr(errors[loser])
    stored = backend.open().get_bytes("race/key")
    assert stored is not None and sha(stored) == sha(datas[winner])  # intact, not deleted, not mixed
    assert backend.raw_keys() == ["pfx/sub/race/key"]
    assert s3_open_uploads(backend) == []  # the loser's multipart upload was aborted
