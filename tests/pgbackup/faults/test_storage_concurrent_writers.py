"""Two writers of the same key at once (two runs of one target in the same instant, a retry
racing its original): exactly one wins, the other gets ObjectExistsError, the winner's bytes
are intact and nothing of the winner is deleted, on every backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.services import GcsEmulator, MotoServer
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
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


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
    size = 2000 if size_name == "single" else backend.big_size
    datas = [payload(size, seed=11), payload(size, seed=12)]
    barrier = threading.Barrier(2)
    results: list[UploadResult | None] = [None, None]
    errors: list[BaseException | None] = [None, None]
    storages: list[Storage] = [backend.open(), backend.open()]  # two runs: two storages, one key

    def write(i: int) -> None:
        try:
            results[i] = storages[i].put_stream("race/key", _StartTogether(datas[i], barrier))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [i for i in range(2) if results[i] is not None]
    losers = [i for i in range(2) if errors[i] is not None]
    assert len(winners) == 1 and len(losers) == 1, f"results={results} errors={errors}"
    winner, loser = winners[0], losers[0]
    assert isinstance(errors[loser], ObjectExistsError), repr(errors[loser])
    stored = storages[0].get_bytes("race/key")
    assert stored is not None and sha(stored) == sha(datas[winner])  # intact, not deleted, not mixed
    assert backend.raw_keys() == ["pfx/sub/race/key"]
    assert s3_open_uploads(backend) == []  # the loser's multipart upload was aborted
