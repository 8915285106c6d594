"""Pools per source and scratch connection, sized from the config, checked with clear messages."""

from __future__ import annotations

import json
from typing import Any

from pgbackup.config import PgBackupConfig, parse_config
from pgbackup_airflow.pools import import_document, problems, required_pools, scratch_pool, source_pool


def config(pools: dict[str, Any] | None = None) -> PgBackupConfig:
    def target(name: str, conn: str, scratch: str) -> dict[str, Any]:
        return {"name": name, "postgres_conn_id": conn, "database": name, "validation": {"scratch_conn_id": scratch}}

    data: dict[str, Any] = {
        "targets": [target("a1", "server_a", "scratch"), target("a2", "server_a", "scratch"),
                    target("b1", "server_b", "scratch")],
        "destinations": [{"name": "s3", "type": "s3", "primary": True, "conn_id": "aws", "bucket": "backups"}],
        "encryption": {"recipients": ["ops@example.com"], "public_key_files": ["/keys/ops.asc"],
                       "decryption_key_conn_id": "gpg"},
    }
    if pools is not None:
        data["pools"] = pools
    return parse_config(data, "/etc/pgbackup.yaml")


def test_one_pool_per_server_connection_sized_from_the_config() -> None:
    cfg = config({"dumps_per_source": 3, "restores_per_scratch": 2})
    assert source_pool(cfg.targets[0]) == source_pool(cfg.targets[1]) == "pgbackup_source_server_a"
    assert scratch_pool(cfg.targets[2]) == "pgbackup_scratch_scratch"
    assert {(p.name, p.slots) for p in required_pools(cfg)} == {
        ("pgbackup_source_server_a", 3), ("pgbackup_source_server_b", 3), ("pgbackup_scratch_scratch", 2)}
    assert "(a1, a2)" in next(p.description for p in required_pools(cfg) if p.name.endswith("server_a"))
    document = json.loads(json.dumps(import_document(cfg)))
    assert document["pgbackup_source_server_b"]["slots"] == 3


def test_defaults_protect_each_server() -> None:
    cfg = config()
    assert (cfg.pools.dumps_per_source, cfg.pools.restores_per_scratch) == (2, 1)


def test_missing_and_wrongly_sized_pools_are_named() -> None:
    cfg = config()
    found = problems(cfg, {"pgbackup_source_server_a": 2, "pgbackup_scratch_scratch": 5, "default_pool": 128})
    assert len(found) == 2
    assert found[0].startswith("pool pgbackup_scratch_scratch has 5 slots, the config (/etc/pgbackup.yaml: pools)")
    assert found[1].startswith("pool pgbackup_source_server_b does not exist (needs 2 slots")
    assert problems(cfg, {p.name: p.slots for p in required_pools(cfg)}) == []
