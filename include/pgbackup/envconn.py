"""Airflow connections read from ``AIRFLOW_CONN_<ID>`` without Airflow.

Disaster recovery cannot depend on the Airflow that may be down with the database, yet
one secret format should serve both. This parses Airflow's own two environment formats
(https://airflow.apache.org/docs/apache-airflow/stable/howto/connection.html):

* URI: ``postgresql://user:pa%40ss@host:5432/dbname?sslmode=require`` (``__extra__`` holds
  a JSON extra; other query parameters become extra fields, JSON-decoded when they parse);
* JSON: ``{"conn_type": "postgres", "host": ..., "login": ..., "password": ..., "extra": {...}}``.

It mirrors ``airflow.models.connection.Connection`` (scheme ``postgresql`` is conn type
``postgres``; ``-`` becomes ``_``; a second ``://`` is the host's protocol), so a value
that works in Airflow works here.
"""

from __future__ import annotations

import configparser
import getpass
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pgbackup.errors import ConfigError
from pgbackup.pgconn import PgConnInfo

if TYPE_CHECKING:
    from pgbackup.config import DestinationConfig, TimeoutsConfig
    from pgbackup.restore import DecryptionKey
    from pgbackup.storage.base import Storage

ENV_PREFIX = "AIRFLOW_CONN_"
_EXTRA_KEY = "__extra__"
_JSON_FIELDS = {"conn_type", "description", "host", "login", "password", "schema", "port", "extra"}


@dataclass(frozen=True)
class EnvConnection:
    """An Airflow connection's fields; ``password`` is never shown by repr."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def env_var_name(conn_id: str) -> str:
    return ENV_PREFIX + conn_id.upper()


def lookup(conn_id: str, environ: Mapping[str, str] | None = None) -> EnvConnection | None:
    """The connection ``conn_id`` from ``AIRFLOW_CONN_<CONN_ID>``, or None when unset."""
    env = os.environ if environ is None else environ
    raw = env.get(env_var_name(conn_id))
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if raw.startswith("{"):
        return parse_json(conn_id, raw)
    return parse_uri(conn_id, raw)


def parse_json(conn_id: str, raw: str) -> EnvConnection:
    where = f"{env_var_name(conn_id)} (JSON)"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object with conn_type, host, login, password, ...")
    unknown = sorted(set(data) - _JSON_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_JSON_FIELDS))}")
    port = data.get("port")
    if port not in (None, ""):
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: port must be an integer, got {port!r}") from None
    else:
        port = None
    conn_type = data.get("conn_type")
    return EnvConnection(
        conn_id=conn_id,
        conn_type=_normalize_conn_type(conn_type) if conn_type else None,
        host=_str_or_none(data.get("host")),
        port=port,
        login=_str_or_none(data.get("login")),
        password=_str_or_none(data.get("password")),
        schema=_str_or_none(data.get("schema")),
        extra=_extra_dict(data.get("extra"), where),
    )


def parse_uri(conn_id: str, uri: str) -> EnvConnection:
    where = f"{env_var_name(conn_id)} (URI)"
    schemes = uri.count("://")
    if schemes == 0 or schemes > 2:
        raise ConfigError(f"{where}: expected <conn-type>://[login[:password]@]host[:port][/schema][?extra]")
    host_with_protocol = schemes == 2
    first = urlsplit(uri)
    conn_type = first.scheme
    if not conn_type or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-_]*", conn_type):
        raise ConfigError(f"{where}: missing or invalid connection type before '://'")
    rest = uri.replace(f"{conn_type}://", "" if host_with_protocol else "//", 1)
    if host_with_protocol and ("@" in rest.split("://", 1)[0] or ":" in rest.split("://", 1)[0]):
        raise ConfigError(f"{where}: invalid connection string (a protocol before the host must be a bare word)")
    parts = urlsplit(rest)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number between 0 and 65535") from None
    host = unquote(parts.hostname or "")
    if "/" in host:  # Airflow keeps a host that contains a path as written
        host = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
    if host and host_with_protocol:
        host = f"{parts.scheme}://{host}"
    extra: dict[str, Any] = {}
    if parts.query:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if _EXTRA_KEY in query:
            extra = _extra_dict(query[_EXTRA_KEY], where)
        else:
            for key, value in query.items():
                try:
                    extra[key] = json.loads(value) if value else value
                except ValueError:
                    extra[key] = value
    path = parts.path[1:]
    return EnvConnection(
        conn_id=conn_id,
        conn_type=_normalize_conn_type(conn_type),
        host=host or None,
        port=port,
        login=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        schema=unquote(path) if path else None,
        extra=extra,
    )


def _normalize_conn_type(conn_type: str) -> str:
    if conn_type == "postgresql":
        return "postgres"
    return conn_type.replace("-", "_")


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _extra_dict(value: Any, where: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{where}: the extra is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: the extra must be a JSON object, got {type(value).__name__}")
    return value


# -- engine values from connections (the break-glass CLI's counterpart of the Airflow layer) --
#
# Each function takes the config's connection id. When ``AIRFLOW_CONN_<ID>`` is set it wins;
# otherwise the tool's own defaults apply: libpq's (PG* variables, PGSERVICE, ~/.pgpass) for
# PostgreSQL, the AWS and Google default credential chains for storage.

POSTGRES_TYPES = ("postgres",)
AWS_TYPES = ("aws", "supabase")
GCP_TYPES = ("google_cloud_platform", "gcp")
_GCP_EXTRA_PREFIX = "extra__google_cloud_platform__"


def postgres_conn_info(
    conn_id: str,
    database: str | None,
    label: str,
    timeouts: TimeoutsConfig,
    environ: Mapping[str, str] | None = None,
) -> PgConnInfo:
    """The PostgreSQL connection ``conn_id``: from its variable, else libpq's defaults."""
    env = os.environ if environ is None else environ
    conn = lookup(conn_id, env)
    if conn is None:
        values = libpq_defaults(env)
        values["dbname"] = database or values.get("dbname")
        return _pg_from_values(values, f"{label} (libpq defaults: {env_var_name(conn_id)} is not set)", timeouts, env)
    _check_type(conn, POSTGRES_TYPES)
    if not conn.host:
        raise ConfigError(f"{env_var_name(conn_id)}: connection {conn_id!r} has no host")
    values = {
        "host": conn.host,
        "port": str(conn.port or 5432),
        "user": conn.login or "postgres",
        "dbname": database or conn.schema or "postgres",
        "password": conn.password,
        "sslmode": conn.extra.get("sslmode"),
    }
    return _pg_from_values(values, label, timeouts, env)


