"""The one declarative configuration file, typed and validated with no I/O but reading it.

The file is parsed into frozen pydantic models. Every mistake raises :class:`ConfigError`
naming the file, the dotted key and what was expected (``include/pgbackup.yaml:
compression.algorithm: 'lzma' is not one of gzip, zstd``), so an Airflow import error
tells the operator exactly what to fix. Secrets never live here: only Airflow connection ids.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pgbackup.errors import ConfigError
from pgbackup.profiles import PROFILE_NAMES

if TYPE_CHECKING:
    from pydantic._internal._model_construction import ModelMetaclass
else:
    ModelMetaclass = type(BaseModel)  # pydantic's metaclass, without importing a private module

DUMP_KINDS = ("full", "schema", "data")
DUMP_FORMATS = ("custom", "plain")
# auto: staged on a single-machine executor, stream elsewhere (decided when the DAG is parsed,
# by plugins/pgbackup_airflow/executors.py: the engine never asks Airflow).
DATA_PATHS = ("auto", "staged", "stream")
PROFILES = PROFILE_NAMES  # one module per profile (pgbackup.profiles); importing it loads none
DESTINATION_TYPES = ("local", "s3", "gcs", "supabase_storage")
COMPRESSION_LEVELS = {"gzip": (1, 9), "zstd": (1, 19)}
# zstd -3 is smaller than gzip -6 and keeps a 2-core backup near pg_dump's own speed;
# zstd -6 was 9% smaller but 40% slower end to end (docs/benchmarks.md).
DEFAULT_COMPRESSION_LEVELS = {"gzip": 6, "zstd": 3}
TIERS = ("daily", "weekly", "monthly")

# Upper bounds catch unit mistakes (seconds typed as minutes) and keep every later
# computation finite: a date minus 10**9 days overflows at prune time.
MAX_RETENTION_DAYS = 36_500
MAX_DEADLINE_MINUTES = 7 * 24 * 60

# The seed's validation queries, run when the tables exist in the restored database.
SEED_VALIDATION_QUERIES = (
    "SELECT COUNT(*) FROM users",
    "SELECT COUNT(*) FROM products",
    "SELECT COUNT(*) FROM orders",
    "SELECT COUNT(*) FROM customers",
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_DOTTED_QUAD_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(message: str, key: str = "") -> PydanticCustomError:
    """A validation error with our own wording; ``key`` is the sub-key it is about, if any."""
    return PydanticCustomError("pgbackup", "{message}", {"message": message, "key": key})


# --- field types ---------------------------------------------------------------------------


def _one_of(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise _invalid(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _int_between(low: int, high: int, unit: str = "") -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise _invalid(f"expected {low}..{high}{unit}, got {value}")
        return value

    return AfterValidator(check)


def _positive_up_to(high: float, unit: str) -> AfterValidator:
    def check(value: float) -> float:
        if not 0 < value <= high:
            raise _invalid(f"expected more than 0 and at most {high:g} {unit}, got {value:g}")
        return value

    return AfterValidator(check)


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise _invalid(f"{value!r} must be lowercase letters, digits and underscores, starting with a letter")
    return value


def _check_conn_id(value: str) -> str:
    if not _CONN_ID_RE.match(value):
        raise _invalid(f"{value!r} is not a valid Airflow connection id")
    return value


_CRON_FORM = "five fields like '0 6 * * *' (minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-6)"


def _check_cron(value: str) -> str:
    if len(value.split()) != 5:
        raise _invalid(f"{value!r} is not a five-field cron expression: expected {_CRON_FORM}")
    # Airflow's cron timetables are croniter underneath, and have imported it by the time a
    # DAG file is parsed, so this costs nothing there.
    from croniter import CroniterError, croniter

    try:
        croniter(value)
    except (CroniterError, ValueError, KeyError) as exc:
        # croniter's message repeats the expression first: "[99 99 * * *] is not acceptable, out of range"
        reason = re.sub(r"^\[.*?\]\s*(is not acceptable,?\s*)?", "", str(exc)) or "rejected by croniter"
        raise _invalid(f"{value!r} is not a valid cron expression ({reason}): expected {_CRON_FORM}") from None
    return value


def _check_absolute_path(value: str) -> str:
    parts = value.split("/")
    if not os.path.isabs(value) or "." in parts or ".." in parts or _CONTROL_RE.search(value):
        raise _invalid(f"expected an absolute directory like /backups, without . or .. segments, got {value!r}")
    return value


def _check_prefix(value: str) -> str:
    """A key prefix inside a bucket: ``..`` would make keys another tenant's, ``.`` and ``//`` are never meant."""
    stripped = value.strip("/")
    if stripped and (any(p in ("", ".", "..") for p in stripped.split("/")) or _CONTROL_RE.search(stripped)):
        raise _invalid(
            f"expected a key prefix like pgbackup or team/prod, without empty, . or .. segments, got {value!r}"
        )
    return stripped


