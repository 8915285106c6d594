"""Real services for the storage tests: moto's S3 server and the GCS emulator over HTTP.

Other test directories can reuse them the same way: ``with MotoServer() as s3: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.services import GcsEmulator, MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        yield emulator