def _pg_from_values(
    values: Mapping[str, str | None], label: str, timeouts: TimeoutsConfig, env: Mapping[str, str]
) -> PgConnInfo:
    host = values.get("host") or _default_socket_dir()
    port_text = values.get("port") or "5432"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{label}: port {port_text!r} is not a number") from None
    user = values.get("user") or getpass.getuser()
    dbname = values.get("dbname") or user
    password = values.get("password")
    if password is None:
        password = pgpass_password(host, port, dbname, user, env)
    return PgConnInfo(
        host=host,
        port=port,
        user=user,
        dbname=dbname,
        password=password,
        sslmode=values.get("sslmode") or None,
        label=label,
        **timeouts.postgres_options(),
    )


def _default_socket_dir() -> str:
    for candidate in ("/var/run/postgresql", "/tmp"):
        if os.path.isdir(candidate):
            return candidate
    return "localhost"


def libpq_defaults(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """What libpq would connect with: the PGSERVICE entry, overridden by PG* variables.

    https://www.postgresql.org/docs/current/libpq-envars.html and libpq-pgservice.html.
    The child programs run in a minimal environment, so the values are resolved here.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    service = env.get("PGSERVICE")
    if service:
        values.update(service_entry(service, env))
    for key, variable in (
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
        ("password", "PGPASSWORD"),
        ("sslmode", "PGSSLMODE"),
    ):
        if env.get(variable):
            values[key] = env[variable]
    return values


def service_entry(service: str, environ: Mapping[str, str]) -> dict[str, str | None]:
    """The ``[service]`` section of the per-user, then the system, service file."""
    files = []
    if environ.get("PGSERVICEFILE"):
        files.append(Path(environ["PGSERVICEFILE"]))
    else:
        files.append(Path(environ.get("HOME", str(Path.home()))) / ".pg_service.conf")
    files.append(Path(environ.get("PGSYSCONFDIR", "/etc/postgresql-common")) / "pg_service.conf")
    for path in files:
        if not path.is_file():
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ConfigError(f"{path}: not a valid service file: {exc}") from None
        if parser.has_section(service):
            entry = dict(parser.items(service))
            known = {"host", "port", "user", "dbname", "password", "sslmode"}
            return {key: value for key, value in entry.items() if key in known}
    raise ConfigError(f"PGSERVICE={service!r}: no such service in {', '.join(str(p) for p in files)}")


def pgpass_password(
    host: str, port: int, dbname: str, user: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The password ~/.pgpass (or PGPASSFILE) gives this connection, as libpq matches it."""
    env = os.environ if environ is None else environ
    path = Path(env["PGPASSFILE"]) if env.get("PGPASSFILE") else Path(env.get("HOME", str(Path.home()))) / ".pgpass"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    wanted = (
        "localhost" if host.startswith("/") else host,
        str(port),
        dbname,
        user,
    )
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) != 5:
            continue
        if all(pattern in ("*", value) for pattern, value in zip(fields[:4], wanted, strict=True)):
            return fields[4]
    return None