Text = Annotated[str, Strict(), Field(min_length=1)]
Flag = Annotated[bool, Strict()]
Name = Annotated[str, Strict(), AfterValidator(_check_name)]
ConnId = Annotated[str, Strict(), AfterValidator(_check_conn_id)]
Cron = Annotated[str, Strict(), AfterValidator(_check_cron)]
AbsolutePath = Annotated[str, Strict(), AfterValidator(_check_absolute_path)]
Days = Annotated[int, Strict(), _int_between(1, MAX_RETENTION_DAYS, " days")]
# Numbers: an int is fine where a float is expected; true/false, strings, .nan and .inf are not.
_Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
DeadlineMinutes = Annotated[_Finite, _positive_up_to(MAX_DEADLINE_MINUTES, "minutes")]
ConnectSeconds = Annotated[_Finite, _positive_up_to(300, "seconds")]
ReadSeconds = Annotated[_Finite, _positive_up_to(3600, "seconds")]
BoundMinutes = Annotated[_Finite, _positive_up_to(24 * 60, "minutes")]


# --- bucket names ----------------------------------------------------------------------------

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (general purpose buckets)
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_GOOGLE_RE = re.compile(r"g[o0][o0]g[l1]e")


def s3_bucket_problem(name: str) -> str | None:
    """Why S3 would refuse this general purpose bucket name, or ``None``."""
    if not 3 <= len(name) <= 63:
        return f"it must be 3 to 63 characters long, not {len(name)}"
    if not re.fullmatch(r"[a-z0-9.\-]+", name):
        return "it may hold only lowercase letters, digits, dots and hyphens"
    # Each dot-separated label starts and ends with a letter or digit: this rules out
    # '..', '.-' and '-.' as well as a leading or trailing dot or hyphen.
    if any(not re.fullmatch(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?", label) for label in name.split(".")):
        return "each dot-separated part must start and end with a letter or digit (no '..', '.-', '-.')"
    if _DOTTED_QUAD_RE.match(name):
        return "it must not look like an IP address"
    for prefix in _S3_RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"the prefix {prefix!r} is reserved"
    for suffix in _S3_RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"the suffix {suffix!r} is reserved"
    return None


def gcs_bucket_problem(name: str) -> str | None:
    """Why Cloud Storage would refuse this bucket name, or ``None``.

    https://cloud.google.com/storage/docs/buckets#naming
    """
    if not re.fullmatch(r"[a-z0-9_.\-]+", name):
        return "it may hold only lowercase letters, digits, dots, hyphens and underscores"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "it must start and end with a letter or digit"
    parts = name.split(".")
    if len(parts) == 1 and not 3 <= len(name) <= 63:
        return f"it must be 3 to 63 characters long (222 with dots), not {len(name)}"
    if not 3 <= len(name) <= 222 or any(not 1 <= len(part) <= 63 for part in parts):
        return "a dotted name must be 3 to 222 characters, each dot-separated part 1 to 63"
    if _DOTTED_QUAD_RE.match(name):
        return "it must not look like an IP address"
    if name.startswith("goog") or _GOOGLE_RE.search(name):
        return "it must not start with 'goog' nor contain 'google' or a look-alike"
    return None


def supabase_bucket_problem(name: str) -> str | None:
    """Supabase Storage's own rule (1 to 63 characters), limited to characters safe in our URLs.

    https://github.com/supabase/storage/blob/master/src/storage/limits.ts (isValidBucketName)
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,63}", name) or name in (".", ".."):
        return "it must be 1 to 63 letters, digits, dots, hyphens or underscores"
    return None


_BUCKET_RULES: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "s3": ("S3", s3_bucket_problem),
    "gcs": ("Cloud Storage", gcs_bucket_problem),
    "supabase_storage": ("Supabase Storage", supabase_bucket_problem),
}


# --- models ----------------------------------------------------------------------------------


class _SectionMeta(ModelMetaclass):
    """Direct construction (engine code, tests): positional arguments, and ConfigError on a mistake.

    Only a call of the class comes here; the file is validated by ``model_validate``, which
    reports every mistake with its location instead.
    """

    def __call__(cls, *args: Any, **values: Any) -> Any:
        # Positional arguments in field order, as the dataclasses these models replaced took them.
        section: type[_Section] = cls  # type: ignore[assignment]
        names = list(section.model_fields)
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args, strict=False):
            if name in values:
                raise TypeError(f"{cls.__name__} got {name!r} twice")
            values[name] = value
        try:
            return super().__call__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, values, section.where)) from None


class _Section(BaseModel, metaclass=_SectionMeta):
    """A frozen section of the config file: unknown keys rejected, empty values mean the default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Where this section lives in the file, for errors raised when code builds one directly.
    where: ClassVar[str] = ""

    @classmethod
    def _file_keys(cls, data: dict[Any, Any]) -> set[str]:
        return {field.alias or name for name, field in cls.model_fields.items()}

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic reports "expected a mapping"
        allowed = cls._file_keys(data)
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise _invalid(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        optional = {field.alias or name for name, field in cls.model_fields.items() if not field.is_required()}
        # A key left empty in YAML (``compression:``) means its default, as it always has.
        return cls._fill_defaults({k: v for k, v in data.items() if not (v is None and k in optional)})


class ValidationConfig(_Section):
    """Where and how a backup is proven restorable."""

    where: ClassVar[str] = "validation"

    scratch_conn_id: ConnId
    allow_source_server: Flag = False
    queries: tuple[Text, ...] = SEED_VALIDATION_QUERIES
    restore_jobs: Annotated[int, Strict(), _int_between(1, 64)] = 2
    # A database on the scratch server that scratch databases are created from (CREATE
    # DATABASE ... TEMPLATE). Required by the supabase profile: the restore is only proven
    # on a database that already has the source project's platform.
    scratch_template: Annotated[str, Strict()] | None = None

    @field_validator("scratch_template")
    @classmethod
    def _database_name(cls, value: str | None) -> str | None:
        if value is not None and not 0 < len(value) < 64:
            raise _invalid(f"expected a database name (1 to 63 characters), got {value!r}")
        return value


# Folders at a destination's root that are not targets' (audit, drill, event, monitor, report
# and restore records), and the suffix of a target's safety backups: a target of such a name
# would share a folder with them, so its retention would take them for abandoned uploads.
RECORD_FOLDERS = ("audit", "drills", "events", "monitor", "reports", "restores")
SAFETY_SUFFIX = "_safety"


class TargetConfig(_Section):
    """One database to back up."""

    where: ClassVar[str] = "targets"

    name: Name
    postgres_conn_id: ConnId
    validation: ValidationConfig
    profile: Annotated[str, Strict(), _one_of(*PROFILES)] = "plain"
    database: Text | None = None
    dump_format: Annotated[str, Strict(), _one_of(*DUMP_FORMATS)] = "custom"
    data_path: Annotated[str, Strict(), _one_of(*DATA_PATHS)] = "auto"
    exclude_schemas: tuple[Text, ...] = ()

    @field_validator("name")
    @classmethod
    def _not_a_reserved_folder(cls, value: str) -> str:
        if value in RECORD_FOLDERS:
            raise _invalid(
                f"{value!r} is reserved: the destination's {value}/ folder holds pgbackup's own records "
                f"(reserved: {', '.join(RECORD_FOLDERS)}); name the target differently"
            )
        if value.endswith(SAFETY_SUFFIX):
            raise _invalid(
                f"{value!r} ends in {SAFETY_SUFFIX!r}, which is reserved: <target>{SAFETY_SUFFIX}/ holds the "
                "safety backups taken before a restore overwrites a database; name the target differently"
            )
        return value

    @model_validator(mode="after")
    def _profile_needs(self) -> TargetConfig:
        if self.profile == "supabase" and self.validation.scratch_template is None:
            raise _invalid(
                "required for profile supabase: the name of a template database with a new Supabase project's "
                "platform on the scratch server (validation restores into a copy of it, as the non-superuser "
                "postgres)",
                "validation.scratch_template",
            )
        if self.profile == "supabase" and self.dump_format == "plain" and self.data_path == "stream":
            raise _invalid(
                "profile supabase with dump_format plain needs data_path staged "
                "(the plain file is rendered from a filtered custom archive)",
                "data_path",
            )
        return self


class DestinationConfig(_Section):
    """One place backups are stored. ``kinds`` limits which dump kinds it receives.

    A local destination has a ``path``; the others a ``bucket``, an optional ``prefix``
    inside it and the Airflow connection ``conn_id`` that reaches it.
    """

    where: ClassVar[str] = "destinations"

    name: Name
    type: Annotated[str, Strict(), _one_of(*DESTINATION_TYPES)]
    path: AbsolutePath | None = None
    bucket: Annotated[str, Strict()] | None = None
    prefix: Annotated[str, Strict(), AfterValidator(_check_prefix)] = ""
    conn_id: ConnId | None = None
    primary: Flag = False
    kinds: tuple[Annotated[str, Strict()], ...] = DUMP_KINDS

    @classmethod
    def _file_keys(cls, data: dict[Any, Any]) -> set[str]:
        common = {"name", "type", "primary", "kinds"}
        kind = data.get("type")
        if kind == "local":
            return common | {"path"}
        if kind in _BUCKET_RULES:
            return common | {"conn_id", "bucket", "prefix"}
        return super()._file_keys(data)

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "kinds" not in data and data.get("type") == "supabase_storage":
            return {**data, "kinds": ("schema",)}  # the seed keeps schema backups there
        return data

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        rules = _BUCKET_RULES.get(info.data.get("type", ""))
        if value is not None and rules is not None:
            service, problem_of = rules
            problem = problem_of(value)
            if problem:
                raise _invalid(f"{value!r} is not a valid {service} bucket name: {problem}")
        return value

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(k not in DUMP_KINDS for k in value):
            raise _invalid(f"expected a non-empty subset of {list(DUMP_KINDS)}, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _located(self) -> DestinationConfig:
        if self.type == "local" and self.path is None:
            raise _invalid("required for a local destination: an absolute directory like /backups", "path")
        if self.type != "local":
            for key in ("bucket", "conn_id"):
                if getattr(self, key) is None:
                    raise _invalid(f"required for a {self.type} destination", key)
        return self

    @property
    def url(self) -> str:
        if self.type == "local":
            return f"file://{self.path}"
        scheme = "gs" if self.type == "gcs" else "s3"
        return f"{scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{scheme}://{self.bucket}"


class CompressionConfig(_Section):
    where: ClassVar[str] = "compression"

    algorithm: Annotated[str, Strict(), _one_of(*COMPRESSION_LEVELS)] = "zstd"
    level: Annotated[int, Strict()] = DEFAULT_COMPRESSION_LEVELS["zstd"]
    threads: Annotated[int, Strict(), _int_between(0, 1024)] = 0  # zstd only; 0 = one per core

    @classmethod
    def _fill_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        algorithm = data.get("algorithm", "zstd")
        if "level" not in data and algorithm in DEFAULT_COMPRESSION_LEVELS:
            return {**data, "level": DEFAULT_COMPRESSION_LEVELS[algorithm]}
        return data

    @model_validator(mode="after")
    def _level_in_range(self) -> CompressionConfig:
        low, high = COMPRESSION_LEVELS[self.algorithm]
        if not low <= self.level <= high:
            raise _invalid(f"{self.algorithm} takes {low}..{high}, got {self.level}", "level")
        return self


class EncryptionConfig(_Section):
    """gpg public-key encryption to every recipient.

    ``public_key_files`` are armored public keys (not secrets) imported into a private,
    throwaway keyring for each run, so a run never depends on a worker's keyring state.
    The private key used by validation lives in the Airflow connection
    ``decryption_key_conn_id`` (extra ``private_key``, password = passphrase).
    """

    where: ClassVar[str] = "encryption"

    recipients: tuple[Text, ...]
    public_key_files: tuple[Text, ...]
    decryption_key_conn_id: ConnId

    @field_validator("recipients")
    @classmethod
    def _some_recipient(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _invalid("at least one gpg recipient is required")
        return value

    @field_validator("public_key_files")
    @classmethod
    def _some_key(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _invalid("at least one armored public key file is required")
        return value


def _check_min_keep(value: int) -> int:
    if not 1 <= value <= 10_000:
        raise _invalid(f"expected 1..10000 (the newest verified backup is always kept), got {value}")
    return value


MinKeep = Annotated[int, Strict(), AfterValidator(_check_min_keep)]
KeepCount = Annotated[int, Strict(), _int_between(1, 10_000, " backups")]


class TierRetention(_Section):
    """One tier's rule: an age (``days``), a count of verified backups (``keep``), or both.

    A backup is kept while either rule keeps it: ``{days: 90, keep: 8}`` keeps every weekly
    backup of the last 90 days and, beyond that, the newest 8 verified ones.
    """

    where: ClassVar[str] = "retention.<tier>"

    days: Days | None = None
    keep: KeepCount | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> TierRetention:
        if self.days is None and self.keep is None:
            raise _invalid(
                "expected days (an age), keep (a count of verified backups) or both, e.g. {days: 90, keep: 8}"
            )
        return self

    def describe(self) -> str:
        rules = ([f"{self.days} days"] if self.days is not None else []) + (
            [f"the newest {self.keep} verified"] if self.keep is not None else []
        )
        return " or ".join(rules)


class RetentionOverride(_Section):
    """What one destination keeps differently (``retention.by_destination.<name>``); the rest is inherited."""

    where: ClassVar[str] = "retention.by_destination.<name>"

    daily: TierRetention | None = None
    weekly: TierRetention | None = None
    monthly: TierRetention | None = None
    safety: TierRetention | None = None
    min_keep: MinKeep | None = None
    unverified_grace_days: Days | None = None
    delete_unverified_after_grace: Flag | None = None
    dry_run: Flag | None = None


class RetentionConfig(_Section):
    """Retention per tier, each as an age and/or a count, at every destination on its own catalog.

    The older form ``daily_days: 30`` is still read as ``daily: {days: 30}`` (giving both
    forms of one tier is an error); ``daily_days`` and the like always mirror the tier's days.
    """

    where: ClassVar[str] = "retention"

    daily: TierRetention = TierRetention(days=30)
    weekly: TierRetention = TierRetention(days=90)
    monthly: TierRetention = TierRetention(days=365)
    # Safety backups (taken before a restore overwrites a database, under <target>_safety/).
    safety: TierRetention = TierRetention(days=90)
    min_keep: MinKeep = 3
    # A backup not verified (pending or failed) is kept this long, then reported; deleted only
    # if the flag says so, and even then only with a newer verified backup of its kind and tier.
    unverified_grace_days: Days = 7
    delete_unverified_after_grace: Flag = False
    dry_run: Flag = False
    by_destination: dict[Name, RetentionOverride] = Field(default_factory=dict)
    # The older form, read into the tiers above.
    daily_days: Days | None = None
    weekly_days: Days | None = None
    monthly_days: Days | None = None

    @model_validator(mode="after")
    def _older_form(self) -> RetentionConfig:
        for tier in TIERS:
            older = f"{tier}_days"
            if older in self.model_fields_set and tier in self.model_fields_set:
                raise _invalid(
                    f"give either {older}: N (the older form) or {tier}: {{days: N, keep: M}}, not both",
                    older,
                )
            if older in self.model_fields_set and getattr(self, older) is not None:
                # Frozen, but still being built: the only moment a field may be set.
                object.__setattr__(self, tier, TierRetention(days=getattr(self, older)))
            object.__setattr__(self, older, getattr(self, tier).days)
        return self

    def __hash__(self) -> int:
        # Frozen sections hash; by_destination is the one mapping in the file, so hash its items.
        return hash(tuple((name, tuple(sorted(v.items())) if isinstance(v, dict) else v) for name, v in self))

    def tier(self, name: str) -> TierRetention:
        if name not in TIERS:
            raise ConfigError(f"retention: no tier {name!r} (tiers: {', '.join(TIERS)})")
        policy: TierRetention = getattr(self, name)
        return policy

    def days_for(self, tier: str) -> int | None:
        return self.tier(tier).days

    def for_safety_backups(self) -> RetentionConfig:
        """The policy of a ``<target>_safety/`` folder: the ``safety`` rule for every tier in it."""
        rule = self.safety
        tiers: dict[str, Any] = {tier: rule for tier in TIERS} | {f"{tier}_days": rule.days for tier in TIERS}
        return self.model_copy(update=tiers)

    def for_destination(self, name: str) -> RetentionConfig:
        """The policy one destination applies: this one, with its ``by_destination`` entry over it."""
        override = self.by_destination.get(name)
        if override is None:
            return self
        changes: dict[str, Any] = {key: value for key, value in override if value is not None}
        for tier in TIERS:
            changes[f"{tier}_days"] = (changes.get(tier) or self.tier(tier)).days
        return self.model_copy(update={**changes, "by_destination": {}})


class DailyScheduleConfig(_Section):
    """The seed's daily cycle, in UTC."""

    where: ClassVar[str] = "schedule.daily"

    full: Cron = "0 6 * * *"
    # ``schema`` would shadow a BaseModel method; the file key stays ``schema``.
    schema_: Cron = Field(default="0 12 * * *", alias="schema")
    data: Cron = "0 18 * * *"
    deadline_minutes: DeadlineMinutes = 90.0

    def cron_for(self, kind: str) -> str:
        return {"full": self.full, "schema": self.schema_, "data": self.data}[kind]

    def kind_for_hour_minute(self, hour: int, minute: int) -> str | None:
        """The dump kind whose cron fires at this wall time, for runs of the multi-cron timetable."""
        for kind in DUMP_KINDS:
            cron_minute, cron_hour = self.cron_for(kind).split()[:2]
            if cron_minute.isdigit() and cron_hour.isdigit() and (int(cron_hour), int(cron_minute)) == (hour, minute):
                return kind
        return None


def _check_time_of_day(value: str) -> str:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _invalid(f"expected a UTC time of day like '03:00' (HH:MM, 00:00 to 23:59), got {value!r}")
    return value


TimeOfDay = Annotated[str, Strict(), AfterValidator(_check_time_of_day)]
Hours = Annotated[_Finite, _positive_up_to(24 * MAX_RETENTION_DAYS, "hours")]


class WeeklyScheduleConfig(_Section):
    """The seed's weekly cycle: a full backup Sunday 02:00 UTC into ``weekly/week_NN_YYYY/``.

    The seed's 04:00 validation and 06:00 cleanup are deadlines, not idle waits: a run not
    finished ``validated_by_minutes`` / ``pruned_by_minutes`` after it was queued alerts Slack.
    """

    where: ClassVar[str] = "schedule.weekly"

    cron: Cron = "0 2 * * 0"
    validated_by_minutes: DeadlineMinutes = 120.0
    pruned_by_minutes: DeadlineMinutes = 240.0

    @model_validator(mode="after")
    def _in_order(self) -> WeeklyScheduleConfig:
        if self.validated_by_minutes > self.pruned_by_minutes:
            raise _invalid(
                f"must not be later than pruned_by_minutes ({self.pruned_by_minutes:g}): a backup is validated "
                f"before it is pruned, got {self.validated_by_minutes:g}",
                "validated_by_minutes",
            )
        return self


class MonthlyScheduleConfig(_Section):
    """The monthly cycle, on the first Sunday of each month only (cron cannot say it: see
    ``pgbackup_airflow.timetables``): backup, audit, recovery drill, strategy report."""

    where: ClassVar[str] = "schedule.monthly"

    time: TimeOfDay = "03:00"
    deadline_minutes: DeadlineMinutes = 360.0

    @property
    def hour(self) -> int:
        return int(self.time.split(":")[0])

    @property
    def minute(self) -> int:
        return int(self.time.split(":")[1])


class ScheduleConfig(_Section):
    where: ClassVar[str] = "schedule"

    daily: DailyScheduleConfig = DailyScheduleConfig()
    weekly: WeeklyScheduleConfig = WeeklyScheduleConfig()
    monthly: MonthlyScheduleConfig = MonthlyScheduleConfig()


class RpoConfig(_Section):
    """Recovery point objectives: the newest verified backup of each tier may be at most this old.

    Weekly: 7 days plus a day of slack; monthly: first Sundays can be five weeks apart.
    """

    where: ClassVar[str] = "monitor.rpo_hours"

    daily: Hours = 26.0
    weekly: Hours = 8 * 24.0
    monthly: Hours = 36 * 24.0

    def hours_for(self, tier: str) -> float:
        return float(getattr(self, tier))


def _fraction(value: float) -> float:
    if not 0 < value < 1:
        raise _invalid(f"expected a fraction between 0 and 1 (exclusive), got {value:g}")
    return value


def _multiple(value: float) -> float:
    if not 1 < value <= 1000:
        raise _invalid(f"expected a multiple above 1 (at most 1000), got {value:g}")
    return value


Fraction = Annotated[_Finite, AfterValidator(_fraction)]
Multiple = Annotated[_Finite, AfterValidator(_multiple)]


class SizeAnomalyConfig(_Section):
    """A backup much smaller or larger than the median of the last ``history`` of its kind and tier."""

    where: ClassVar[str] = "monitor.size"

    history: Annotated[int, Strict(), _int_between(1, 1000)] = 10
    min_history: Annotated[int, Strict(), _int_between(1, 1000)] = 3
    low_ratio: Fraction = 0.5
    high_ratio: Multiple = 2.0
    floor_bytes: Annotated[int, Strict(), _int_between(0, 2**50)] = 1_048_576  # the seed's "< 1 MB"

    @model_validator(mode="after")
    def _enough_history(self) -> SizeAnomalyConfig:
        if self.min_history > self.history:
            raise _invalid(f"must not exceed history ({self.history}), got {self.min_history}", "min_history")
        return self


class RowDropConfig(_Section):
    """A table whose snapshot row count fell sharply against the previous backup."""

    where: ClassVar[str] = "monitor.rows"

    drop_fraction: Fraction = 0.5
    min_rows: Annotated[int, Strict(), _int_between(0, 2**62)] = 100


class SupabaseMonitorConfig(_Section):
    """Supabase's own backups of one supabase-profile target, read through the Management API.

    ``conn_id``: an Airflow connection whose password is a Supabase personal access token,
    with extra ``{"project_ref": "<ref>"}`` (and ``base_url`` for another API host).
    """

    where: ClassVar[str] = "monitor.supabase"

    target: Name
    conn_id: ConnId
    max_age_hours: Hours = 26.0
    require_pitr: Flag = False
    pitr_max_lag_minutes: DeadlineMinutes = 60.0


class MonitorConfig(_Section):
    """``pg_backup_monitor``: hourly checks, plus the seed's 07:00 daily health check."""

    where: ClassVar[str] = "monitor"

    cron: Cron = "0 * * * *"
    health_check_cron: Cron = "0 7 * * *"
    deadline_minutes: DeadlineMinutes = 30.0
    realert_minutes: DeadlineMinutes = 240.0
    rpo_hours: RpoConfig = RpoConfig()
    size: SizeAnomalyConfig = SizeAnomalyConfig()
    rows: RowDropConfig = RowDropConfig()
    supabase: tuple[SupabaseMonitorConfig, ...] = ()


class RecoveryConfig(_Section):
    """The seed's recovery time objectives, which the monthly drill measures against."""

    where: ClassVar[str] = "recovery"

    rto_critical_minutes: DeadlineMinutes = 15.0
    rto_full_minutes: DeadlineMinutes = 60.0
    drill_tier: Annotated[str, Strict(), _one_of(*TIERS)] = "monthly"

    @model_validator(mode="after")
    def _critical_first(self) -> RecoveryConfig:
        if self.rto_critical_minutes > self.rto_full_minutes:
            raise _invalid(
                f"must not exceed rto_full_minutes ({self.rto_full_minutes:g}): critical data is part of the "
                f"database, got {self.rto_critical_minutes:g}",
                "rto_critical_minutes",
            )
        return self


def _non_negative(value: float, unit: str) -> float:
    if not 0 <= value <= 24 * MAX_RETENTION_DAYS:
        raise _invalid(f"expected 0 or more {unit} (at most {24 * MAX_RETENTION_DAYS}), got {value:g}")
    return value


class AuditConfig(_Section):
    """The monthly audit of every stored object."""

    where: ClassVar[str] = "audit"

    # An object with no manifest younger than this is an upload in flight, not an orphan.
    orphan_grace_hours: Annotated[_Finite, AfterValidator(lambda v: _non_negative(v, "hours"))] = 6.0
    progress_interval_seconds: Annotated[_Finite, _positive_up_to(3600, "seconds")] = 10.0


class PoolsConfig(_Section):
    """Airflow pool sizes that protect the servers: one pool per source connection, capping its
    concurrent dumps, and one per scratch connection, capping its concurrent restore tests.
    Targets of one server share its connection (each names its ``database``)."""

    where: ClassVar[str] = "pools"

    dumps_per_source: Annotated[int, Strict(), _int_between(1, 128)] = 2
    restores_per_scratch: Annotated[int, Strict(), _int_between(1, 128)] = 1


class SlackConfig(_Section):
    where: ClassVar[str] = "slack"

    conn_id: ConnId | None = None


class TimeoutsConfig(_Section):
    """Bounds on every network operation and task (a hung endpoint must fail, not wait forever)."""

    where: ClassVar[str] = "timeouts"

    connect_seconds: ConnectSeconds = 10.0
    read_seconds: ReadSeconds = 120.0
    operation_minutes: BoundMinutes = 120.0
    statement_minutes: BoundMinutes = 60.0
    task_minutes: BoundMinutes = 240.0

    def storage_options(self) -> dict[str, float]:
        """Constructor options of every storage backend (seconds)."""
        return {
            "connect_timeout": float(self.connect_seconds),
            "read_timeout": float(self.read_seconds),
            "operation_timeout": float(self.operation_minutes) * 60,
        }

    def postgres_options(self) -> dict[str, int]:
        """:class:`~pgbackup.pgconn.PgConnInfo` fields; libpq takes whole seconds for connect_timeout."""
        return {
            "connect_timeout": max(2, math.ceil(self.connect_seconds)),
            "statement_timeout_ms": math.ceil(self.statement_minutes * 60_000),
            "tcp_user_timeout_ms": math.ceil(self.read_seconds * 1000),
        }


class PgBackupConfig(_Section):
    """The whole file. Build it with :func:`load_config` or :func:`parse_config`."""

    targets: tuple[TargetConfig, ...]
    destinations: tuple[DestinationConfig, ...]
    encryption: EncryptionConfig
    compression: CompressionConfig = CompressionConfig()
    retention: RetentionConfig = RetentionConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    slack: SlackConfig = SlackConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    monitor: MonitorConfig = MonitorConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    audit: AuditConfig = AuditConfig()
    pools: PoolsConfig = PoolsConfig()
    staging_dir: AbsolutePath = "/tmp/pgbackup-staging"
    owner: Text = "data-platform"
    retries: Annotated[int, Strict(), _int_between(0, 100)] = 2
    retry_delay_seconds: Annotated[int, Strict(), _int_between(0, 86_400)] = 60
    queue: Text = "default"

    _source_file: str = PrivateAttr(default="<config>")

    @field_validator("targets", "destinations")
    @classmethod
    def _named_once(cls, value: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        if not value:
            raise _invalid(f"at least one {(info.field_name or 'items')[:-1]} is required")
        seen: set[str] = set()
        for item in value:
            if item.name in seen:
                raise _invalid(f"the name {item.name!r} is used twice")
            seen.add(item.name)
        return value

    @model_validator(mode="after")
    def _one_primary(self, info: ValidationInfo) -> PgBackupConfig:
        primaries = [d.name for d in self.destinations if d.primary]
        if len(primaries) != 1:
            raise _invalid(
                "exactly one destination needs `primary: true` (validation restores from it), "
                f"found {primaries or 'none'}",
                "destinations",
            )
        for index, watched in enumerate(self.monitor.supabase):
            where = f"monitor.supabase[{index}].target"
            known = {t.name: t for t in self.targets}
            if watched.target not in known:
                raise _invalid(f"{watched.target!r} is not one of the targets ({', '.join(known)})", where)
            if known[watched.target].profile != "supabase":
                raise _invalid(
                    f"target {watched.target!r} has profile {known[watched.target].profile}; Supabase-managed "
                    "backups are checked only for profile supabase",
                    where,
                )
        for name in self.retention.by_destination:
            if name not in {d.name for d in self.destinations}:
                names = ", ".join(d.name for d in self.destinations)
                raise _invalid(f"{name!r} is not one of the destinations ({names})", f"retention.by_destination.{name}")
        if isinstance(info.context, dict) and "source_file" in info.context:
            self._source_file = str(info.context["source_file"])
        return self

    @property
    def source_file(self) -> str:
        return self._source_file

    @property
    def daily(self) -> DailyScheduleConfig:
        return self.schedule.daily

    @property
    def slack_conn_id(self) -> str | None:
        return self.slack.conn_id

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


# --- loading ---------------------------------------------------------------------------------


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
    return parse_config(data, str(config_path))


def parse_config(data: Any, source: str = "<config>") -> PgBackupConfig:
    """Validate the file's parsed YAML. Errors read ``<source>: <dotted.key>: <what is expected>``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with targets, destinations, encryption, ...")
    try:
        return PgBackupConfig.model_validate(data, context={"source_file": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, "", source)) from None


def _describe(exc: ValidationError, data: Any, where: str, source: str = "") -> str:
    """One line per mistake: ``<source>: <dotted.key>: <what is expected>``."""
    lines = []
    for error in exc.errors(include_url=False):
        key = _dotted_key(where, error["loc"], data, (error.get("ctx") or {}).get("key", ""))
        line = f"{key}: {_expectation(error)}"
        lines.append(f"{source}: {line}" if source else line)
    return "\n".join(dict.fromkeys(lines))


def _dotted_key(where: str, loc: tuple[int | str, ...], data: Any, sub_key: str) -> str:
    """``('targets', 0, 'profile')`` -> ``targets.projectx.profile`` (the item's name when it has a valid one)."""
    key = where
    node = data
    for segment in loc:
        if isinstance(segment, int):
            item = node[segment] if isinstance(node, list | tuple) and segment < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            key += f".{name}" if isinstance(name, str) and _NAME_RE.match(name) else f"[{segment}]"
            node = item
        else:
            key = f"{key}.{segment}" if key else str(segment)
            node = node.get(segment) if isinstance(node, dict) else None
    if sub_key:
        key = f"{key}.{sub_key}" if key else sub_key
    return key or "top level"


_EXPECTED = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
}


def _expectation(error: Any) -> str:
    kind = error["type"]
    if kind == "pgbackup":
        return str(error["ctx"]["message"])
    if kind == "missing":
        return "required key is missing"
    if kind == "string_too_short":
        return "expected a non-empty string"
    got = repr(error.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "extra_forbidden":
        return "unknown key"
    return f"{error['msg']}, got {got}"
