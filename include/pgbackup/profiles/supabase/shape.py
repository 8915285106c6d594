"""The platform's shape: what a scratch database must match before a restore proves anything.

A fingerprint of the platform-owned relations (columns, types, not-null) in the platform
schemas and of the platform-owned extensions, recorded at dump time and checked against
the scratch database validation restores into.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pgbackup.errors import RestoreError
from pgbackup.pgconn import PgConnInfo, connect
from pgbackup.profiles.supabase.platform import PLATFORM_ROLES, PLATFORM_SCHEMAS

# Platform-owned relations only: user tables that live in platform schemas are restored, so
# they are not part of the shape the target must already have.
_PLATFORM_COLUMNS_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND pg_get_userbyid(c.relowner) = ANY(%s)
ORDER BY n.nspname, c.relname, a.attnum
"""
# Extensions the platform installed (owned by a platform role); ones the user enabled
# (owned by postgres) are restored by the backup itself.
_PLATFORM_EXTENSIONS_SQL = """
SELECT extname, extversion FROM pg_extension WHERE pg_get_userbyid(extowner) = ANY(%s) ORDER BY 1
"""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def platform_shape(conn: PgConnInfo) -> dict[str, Any]:
    """A fingerprint of the platform: its tables' columns and types, and its extensions.

    ``sha256`` covers everything; ``relations`` (a short digest per platform table) and
    ``extensions`` let a mismatch name what differs.
    """
    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            cur.execute(_PLATFORM_COLUMNS_SQL, (list(PLATFORM_SCHEMAS), sorted(PLATFORM_ROLES)))
            columns = cur.fetchall()
            cur.execute(_PLATFORM_EXTENSIONS_SQL, (sorted(PLATFORM_ROLES),))
            extensions = [f"{name} {version}" for name, version in cur.fetchall()]
    finally:
        connection.close()
    relations: dict[str, list[list[Any]]] = {}
    for schema, table, relkind, column, type_name, not_null in columns:
        relations.setdefault(f"{schema}.{table}", []).append([relkind, column, type_name, not_null])
    return {
        "sha256": _digest({"relations": relations, "extensions": extensions}),
        "relations": {name: _digest(cols)[:16] for name, cols in relations.items()},
        "extensions": extensions,
    }


def check_platform_shape(expected: Mapping[str, Any] | None, target: PgConnInfo, where: str) -> dict[str, Any]:
    """Raise RestoreError unless ``target`` has the platform shape recorded in the backup."""
    if not expected or "sha256" not in expected:
        raise RestoreError(
            f"{where}: the backup records no platform_shape (taken before pgbackup captured it), so no "
            "scratch database can be shown to match its Supabase platform; take a new backup"
        )
    found = platform_shape(target)
    if found["sha256"] == expected["sha256"]:
        return found
    want, got = dict(expected.get("relations", {})), found["relations"]
    differing = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
    extensions = sorted(set(expected.get("extensions", [])) ^ set(found["extensions"]))
    raise RestoreError(
        f"{where}: the scratch database {target.describe()} has platform shape {found['sha256']}, but the backup "
        f"was taken from a project with platform shape {expected['sha256']} (tables differing: "
        f"{', '.join(differing[:20]) or 'none'}; extensions differing: {', '.join(extensions) or 'none'}). "
        "Rebuild the scratch template from a project on the source's platform version."
    )
