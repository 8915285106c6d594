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

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pgbackup.errors import ConfigError

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
