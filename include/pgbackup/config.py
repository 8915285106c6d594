"""The one declarative configuration file, typed and validated with no I/O but reading it.

Every mistake raises :class:`ConfigError` naming the file, the key and what was expected,
so an Airflow import error tells the operator exactly what to fix (the cosmos pattern:
dataclasses that validate in ``__post_init__``). Secrets never live here: only
Airflow connection ids.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgbackup.errors import ConfigError

DUMP_KINDS = ("full", "schema", "data")
DUMP_FORMATS = ("custom", "plain")
DATA_PATHS = ("staged", "stream")
PROFILES = ("plain", "supabase")
DESTINATION_TYPES = ("local", "s3", "gcs", "supabase_storage")
COMPRESSION_LEVELS = {"gzip": (1, 9), "zstd": (1, 19)}
# zstd -3 is smaller than gzip -6 and keeps a 2-core backup near pg_dump's own speed;
# zstd -6 was 9% smaller but 40% slower end to end (docs/benchmarks.md).
DEFAULT_COMPRESSION_LEVELS = {"gzip": 6, "zstd": 3}
TIERS = ("daily", "weekly", "monthly")

# The seed's validation queries, run when the tables exist in the restored database.
SEED_VALIDATION_QUERIES = (
    "SELECT COUNT(*) FROM users",
    "SELECT COUNT(*) FROM products",
    "SELECT COUNT(*) FROM orders",
    "SELECT COUNT(*) FROM customers",
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_CRON_FIELD_RE = re.compile(r"^[0-9*/,\-]+$")


def _where(path: str, key: str) -> str:
    return f"{path}: {key}"


def _require(data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ConfigError(f"{where}.{key}: required key is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}.{key}: expected {_type_name(kind)}, got {value!r}")
    return value


def _optional(data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in data or data[key] is None:
        return default
    return _require(data, key, where, kind)


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "bool": "true or false", "list": "a list", "dict": "a mapping"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _reject_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _check_name(value: str, where: str) -> str:
    if not _NAME_RE.match(value):
        raise ConfigError(
            f"{where}: {value!r} must be lowercase letters, digits and underscores, starting with a letter"
        )
    return value


def _check_conn_id(value: str, where: str) -> str:
    if not _CONN_ID_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not a valid Airflow connection id")
    return value


def _check_cron(value: str, where: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        raise ConfigError(f"{where}: {value!r} is not a five-field cron expression like '0 6 * * *'")
    return value


@dataclass(frozen=True)
class ValidationConfig:
    """Where and how a backup is proven restorable."""

    scratch_conn_id: str
    allow_source_server: bool = False
    queries: tuple[str, ...] = SEED_VALIDATION_QUERIES
    restore_jobs: int = 2
    # A database on the scratch server that scratch databases are created from (CREATE
    # DATABASE ... TEMPLATE). Required by the supabase profile: the restore is only proven
    # on a database that already has the source project's platform.
    scratch_template: str | None = None

    def __post_init__(self) -> None:
        if self.restore_jobs < 1 or self.restore_jobs > 64:
            raise ConfigError(f"validation.restore_jobs: expected 1..64, got {self.restore_jobs}")
        if self.scratch_template is not None and not 0 < len(self.scratch_template) < 64:
            raise ConfigError(f"validation.scratch_template: expected a database name, got {self.scratch_template!r}")


@dataclass(frozen=True)
class TargetConfig:
    """One database to back up."""

    name: str
    postgres_conn_id: str
    validation: ValidationConfig
    profile: str = "plain"
    database: str | None = None
    dump_format: str = "custom"
    data_path: str = "staged"
    exclude_schemas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"targets.{self.name}.profile: {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.dump_format not in DUMP_FORMATS:
            raise ConfigError(
                f"targets.{self.name}.dump_format: {self.dump_format!r} is not one of {', '.join(DUMP_FORMATS)}"
            )
        if self.data_path not in DATA_PATHS:
            raise ConfigError(
                f"targets.{self.name}.data_path: {self.data_path!r} is not one of {', '.join(DATA_PATHS)}"
            )
        if self.profile == "supabase" and self.validation.scratch_template is None:
            raise ConfigError(
                f"targets.{self.name}.validation.scratch_template: required for profile supabase: the name of a "
                "template database with a new Supabase project's platform on the scratch server (validation "
                "restores into a copy of it, as the non-superuser postgres)"
            )
        if self.profile == "supabase" and self.dump_format == "plain" and self.data_path == "stream":
            raise ConfigError(
                f"targets.{self.name}.data_path: profile supabase with dump_format plain needs data_path staged "
                "(the plain file is rendered from a filtered custom archive)"
            )


@dataclass(frozen=True)
class DestinationConfig:
    """One place backups are stored. ``kinds`` limits which dump kinds it receives."""

    name: str
    type: str
    url: str
    conn_id: str | None = None
    primary: bool = False
    kinds: tuple[str, ...] = DUMP_KINDS

    def __post_init__(self) -> None:
        if self.type not in DESTINATION_TYPES:
            raise ConfigError(
                f"destinations.{self.name}.type: {self.type!r} is not one of {', '.join(DESTINATION_TYPES)}"
            )
        bad = [k for k in self.kinds if k not in DUMP_KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"destinations.{self.name}.kinds: expected a non-empty subset of {list(DUMP_KINDS)}")
        if self.type != "local" and not self.conn_id:
            raise ConfigError(f"destinations.{self.name}.conn_id: required for a {self.type} destination")


@dataclass(frozen=True)
class CompressionConfig:
    algorithm: str = "zstd"
    level: int = DEFAULT_COMPRESSION_LEVELS["zstd"]
    threads: int = 0  # zstd only; 0 = one per core

    def __post_init__(self) -> None:
        if self.algorithm not in COMPRESSION_LEVELS:
            raise ConfigError(f"compression.algorithm: {self.algorithm!r} is not one of gzip, zstd")
        low, high = COMPRESSION_LEVELS[self.algorithm]
        if not low <= self.level <= high:
            raise ConfigError(f"compression.level: {self.algorithm} takes {low}..{high}, got {self.level}")
        if self.threads < 0:
            raise ConfigError(f"compression.threads: expected 0 (all cores) or more, got {self.threads}")


@dataclass(frozen=True)
class EncryptionConfig:
    """gpg public-key encryption to every recipient.

    ``public_key_files`` are armored public keys (not secrets) imported into a private,
    throwaway keyring for each run, so a run never depends on a worker's keyring state.
    The private key used by validation lives in the Airflow connection
    ``decryption_key_conn_id`` (extra ``private_key``, password = passphrase).
    """

    recipients: tuple[str, ...]
    public_key_files: tuple[str, ...]
    decryption_key_conn_id: str

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ConfigError("encryption.recipients: at least one gpg recipient is required")
        if not self.public_key_files:
            raise ConfigError("encryption.public_key_files: at least one armored public key file is required")


@dataclass(frozen=True)
class RetentionConfig:
    daily_days: int = 30
    weekly_days: int = 90
    monthly_days: int = 365
    min_keep: int = 3
    dry_run: bool = False

    def __post_init__(self) -> None:
        for key in ("daily_days", "weekly_days", "monthly_days"):
            if getattr(self, key) < 1:
                raise ConfigError(f"retention.{key}: expected at least 1 day, got {getattr(self, key)}")
        if self.min_keep < 1:
            raise ConfigError(
                "retention.min_keep: expected at least 1 (the newest verified backup is always kept), "
                f"got {self.min_keep}"
            )

    def days_for(self, tier: str) -> int:
        return int(getattr(self, f"{tier}_days"))


@dataclass(frozen=True)
class DailyScheduleConfig:
    """The seed's daily cycle, in UTC."""

    full: str = "0 6 * * *"
    schema: str = "0 12 * * *"
    data: str = "0 18 * * *"
    deadline_minutes: float = 90

    def cron_for(self, kind: str) -> str:
        return str(getattr(self, kind))

    def kind_for_hour_minute(self, hour: int, minute: int) -> str | None:
        """The dump kind whose cron fires at this wall time, for runs of the multi-cron timetable."""
        for kind in DUMP_KINDS:
            cron_minute, cron_hour = self.cron_for(kind).split()[:2]
            if cron_minute.isdigit() and cron_hour.isdigit() and (int(cron_hour), int(cron_minute)) == (hour, minute):
                return kind
        return None


