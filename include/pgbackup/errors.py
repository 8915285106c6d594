"""One exception hierarchy for the engine (the barman pattern)."""

from __future__ import annotations


class PgBackupError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(PgBackupError):
    """The configuration file or an engine value is invalid."""


class ConnectionConfigError(ConfigError):
    """A database connection is unusable as configured (pooler port, missing TLS, ...)."""


class DatabaseUnavailableError(PgBackupError):
    """A database server cannot be reached or refused the credentials."""


class DumpError(PgBackupError):
    """pg_dump or the source database failed."""


class VersionMismatchError(DumpError):
    """pg_dump is older than the server it would dump."""


class EncryptionError(PgBackupError):
    """gpg failed, or a recipient key is missing, expired or unusable."""


class StorageError(PgBackupError):
    """A storage backend failed (network, permissions, missing bucket, ...)."""


class ObjectExistsError(StorageError):
    """A write found the key holding an object it must not replace.

    For a create-only write (every upload): any object at all. For a conditional
    replace (a manifest's verification record): another version than the one read.
    Nothing was overwritten.
    """


class IntegrityError(PgBackupError):
    """Bytes do not match their recorded checksum or size."""


class RestoreError(PgBackupError):
    """A restore or its verification failed."""


class VerificationError(RestoreError):
    """A restored database differs from what the manifest recorded."""

    def __init__(self, message: str, record: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}
