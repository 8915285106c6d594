"""Airflow pools that protect the servers: concurrent dumps per source, restore tests per scratch.

One pool per source connection (``pgbackup_source_<conn_id>``, ``pools.dumps_per_source``
slots) taken by each target's ``dump`` or ``backup_stream`` task, and one per scratch
connection (``pgbackup_scratch_<conn_id>``, ``pools.restores_per_scratch`` slots) taken by
``validate``. Targets on one server share its connection and so its pool.

Pools live in Airflow's metadata database, which a DAG file must not touch at parse time.
They are created (or checked) at deploy time::

    PYTHONPATH=plugins python -m pgbackup_airflow.pools create   # create or resize them
    PYTHONPATH=plugins python -m pgbackup_airflow.pools check    # exit 1 naming each missing/wrong pool
    PYTHONPATH=plugins python -m pgbackup_airflow.pools show     # JSON for `airflow pools import`

A task whose pool does not exist is never scheduled (Airflow shows a DAG warning), so
``check`` belongs in the deployment pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pgbackup.config import PgBackupConfig, TargetConfig, load_config

SOURCE_PREFIX = "pgbackup_source_"
SCRATCH_PREFIX = "pgbackup_scratch_"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str


def source_pool(target: TargetConfig) -> str:
    return SOURCE_PREFIX + target.postgres_conn_id


def scratch_pool(target: TargetConfig) -> str:
    return SCRATCH_PREFIX + target.validation.scratch_conn_id


def required_pools(config: PgBackupConfig) -> list[PoolSpec]:
    """Every pool the DAGs of ``config`` use, with its size from the config's ``pools`` section."""
    pools: dict[str, PoolSpec] = {}
    for target in config.targets:
        sources = [t.name for t in config.targets if t.postgres_conn_id == target.postgres_conn_id]
        scratches = [t.name for t in config.targets
                     if t.validation.scratch_conn_id == target.validation.scratch_conn_id]
        pools[source_pool(target)] = PoolSpec(
            source_pool(target), config.pools.dumps_per_source,
            f"pgbackup: concurrent dumps against connection {target.postgres_conn_id} ({', '.join(sources)})",
        )
        pools[scratch_pool(target)] = PoolSpec(
            scratch_pool(target), config.pools.restores_per_scratch,
            f"pgbackup: concurrent restore tests on connection {target.validation.scratch_conn_id} "
            f"({', '.join(scratches)})",
        )
    return sorted(pools.values(), key=lambda p: p.name)


def problems(config: PgBackupConfig, existing: dict[str, int]) -> list[str]:
    """What is wrong with ``existing`` (pool name -> slots), one sentence per pool."""
    found = []
    for spec in required_pools(config):
        if spec.name not in existing:
            found.append(f"pool {spec.name} does not exist (needs {spec.slots} slots: {spec.description}); "
                         "tasks using it would never be scheduled")
        elif existing[spec.name] != spec.slots:
            found.append(f"pool {spec.name} has {existing[spec.name]} slots, the config "
                         f"({config.source_file}: pools) asks for {spec.slots}")
    return found


def import_document(config: PgBackupConfig) -> dict[str, dict[str, object]]:
    """The pools in ``airflow pools import`` format."""
    return {p.name: {"slots": p.slots, "description": p.description, "include_deferred": False}
            for p in required_pools(config)}


def _existing_pools() -> dict[str, int]:
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        return {pool.pool: pool.slots for pool in session.query(Pool)}


def _create_pools(config: PgBackupConfig) -> None:
    from airflow.models.pool import Pool

    for spec in required_pools(config):
        Pool.create_or_update_pool(spec.name, spec.slots, spec.description, include_deferred=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgbackup_airflow.pools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("create", "check", "show"))
    parser.add_argument("--config", default=None,
                        help="config file (default: PGBACKUP_CONFIG or include/pgbackup.yaml)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.command == "show":
        print(json.dumps(import_document(config), indent=2))
        return 0
    if args.command == "create":
        _create_pools(config)
    wrong = problems(config, _existing_pools())
    for line in wrong:
        print(f"{config.source_file}: {line}; run `python -m pgbackup_airflow.pools create`", file=sys.stderr)
    if not wrong:
        for spec in required_pools(config):
            print(f"ok: {spec.name} ({spec.slots} slots)")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