@dataclass(frozen=True)
class PgBackupConfig:
    source_file: str
    targets: tuple[TargetConfig, ...]
    destinations: tuple[DestinationConfig, ...]
    compression: CompressionConfig
    encryption: EncryptionConfig
    retention: RetentionConfig
    daily: DailyScheduleConfig
    slack_conn_id: str | None
    staging_dir: str
    owner: str = "data-platform"
    retries: int = 2
    retry_delay_seconds: int = 60
    queue: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        primaries = [d.name for d in self.destinations if d.primary]
        if len(primaries) != 1:
            raise ConfigError(
                f"{self.source_file}: destinations: exactly one destination needs `primary: true` "
                f"(validation restores from it), found {primaries or 'none'}"
            )

    @property
    def primary(self) -> DestinationConfig:
        return next(d for d in self.destinations if d.primary)

    def target(self, name: str) -> TargetConfig:
        for target in self.targets:
            if target.name == name:
                return target
        raise ConfigError(f"{self.source_file}: no target named {name!r}")

    def destination(self, name: str) -> DestinationConfig:
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise ConfigError(f"{self.source_file}: no destination named {name!r}")

    def destinations_for(self, kind: str) -> tuple[DestinationConfig, ...]:
        return tuple(d for d in self.destinations if kind in d.kinds)

    def key_file_path(self, path: str) -> Path:
        """Public key files are relative to the config file."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(self.source_file).parent / candidate


def default_config_path() -> Path:
    """``PGBACKUP_CONFIG`` or ``include/pgbackup.yaml`` beside the engine package."""
    env = os.environ.get("PGBACKUP_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "pgbackup.yaml"


def load_config(path: str | Path | None = None) -> PgBackupConfig:
    """Read and validate the config file. Raises :class:`ConfigError` naming file and key."""
    import yaml  # pyyaml is light, but keep module import cheap for the CLI's --help

    config_path = Path(path) if path is not None else default_config_path()
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read the pgbackup config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    try:
        return parse_config(data, str(config_path))
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith(str(config_path)):
            message = f"{config_path}: {message}"
        raise ConfigError(message) from None


def parse_config(data: Any, source: str = "<config>") -> PgBackupConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with targets, destinations, encryption, ...")
    _reject_unknown(
        data,
        {
            "targets",
            "destinations",
            "compression",
            "encryption",
            "retention",
            "schedule",
            "slack",
            "staging_dir",
            "owner",
            "retries",
            "retry_delay_seconds",
            "queue",
        },
        "top level",
    )
    targets_raw = _require(data, "targets", "config", list)
    if not targets_raw:
        raise ConfigError("targets: at least one target is required")
    targets = tuple(_parse_target(t, i) for i, t in enumerate(targets_raw))
    _unique([t.name for t in targets], "targets")
    destinations_raw = _require(data, "destinations", "config", list)
    if not destinations_raw:
        raise ConfigError("destinations: at least one destination is required")
    destinations = tuple(_parse_destination(d, i) for i, d in enumerate(destinations_raw))
    _unique([d.name for d in destinations], "destinations")

    compression_raw = _optional(data, "compression", "config", dict, {})
    _reject_unknown(compression_raw, {"algorithm", "level", "threads"}, "compression")
    compression = CompressionConfig(
        algorithm=_optional(compression_raw, "algorithm", "compression", str, "zstd"),
        level=_optional(
            compression_raw,
            "level",
            "compression",
            int,
            DEFAULT_COMPRESSION_LEVELS.get(compression_raw.get("algorithm", "zstd"), 3),
        ),
        threads=_optional(compression_raw, "threads", "compression", int, 0),
    )

    encryption_raw = _require(data, "encryption", "config", dict)
    _reject_unknown(encryption_raw, {"recipients", "public_key_files", "decryption_key_conn_id"}, "encryption")
    encryption = EncryptionConfig(
        recipients=tuple(_str_list(encryption_raw, "recipients", "encryption")),
        public_key_files=tuple(_str_list(encryption_raw, "public_key_files", "encryption")),
        decryption_key_conn_id=_check_conn_id(
            _require(encryption_raw, "decryption_key_conn_id", "encryption", str), "encryption.decryption_key_conn_id"
        ),
    )

    retention_raw = _optional(data, "retention", "config", dict, {})
    _reject_unknown(retention_raw, {"daily_days", "weekly_days", "monthly_days", "min_keep", "dry_run"}, "retention")
    retention = RetentionConfig(
        daily_days=_optional(retention_raw, "daily_days", "retention", int, 30),
        weekly_days=_optional(retention_raw, "weekly_days", "retention", int, 90),
        monthly_days=_optional(retention_raw, "monthly_days", "retention", int, 365),
        min_keep=_optional(retention_raw, "min_keep", "retention", int, 3),
        dry_run=_optional(retention_raw, "dry_run", "retention", bool, False),
    )

    schedule_raw = _optional(data, "schedule", "config", dict, {})
    _reject_unknown(schedule_raw, {"daily"}, "schedule")
    daily_raw = _optional(schedule_raw, "daily", "schedule", dict, {})
    _reject_unknown(daily_raw, {"full", "schema", "data", "deadline_minutes"}, "schedule.daily")
    daily = DailyScheduleConfig(
        **{
            kind: _check_cron(_optional(daily_raw, kind, "schedule.daily", str, default), f"schedule.daily.{kind}")
            for kind, default in (("full", "0 6 * * *"), ("schema", "0 12 * * *"), ("data", "0 18 * * *"))
        },
        deadline_minutes=float(_optional(daily_raw, "deadline_minutes", "schedule.daily", (int, float), 90)),
    )
    if daily.deadline_minutes <= 0:
        raise ConfigError(f"schedule.daily.deadline_minutes: expected more than 0, got {daily.deadline_minutes}")

    slack_raw = _optional(data, "slack", "config", dict, {})
    _reject_unknown(slack_raw, {"conn_id"}, "slack")
    slack_conn_id = _optional(slack_raw, "conn_id", "slack", str, None)
    if slack_conn_id is not None:
        _check_conn_id(slack_conn_id, "slack.conn_id")

    staging_dir = _optional(data, "staging_dir", "config", str, "/tmp/pgbackup-staging")
    if not os.path.isabs(staging_dir):
        raise ConfigError(f"staging_dir: expected an absolute path, got {staging_dir!r}")

    return PgBackupConfig(
        source_file=source,
        targets=targets,
        destinations=destinations,
        compression=compression,
        encryption=encryption,
        retention=retention,
        daily=daily,
        slack_conn_id=slack_conn_id,
        staging_dir=staging_dir,
        owner=_optional(data, "owner", "config", str, "data-platform"),
        retries=_non_negative(_optional(data, "retries", "config", int, 2), "retries"),
        queue=_optional(data, "queue", "config", str, "default"),
        retry_delay_seconds=_non_negative(
            _optional(data, "retry_delay_seconds", "config", int, 60), "retry_delay_seconds"
        ),
    )


def _non_negative(value: int, key: str) -> int:
    if value < 0:
        raise ConfigError(f"{key}: expected 0 or more, got {value}")
    return value


def _unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        seen.add(name)


def _str_list(data: dict[str, Any], key: str, where: str, default: list[str] | None = None) -> list[str]:
    value = _optional(data, key, where, list, default) if default is not None else _require(data, key, where, list)
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{where}.{key}: expected a list of non-empty strings, got {value!r}")
    return list(value)


def _parse_target(raw: Any, index: int) -> TargetConfig:
    where = f"targets[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with name, postgres_conn_id, validation")
    name = _check_name(_require(raw, "name", where, str), f"{where}.name")
    where = f"targets.{name}"
    _reject_unknown(
        raw,
        {
            "name",
            "postgres_conn_id",
            "profile",
            "database",
            "dump_format",
            "data_path",
            "validation",
            "exclude_schemas",
        },
        where,
    )
    validation_raw = _require(raw, "validation", where, dict)
    vwhere = f"{where}.validation"
    _reject_unknown(
        validation_raw,
        {"scratch_conn_id", "allow_source_server", "queries", "restore_jobs", "scratch_template"},
        vwhere,
    )
    validation = ValidationConfig(
        scratch_conn_id=_check_conn_id(
            _require(validation_raw, "scratch_conn_id", vwhere, str), f"{vwhere}.scratch_conn_id"
        ),
        allow_source_server=_optional(validation_raw, "allow_source_server", vwhere, bool, False),
        queries=tuple(_str_list(validation_raw, "queries", vwhere, list(SEED_VALIDATION_QUERIES))),
        restore_jobs=_optional(validation_raw, "restore_jobs", vwhere, int, 2),
        scratch_template=_optional(validation_raw, "scratch_template", vwhere, str, None),
    )
    return TargetConfig(
        name=name,
        postgres_conn_id=_check_conn_id(_require(raw, "postgres_conn_id", where, str), f"{where}.postgres_conn_id"),
        validation=validation,
        profile=_optional(raw, "profile", where, str, "plain"),
        database=_optional(raw, "database", where, str, None),
        dump_format=_optional(raw, "dump_format", where, str, "custom"),
        data_path=_optional(raw, "data_path", where, str, "staged"),
        exclude_schemas=tuple(_str_list(raw, "exclude_schemas", where, [])),
    )


def _parse_destination(raw: Any, index: int) -> DestinationConfig:
    where = f"destinations[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with name, type and path or bucket")
    name = _check_name(_require(raw, "name", where, str), f"{where}.name")
    where = f"destinations.{name}"
    dtype = _require(raw, "type", where, str)
    common = {"name", "type", "primary", "kinds"}
    if dtype == "local":
        _reject_unknown(raw, common | {"path"}, where)
        path = _require(raw, "path", where, str)
        if not os.path.isabs(path):
            raise ConfigError(f"{where}.path: expected an absolute directory like /backups, got {path!r}")
        url = "file://" + path
        conn_id = None
    elif dtype in ("s3", "gcs", "supabase_storage"):
        _reject_unknown(raw, common | {"conn_id", "bucket", "prefix"}, where)
        bucket = _require(raw, "bucket", where, str)
        if not re.match(r"^[a-z0-9][a-z0-9.\-_]{1,221}[a-z0-9]$", bucket):
            raise ConfigError(f"{where}.bucket: {bucket!r} is not a valid bucket name")
        prefix = _optional(raw, "prefix", where, str, "").strip("/")
        scheme = "gs" if dtype == "gcs" else "s3"
        url = f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
        conn_id = _check_conn_id(_require(raw, "conn_id", where, str), f"{where}.conn_id")
    else:
        raise ConfigError(f"{where}.type: {dtype!r} is not one of {', '.join(DESTINATION_TYPES)}")
    default_kinds = ["schema"] if dtype == "supabase_storage" else list(DUMP_KINDS)
    return DestinationConfig(
        name=name,
        type=dtype,
        url=url,
        conn_id=conn_id,
        primary=_optional(raw, "primary", where, bool, False),
        kinds=tuple(_str_list(raw, "kinds", where, default_kinds)),
    )
