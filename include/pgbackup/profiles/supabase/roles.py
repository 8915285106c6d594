"""The project's own roles: captured at dump time from pg_roles, recreated before a restore.

Platform and API roles are reserved (a new project has them), superusers cannot be
created without a superuser, and passwords are never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgbackup.pgconn import PgConnInfo, connect
from pgbackup.profiles.supabase.platform import API_ROLES, RESERVED_ROLES

_ROLES_SQL = """
SELECT rolname, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit,
       rolvaliduntil::text, rolsuper, rolreplication, rolbypassrls
FROM pg_roles
WHERE rolname !~ '^pg_' AND rolname <> ALL(%s)
ORDER BY rolname
"""
_MEMBERSHIP_SQL = """
SELECT r.rolname, m.rolname, a.admin_option
FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
WHERE (r.rolname <> ALL(%s) OR m.rolname <> ALL(%s)) AND r.rolname !~ '^pg_' AND m.rolname !~ '^pg_'
  AND NOT m.rolsuper
ORDER BY 1, 2
"""


def capture_custom_roles(conn: PgConnInfo) -> dict[str, Any]:
    """The project's own roles and memberships, from pg_roles (readable without superuser).

    ``pg_dumpall --roles-only`` reads pg_authid, which only a superuser may; passwords live
    there too, and a backup must not carry them, so a query is both possible and right.
    """
    reserved = sorted(RESERVED_ROLES)
    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            cur.execute(_ROLES_SQL, (reserved,))
            columns = [d[0] for d in cur.description]
            roles = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
            cur.execute(_MEMBERSHIP_SQL, (reserved, reserved))
            members = [{"role": r, "member": m, "admin_option": a} for r, m, a in cur.fetchall()]
    finally:
        connection.close()
    skipped = [{"role": r["rolname"], "reason": "superuser roles cannot be created without a superuser"}
               for r in roles if r["rolsuper"]]
    roles = [r for r in roles if not r["rolsuper"]]
    custom = {r["rolname"] for r in roles}
    members = [m for m in members if m["role"] in custom | API_ROLES and m["member"] in custom | API_ROLES
               and (m["role"] in custom or m["member"] in custom)]
    return {"roles": roles, "memberships": members, "skipped": skipped,
            "note": "no passwords are captured; set them after a restore"}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def roles_sql(captured: Mapping[str, Any]) -> str:
    """Idempotent SQL creating the captured roles (without passwords) and memberships.

    REPLICATION and BYPASSRLS need a superuser to grant, so they are left out (and named
    in a comment); everything else is what ``postgres`` with CREATEROLE may do.
    """
    lines = ["-- custom roles captured by pgbackup; no passwords"]
    for role in captured.get("roles", []):
        name = role["rolname"]
        attrs = [
            "INHERIT" if role["rolinherit"] else "NOINHERIT",
            "CREATEROLE" if role["rolcreaterole"] else "NOCREATEROLE",
            "CREATEDB" if role["rolcreatedb"] else "NOCREATEDB",
            "LOGIN" if role["rolcanlogin"] else "NOLOGIN",
            f"CONNECTION LIMIT {int(role['rolconnlimit'])}",
        ]
        if role.get("rolvaliduntil"):
            attrs.append(f"VALID UNTIL {_literal(str(role['rolvaliduntil']))}")
        if role.get("rolreplication") or role.get("rolbypassrls"):
            lines.append(f"-- {name}: REPLICATION/BYPASSRLS not restored (superuser only)")
        lines.append(
            f"DO $pgbackup$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_literal(name)}) THEN "
            f"CREATE ROLE {_ident(name)}; END IF; END $pgbackup$;"
        )
        lines.append(f"ALTER ROLE {_ident(name)} WITH {' '.join(attrs)};")
    for grant in captured.get("memberships", []):
        option = " WITH ADMIN OPTION" if grant["admin_option"] else ""
        lines.append(f"GRANT {_ident(grant['role'])} TO {_ident(grant['member'])}{option};")
    return "\n".join(lines) + "\n"


