"""Shared pytest fixtures: one real PostgreSQL 15 cluster per test session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from devtools.pg_cluster import TemporaryCluster

pytest_plugins = ["tests.reliability"]

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TemporaryCluster]:
    """A private cluster (scram-sha-256, superuser ``postgres``) on 127.0.0.1, removed at session end."""
    with TemporaryCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_database(pg_cluster: TemporaryCluster) -> Iterator[str]:
    """DSN of a fresh empty database in ``pg_cluster``, dropped after the test."""
    name = f"test_db_{next(_db_counter)}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    pg_cluster.drop_database(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (what ``make test`` uses).

    A module stays on one worker, so its module fixtures (clusters, moto, a 1.5M-row database)
    are built once; the modules that start a whole Airflow deployment share one group, so they
    run one after another instead of three Airflows competing for two cores.
    """
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        heavy = item.get_closest_marker("airflow_e2e") is not None or path.endswith("test_celery_deployment.py")
        item.add_marker(pytest.mark.xdist_group("airflow" if heavy else path))