def _pgpass_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def storage_for(
    destination: DestinationConfig, timeouts: TimeoutsConfig, environ: Mapping[str, str] | None = None
) -> Storage:
    """The destination's storage backend; credentials from its connection or the default chain."""
    from pgbackup.storage import open_storage

    env = os.environ if environ is None else environ
    options: dict[str, Any] = dict(timeouts.storage_options())
    if destination.type == "local":
        return open_storage(destination.url, **options)
    conn = lookup(destination.conn_id, env) if destination.conn_id else None
    if destination.type in ("s3", "supabase_storage"):
        if conn is not None:
            options.update(aws_storage_options(conn))
        if destination.type == "supabase_storage":
            if "endpoint_url" not in options and "project_ref" not in options:
                raise ConfigError(
                    f"destinations.{destination.name}: Supabase Storage needs the connection "
                    f"{destination.conn_id!r} ({env_var_name(destination.conn_id or '')}) with extra "
                    '{"endpoint_url": "https://<ref>.supabase.co/storage/v1/s3"}'
                )
            return open_storage(destination.url, flavor="supabase_storage", **options)
        options.pop("project_ref", None)
        return open_storage(destination.url, **options)
    if destination.type == "gcs":
        if conn is not None:
            options.update(gcs_storage_options(conn))
        return open_storage(destination.url, **options)
    raise ConfigError(f"destinations.{destination.name}: unsupported type {destination.type!r}")


def aws_storage_options(conn: EnvConnection) -> dict[str, Any]:
    """S3Storage options from an Airflow AWS connection (login/password = access keys)."""
    _check_type(conn, AWS_TYPES)
    extra = conn.extra
    unsupported = sorted(set(extra) & {"role_arn", "assume_role_method", "profile_name", "session_kwargs"})
    if unsupported:
        raise ConfigError(
            f"{env_var_name(conn.conn_id)}: extra {', '.join(unsupported)} is not supported outside Airflow; "
            "give access keys as login/password, or leave the variable unset to use the AWS default chain "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID, instance role)"
        )
    options: dict[str, Any] = {}
    if conn.login:
        options["aws_access_key_id"] = conn.login
    if conn.password:
        options["aws_secret_access_key"] = conn.password
    token = extra.get("aws_session_token")
    if token:
        options["aws_session_token"] = token
    endpoint = extra.get("endpoint_url") or (extra.get("service_config") or {}).get("s3", {}).get("endpoint_url")
    if endpoint:
        options["endpoint_url"] = endpoint
    if extra.get("region_name"):
        options["region_name"] = extra["region_name"]
    if extra.get("project_ref"):
        options["project_ref"] = extra["project_ref"]
    addressing = ((extra.get("config_kwargs") or {}).get("s3") or {}).get("addressing_style")
    if addressing == "path":
        options["force_path_style"] = True
    return options


def gcs_storage_options(conn: EnvConnection) -> dict[str, Any]:
    """GcsStorage options from an Airflow Google Cloud connection (keyfile_dict, key_path, project)."""
    _check_type(conn, GCP_TYPES)
    extra = {key.removeprefix(_GCP_EXTRA_PREFIX): value for key, value in conn.extra.items()}
    project = extra.get("project")
    keyfile: Any = extra.get("keyfile_dict")
    key_path = extra.get("key_path")
    if not keyfile and not key_path:
        return {"project": project} if project else {}  # application default credentials
    from google.cloud import storage as gcs
    from google.oauth2 import service_account

    try:
        if keyfile:
            info = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
            credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
        else:
            credentials = service_account.Credentials.from_service_account_file(key_path)  # type: ignore[no-untyped-call]
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{env_var_name(conn.conn_id)}: unusable service account key: {exc}") from None
    return {"client": gcs.Client(project=project or credentials.project_id, credentials=credentials)}


def decryption_key(conn_id: str, environ: Mapping[str, str] | None = None) -> DecryptionKey:
    """The gpg private key from a generic connection: extra ``private_key``, password = passphrase."""
    from pgbackup.restore import DecryptionKey

    conn = lookup(conn_id, environ)
    if conn is None:
        raise ConfigError(
            f"no decryption key: {env_var_name(conn_id)} is not set. Set it to the connection "
            f'{conn_id!r} as JSON: {{"conn_type": "generic", "password": "<passphrase>", '
            '"extra": {"private_key": "<armored gpg private key>"}}'
        )
    armored = conn.extra.get("private_key")
    if not armored or not isinstance(armored, str):
        raise ConfigError(
            f"{env_var_name(conn_id)}: connection {conn_id!r} needs an extra field private_key holding the "
            "armored gpg private key (and the passphrase, if any, as the connection password)"
        )
    return DecryptionKey(armored, conn.password or None)


def _check_type(conn: EnvConnection, allowed: tuple[str, ...]) -> None:
    if conn.conn_type not in allowed:
        raise ConfigError(
            f"{env_var_name(conn.conn_id)}: connection {conn.conn_id!r} has type {conn.conn_type!r}; "
            f"expected {' or '.join(allowed)}"
        )
