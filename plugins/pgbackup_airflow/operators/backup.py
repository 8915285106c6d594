"""Operators for taking a backup: one engine call each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from pgbackup import backup
from pgbackup.backup import BackupRequest
from pgbackup.config import TIERS, DestinationConfig
from pgbackup.errors import ConfigError
from pgbackup.manifest import Manifest
from pgbackup_airflow.connections import open_destination, target_conn_info
from pgbackup_airflow.operators.base import PgBackupBaseOperator, resolve_kind


class _RequestMixin(PgBackupBaseOperator):
    def backup_request(self, kind: str, context: Any, tier: str = "daily") -> BackupRequest:
        config, target = self.config, self.target_config
        logical = context.get("logical_date")
        return BackupRequest(
            target=target.name,
            source=target_conn_info(target, config.timeouts),
            kind=kind,
            compression=config.compression,
            encryption=config.encryption,
            public_key_files=tuple(config.key_file_path(p) for p in config.encryption.public_key_files),
            profile=target.profile,
            dump_format=target.dump_format,
            exclude_schemas=target.exclude_schemas,
            tier=tier,
            logical_date=logical.isoformat() if logical is not None else None,
        )


class _NewBackupOperator(_RequestMixin):
    """Starts a new backup.

    :param kind: ``full``, ``schema``, ``data`` or ``auto`` (from the schedule slot)
    :param tier: ``daily``, ``weekly`` or ``monthly``: its folder and its retention
    """

    template_fields: Sequence[str] = ("target", "kind")

    def __init__(self, *, kind: str = "auto", tier: str = "daily", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tier not in TIERS:
            raise ConfigError(f"{kwargs.get('task_id')}: tier must be one of {', '.join(TIERS)}, got {tier!r}")
        self.kind = kind
        self.tier = tier


class PgDumpOperator(_NewBackupOperator):
    """Check keys and versions, then ``pg_dump`` into staging with snapshot row counts."""

    def execute(self, context: Any) -> dict[str, Any]:
        kind = resolve_kind(self.kind, context, self.config)
        self.log.info("dumping target %s, kind %s, tier %s", self.target, kind, self.tier)
        workdir = self.workdir(context)
        workdir.mkdir(parents=True, exist_ok=True)
        return backup.dump_to_file(self.backup_request(kind, context, self.tier), workdir).to_dict()


class CompressBackupOperator(PgBackupBaseOperator):
    """Compress the staged dump (zstd or gzip, streaming)."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = self.upstream_manifest(context)
        self.staged_file(context, backup.DUMP_FILE)
        manifest = backup.compress_file(manifest, self.config.compression, self.workdir(context))
        self.log.info(
            "compressed: ratio %s in %ss", manifest.stages["compress"]["ratio"], manifest.stages["compress"]["seconds"]
        )
        return manifest.to_dict()


class EncryptBackupOperator(_RequestMixin):
    """Encrypt the compressed dump to every configured gpg recipient."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = self.upstream_manifest(context)
        request = self.backup_request(manifest.kind, context, manifest.tier)
        self.staged_file(context, backup.COMPRESSED_FILE)
        manifest = backup.encrypt_file(manifest, request, self.workdir(context))
        self.log.info(
            "encrypted to %s; sha256 %s",
            [r["fingerprint"] for r in manifest.artifact["encryption"]["recipients"]],
            manifest.sha256,
        )
        return manifest.to_dict()


class _OneDestinationOperator(PgBackupBaseOperator):
    """Publishes this run's backup at one destination (mapped once per destination).

    :param destination: the destination's name in the config
    """

    template_fields: Sequence[str] = ("target", "destination")

    def __init__(self, *, destination: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = self.upstream_manifest(context)
        destination = self.config.destination(self.destination)
        if manifest.kind not in destination.kinds:
            raise AirflowSkipException(f"destination {destination.name} does not take {manifest.kind} backups")
        published = self.publish(manifest, destination, context)
        return {"destination": destination.name, **published.destination, "object_key": published.object_key}

    def publish(self, manifest: Manifest, destination: DestinationConfig, context: Any) -> Manifest:
        raise NotImplementedError


class UploadBackupOperator(_OneDestinationOperator):
    """Upload the staged encrypted artifact, verify its stored checksum, write its manifest last.

    A failing destination is retried alone.
    """

    def publish(self, manifest: Manifest, destination: DestinationConfig, context: Any) -> Manifest:
        artifact = self.staged_file(context, backup.ENCRYPTED_FILE)
        return backup.upload_artifact(
            manifest, artifact, open_destination(destination, self.config.timeouts), destination.name
        )


class StreamBackupOperator(_NewBackupOperator):
    """dump | compress | encrypt | upload to the primary destination in one pass (no staging file)."""

    def execute(self, context: Any) -> dict[str, Any]:
        kind = resolve_kind(self.kind, context, self.config)
        primary = self.config.primary
        self.log.info("streaming a %s backup of %s to %s", kind, self.target, primary.name)
        manifest = backup.stream_backup(
            self.backup_request(kind, context, self.tier), open_destination(primary, self.config.timeouts), primary.name
        )
        return manifest.to_dict()


class ReplicateBackupOperator(_OneDestinationOperator):
    """Copy the primary's published backup to one more destination, checking sha256 end to end."""

    def publish(self, manifest: Manifest, destination: DestinationConfig, context: Any) -> Manifest:
        primary = open_destination(self.config.primary, self.config.timeouts)
        return backup.replicate(
            manifest, primary, open_destination(destination, self.config.timeouts), destination.name
        )
