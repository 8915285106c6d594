"""Turning Airflow connections into engine values. Called only inside ``execute()``.

Hooks own connections and SDK clients (the providers' pattern); the engine receives
plain values and ready clients, and never sees Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgbackup.config import DestinationConfig, PgBackupConfig, TargetConfig
from pgbackup.errors import ConfigError
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey

if TYPE_CHECKING:
    from pgbackup.storage.base import Storage


def postgres_conn_info(conn_id: str, database: str | None, label: str) -> PgConnInfo:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook.get_connection(conn_id)
    if not conn.host:
        raise ConfigError(f"Airflow connection {conn_id!r} has no host")
    extra = conn.extra_dejson
    return PgConnInfo(
        host=conn.host,
        port=int(conn.port or 5432),
        user=conn.login or "postgres",
        dbname=database or conn.schema or "postgres",
        password=conn.password,
        sslmode=extra.get("sslmode"),
        label=label,
    )


def target_conn_info(target: TargetConfig) -> PgConnInfo:
    return postgres_conn_info(
        target.postgres_conn_id, target.database, f"target {target.name} (connection {target.postgres_conn_id})"
    )


def scratch_conn_info(target: TargetConfig) -> PgConnInfo:
    conn_id = target.validation.scratch_conn_id
    return postgres_conn_info(conn_id, None, f"scratch server for {target.name} (connection {conn_id})")


def decryption_key(config: PgBackupConfig) -> DecryptionKey:
    from airflow.sdk import BaseHook

    conn_id = config.encryption.decryption_key_conn_id
    conn = BaseHook.get_connection(conn_id)
    armored = conn.extra_dejson.get("private_key")
    if not armored:
        raise ConfigError(
            f"Airflow connection {conn_id!r} needs an extra field private_key holding the armored gpg "
            "private key (and the passphrase, if any, as the connection password)"
        )
    return DecryptionKey(armored, conn.password or None)


def open_destination(destination: DestinationConfig) -> Storage:
    """A storage backend for this destination, with its client built by the provider's hook."""
    from pgbackup.storage import open_storage

    if destination.type == "local":
        return open_storage(destination.url)
    if destination.type in ("s3", "supabase_storage"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=destination.conn_id).get_conn()
        if destination.type == "supabase_storage":
            return open_storage(destination.url, client=client, flavor="supabase_storage")
        return open_storage(destination.url, client=client)
    if destination.type == "gcs":
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        client = GCSHook(gcp_conn_id=destination.conn_id).get_conn()
        return open_storage(destination.url, client=client)
    raise ConfigError(f"destinations.{destination.name}: unsupported type {destination.type!r}")
