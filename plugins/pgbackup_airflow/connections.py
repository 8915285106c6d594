"""Turning Airflow connections into engine values. Called only inside ``execute()``.

Hooks own connections and SDK clients (the providers' pattern); the engine receives
plain values and ready clients, and never sees Airflow. Every value carries the config's
``timeouts``, so no connection made from here can wait for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgbackup.config import DestinationConfig, PgBackupConfig, TargetConfig, TimeoutsConfig
from pgbackup.errors import ConfigError
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey

if TYPE_CHECKING:
    from pgbackup.storage.base import Storage


def postgres_conn_info(conn_id: str, database: str | None, label: str, *, timeouts: TimeoutsConfig) -> PgConnInfo:
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
        **timeouts.postgres_options(),
    )


def target_conn_info(target: TargetConfig, timeouts: TimeoutsConfig) -> PgConnInfo:
    return postgres_conn_info(
        target.postgres_conn_id,
        target.database,
        f"target {target.name} (connection {target.postgres_conn_id})",
        timeouts=timeouts,
    )


def scratch_conn_info(target: TargetConfig, timeouts: TimeoutsConfig) -> PgConnInfo:
    conn_id = target.validation.scratch_conn_id
    return postgres_conn_info(
        conn_id, None, f"scratch server for {target.name} (connection {conn_id})", timeouts=timeouts
    )


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


def open_destination(destination: DestinationConfig, timeouts: TimeoutsConfig) -> Storage:
    """A storage backend for this destination, with its client built by the provider's hook."""
    from pgbackup.storage import open_storage

    options: dict[str, Any] = timeouts.storage_options()
    if destination.type == "local":
        return open_storage(destination.url, **options)
    if destination.type in ("s3", "supabase_storage"):
        client = s3_client(destination.conn_id, timeouts)
        if destination.type == "supabase_storage":
            return open_storage(destination.url, client=client, flavor="supabase_storage", **options)
        return open_storage(destination.url, client=client, **options)
    if destination.type == "gcs":
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        # The GCS backend passes (connect, read) timeouts and a bounded retry on every call itself.
        client = GCSHook(gcp_conn_id=destination.conn_id).get_conn()
        return open_storage(destination.url, client=client, **options)
    raise ConfigError(f"destinations.{destination.name}: unsupported type {destination.type!r}")


def s3_client(conn_id: str | None, timeouts: TimeoutsConfig) -> Any:
    """A boto3 S3 client from the connection, with our timeouts and retry policy.

    The connection's own botocore settings (``config_kwargs``: addressing style, proxies, ...)
    are kept, but its timeouts can only make ours shorter: a hook's explicit ``config``
    replaces the connection's, so the two are merged here.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    from pgbackup.storage.s3 import s3_client_config

    ours = s3_client_config(timeouts.connect_seconds, timeouts.read_seconds)
    theirs = S3Hook(aws_conn_id=conn_id).conn_config.botocore_config
    config = ours if theirs is None else ours.merge(theirs)
    config = config.merge(
        Config(
            connect_timeout=min(config.connect_timeout or ours.connect_timeout, ours.connect_timeout),
            read_timeout=min(config.read_timeout or ours.read_timeout, ours.read_timeout),
        )
    )
    return S3Hook(aws_conn_id=conn_id, config=config).get_conn()
