"""Real services for the storage tests: moto's S3 server and the GCS emulator over HTTP.

Other test directories can reuse them the same way: ``with MotoServer() as s3: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.services import GcsEmulator, MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def moto_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """Our fault-injecting proxy in front of moto, passing everything (the contract runs through it)."""
    with FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def gcs_proxy(gcs_emulator: GcsEmulator) -> Iterator[FaultProxy]:
    with FaultProxy(gcs_emulator.endpoint) as proxy:
        yield proxy
