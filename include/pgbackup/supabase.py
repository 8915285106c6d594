"""Restoring backups of Supabase projects into Supabase projects, with zero errors.

On Supabase ``postgres`` is not a superuser, and a new project already holds the
platform: schemas owned by ``supabase_admin`` & co (auth, storage, extensions, ...),
their tables, functions and triggers, preinstalled extensions, the ``supabase_realtime``
publication, event triggers and the API roles. A plain dump replays all of that and
fails ("must be owner of table users", "... event trigger").

So the archive's TOC (``pg_restore -l``) decides, entry by entry, what a restore runs:

* user objects (owned by a non-platform role) are kept, wherever they live;
* platform objects are left out (the target has them), EXCEPT
  - platform tables' rows (auth users and identities, storage buckets and objects, ...)
    and their sequence values, minus the platform's migration-history tables;
  - user objects attached to platform objects: triggers calling user functions (the
    documented "profile on signup" trigger on auth.users), policies on platform tables,
    user tables added to the ``supabase_realtime`` publication.

The kept entries are rendered to SQL by ``pg_restore -L`` and run by ``psql
--single-transaction -v ON_ERROR_STOP=1`` with ``session_replication_role = replica``
(what the Supabase CLI's documented restore does): platform FKs and triggers already
exist in the target, and replica mode keeps them from firing on rows being loaded.
No Airflow imports: this is the engine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgbackup.dump import server_major_version
from pgbackup.errors import RestoreError
from pgbackup.pgconn import PgConnInfo, connect, libpq_environment
from pgbackup.pgtools import find_program
from pgbackup.profiles import SUPABASE_NO_DATA_SCHEMAS, SUPABASE_PLATFORM_SCHEMAS

# Roles the platform creates and runs as; objects they own are the platform's.
PLATFORM_ROLES = frozenset({
    "supabase_admin", "supabase_auth_admin", "supabase_storage_admin", "supabase_realtime_admin",
    "supabase_functions_admin", "supabase_replication_admin", "supabase_read_only_user",
    "supabase_etl_admin", "supabase_privileged_role", "dashboard_user", "authenticator", "pgbouncer",
    "pgsodium_keyholder", "pgsodium_keyiduser", "pgsodium_keymaker",
})
API_ROLES = frozenset({"anon", "authenticated", "service_role"})
# Never created or altered by a restore: the platform's, the API's, and the user's login.
RESERVED_ROLES = PLATFORM_ROLES | API_ROLES | {"postgres"}

# Migration history belongs to the target's own platform version, never to the backup.
MIGRATION_TABLES = frozenset({
    ("auth", "schema_migrations"), ("storage", "migrations"), ("realtime", "schema_migrations"),
    ("supabase_functions", "migrations"), ("supabase_migrations", "schema_migrations"),
    ("supabase_migrations", "seed_files"),
})
# Schemas whose rows are platform state, not user data, or cannot move between projects
# (vault and pgsodium rows are encrypted with the source project's root key). The supabase
# profile leaves them out of dumps too; the TOC filter also skips them in other archives.
NO_DATA_SCHEMAS = frozenset(SUPABASE_NO_DATA_SCHEMAS)
MIGRATION_REASON = "platform migration history; the target keeps its own"
NO_DATA_REASON = "platform state, or secrets encrypted with the source project's key"
PLATFORM_PUBLICATIONS = frozenset({"supabase_realtime", "supabase_realtime_messages_publication"})
# What a new project has installed; used when the target cannot be asked (plain rendering).
PREINSTALLED_EXTENSIONS = frozenset({
    "plpgsql", "pgcrypto", "uuid-ossp", "pg_stat_statements", "pg_graphql", "supabase_vault", "pgsodium",
})

# pg_restore -l descriptors, longest first so "TABLE DATA" wins over "TABLE".
_DESCS = sorted(
    [
        "TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL", "ROW SECURITY",
        "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "EVENT TRIGGER", "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW", "LARGE OBJECT", "BLOB", "BLOBS", "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "FOREIGN TABLE",
        "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "USER MAPPING", "SHELL TYPE", "CHECK CONSTRAINT",
        "TABLE ATTACH", "INDEX ATTACH", "STATISTICS", "SUBSCRIPTION", "PUBLICATION", "EXTENSION",
        "SCHEMA", "TABLE", "SEQUENCE", "VIEW", "FUNCTION", "PROCEDURE", "AGGREGATE", "TYPE", "DOMAIN",
        "DEFAULT", "CONSTRAINT", "INDEX", "TRIGGER", "RULE", "POLICY", "COMMENT", "ACL", "COLLATION",
        "CONVERSION", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "CAST", "TRANSFORM",
        "PROCEDURAL LANGUAGE", "ACCESS METHOD", "SECURITY LABEL", "DATABASE", "ENCODING",
        "STDSTRINGS", "SEARCHPATH",
    ],
    key=len,
    reverse=True,
)
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_EXECUTE_FUNCTION = re.compile(r"EXECUTE (?:FUNCTION|PROCEDURE) ([^(]+)\(", re.IGNORECASE)
_ENTRY_HEADER = re.compile(r"^-- TOC entry (\d+) ")


@dataclass(frozen=True)
class TocEntry:
    """One ``pg_restore -l`` line: ``id; classoid oid DESC schema name owner``."""

    dump_id: int
    desc: str
    schema: str | None  # None for "-" (objects outside any schema)
    name: str  # for TRIGGER/POLICY "table object", for COMMENT/ACL "KIND object"
    owner: str  # empty for extensions and some comments
    line: str

    @property
    def table(self) -> str:
        """The table a TRIGGER, POLICY, RULE or constraint hangs on (first word of the tag)."""
        return self.name.split(" ", 1)[0]

    @property
    def label(self) -> str:
        return f"{self.desc} {self.schema + '.' if self.schema else ''}{self.name}".strip()


def parse_toc_line(line: str) -> TocEntry | None:
    """A TocEntry, or None for comment and blank lines."""
    match = _TOC_LINE.match(line.rstrip("\n"))
    if not match:
        return None
    rest = match.group(4)
    desc = next((d for d in _DESCS if rest.startswith(d + " ")), None)
    if desc is None:
        raise RestoreError(f"unrecognised pg_restore -l line: {line!r}")
    words = rest[len(desc) + 1:]
    schema, _, tail = words.partition(" ")
    # The owner is the last word; pg_restore prints an empty owner as a trailing space.
    name, _, owner = tail.rpartition(" ")
    return TocEntry(int(match.group(1)), desc, None if schema == "-" else schema, name, owner, line.rstrip("\n"))


@dataclass(frozen=True)
class TargetFacts:
    """What the target project already has, so the restore neither repeats nor collides."""

    installed_extensions: frozenset[str] = PREINSTALLED_EXTENSIONS
    # (schema, table, name) of triggers and policies on platform tables in the target.
    platform_triggers: frozenset[tuple[str, str, str]] = frozenset()
    platform_policies: frozenset[tuple[str, str, str]] = frozenset()


@dataclass
class RestorePlan:
    kept: list[str] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    def exclude(self, entry: TocEntry, reason: str) -> None:
        self.excluded.append({"entry": entry.label, "reason": reason})


def _is_platform_schema(schema: str | None) -> bool:
    return schema is not None and schema in SUPABASE_PLATFORM_SCHEMAS


def _platform_owned(entry: TocEntry) -> bool:
    if entry.owner:
        return entry.owner in PLATFORM_ROLES
    return _is_platform_schema(entry.schema)


def filter_toc(
    toc_lines: Iterable[str],
    kind: str = "full",
    facts: TargetFacts | None = None,
    trigger_functions: Mapping[int, str] | None = None,
) -> tuple[list[str], list[dict[str, str]]]:
    """Split ``pg_restore -l`` lines into the ones to restore and the left-out ones (with why).

    ``trigger_functions`` maps a TRIGGER entry's dump id to the function it executes
    (see :func:`trigger_functions`); a trigger on a platform table is the user's when that
    function is outside the platform schemas. ``kind`` only labels the reasons: the rules
    are per entry, so schema, data and full archives filter alike.
    """
    facts = facts or TargetFacts()
    trigger_functions = trigger_functions or {}
    plan = RestorePlan()
    entries = [e for e in (parse_toc_line(line) for line in toc_lines) if e is not None]
    platform_schema_names = {e.name for e in entries if e.desc == "SCHEMA" and _platform_owned(e)}
    platform_schema_names |= set(SUPABASE_PLATFORM_SCHEMAS)
    for entry in entries:
        reason = _exclusion_reason(entry, facts, trigger_functions, platform_schema_names)
        if reason is None:
            plan.kept.append(entry.line)
        else:
            plan.exclude(entry, reason)
    return plan.kept, plan.excluded


def _exclusion_reason(
    entry: TocEntry, facts: TargetFacts, trigger_functions: Mapping[int, str], platform_schemas: set[str]
) -> str | None:
    desc = entry.desc
    if desc == "EVENT TRIGGER":
        return "event triggers need a superuser; the platform's already exist in a new project"
    if desc == "EXTENSION":
        if entry.name in facts.installed_extensions:
            return "extension already installed in the target project"
        return None
    if desc == "COMMENT" and entry.name.startswith("EXTENSION "):
        if _unquote(entry.name.split(" ", 1)[1]) in facts.installed_extensions:
            return "comment on an extension the target project already has (only its owner may change it)"
        return None
    if desc in ("COMMENT", "ACL", "SECURITY LABEL") and entry.name.startswith("SCHEMA "):
        if _unquote(entry.name.split(" ", 1)[1]) in platform_schemas:
            return "comment/grant on a platform schema; the target project has its own"
        return None
    if desc == "PUBLICATION":
        if entry.name in PLATFORM_PUBLICATIONS:
            return "platform publication; a new project already has it (its user tables are restored)"
        return None
    if desc == "PUBLICATION TABLE":
        return None  # a user table in a publication: "enable realtime" survives
    if desc == "TABLE DATA":
        if (entry.schema, entry.name) in MIGRATION_TABLES:
            return MIGRATION_REASON
        if entry.schema in NO_DATA_SCHEMAS:
            return NO_DATA_REASON
        return None  # platform tables' rows are user data (auth users, storage objects, ...)
    if desc == "SEQUENCE SET":
        if entry.schema in NO_DATA_SCHEMAS:
            return "sequence of a platform-state schema"
        return None
    if desc == "TRIGGER" and _platform_owned(entry):
        key = (entry.schema or "", entry.table, entry.name.split(" ", 1)[-1])
        if key in facts.platform_triggers:
            return "platform trigger; the target project already has it"
        function = trigger_functions.get(entry.dump_id, "")
        if function and not _is_platform_schema(function.split(".", 1)[0].strip('"')):
            return None  # user trigger on a platform table (e.g. profile on signup)
        return "platform trigger (executes a platform function); the target project already has it"
    if desc == "POLICY" and _platform_owned(entry):
        key = (entry.schema or "", entry.table, entry.name.split(" ", 1)[-1])
        if key in facts.platform_policies:
            return "platform policy; the target project already has it"
        return None  # user policy on a platform table (e.g. storage.objects)
    if desc == "DEFAULT ACL" and entry.owner in PLATFORM_ROLES:
        return "default privileges of a platform role; the target project has its own"
    if _platform_owned(entry):
        return f"owned by the platform ({entry.owner or entry.schema}); a new project already has it"
    return None


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name


# -- reading the archive ------------------------------------------------------------------


def _run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), env=dict(env) if env is not None else None, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RestoreError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {done.stderr.strip()[-4000:]}")
    return done


def list_toc(archive: Path) -> list[str]:
    """``pg_restore -l`` of a custom-format archive, entry lines only."""
    out = _run([find_program("pg_restore"), "-l", str(archive)]).stdout
    return [line for line in out.splitlines() if line and not line.startswith(";")]


def trigger_functions(archive: Path, toc_lines: Iterable[str]) -> dict[int, str]:
    """For each TRIGGER entry on a platform-owned table: the function it executes.

    ``pg_restore -l`` does not show it, so those entries alone are rendered (verbose, to get
    their ``TOC entry`` headers) and each CREATE TRIGGER is read.
    """
    wanted = [e for e in map(parse_toc_line, toc_lines) if e is not None and e.desc == "TRIGGER"
              and _platform_owned(e)]
    if not wanted:
        return {}
    with tempfile.TemporaryDirectory(prefix="pgbackup-toc-") as tmp:
        listing = Path(tmp) / "triggers.list"
        listing.write_text("".join(e.line + "\n" for e in wanted))
        sql = _run([find_program("pg_restore"), "--verbose", "-L", str(listing), "-f", "-", str(archive)]).stdout
    found: dict[int, str] = {}
    current: int | None = None
    for line in sql.splitlines():
        header = _ENTRY_HEADER.match(line)
        if header:
            current = int(header.group(1))
            continue
        match = _EXECUTE_FUNCTION.search(line)
        if match and current is not None:
            found[current] = match.group(1).strip()
    return found


def target_facts(conn: PgConnInfo) -> TargetFacts:
    """Ask the target project what it already has (extensions, platform triggers/policies)."""
    schemas = list(SUPABASE_PLATFORM_SCHEMAS)
    connection = connect(conn)
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT extname FROM pg_extension")
            extensions = frozenset(r[0] for r in cur.fetchall())
            cur.execute(
                "SELECT n.nspname, c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND n.nspname = ANY(%s)",
                (schemas,),
            )
            triggers = frozenset((s, t, n) for s, t, n in cur.fetchall())
            cur.execute("SELECT schemaname, tablename, policyname FROM pg_policies WHERE schemaname = ANY(%s)",
                        (schemas,))
            policies = frozenset((s, t, n) for s, t, n in cur.fetchall())
    finally:
        connection.close()
    return TargetFacts(extensions, triggers, policies)


# -- roles ------------------------------------------------------------------------------

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


# -- restoring ----------------------------------------------------------------------------


@dataclass
class SupabaseRestoreReport:
    seconds: float
    kept_entries: int
    excluded: list[dict[str, str]]
    errors: int
    script: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "kept_entries": self.kept_entries,
                "excluded": self.excluded, "errors": self.errors}


def render_sql(
    archive: Path,
    kind: str,
    out: Path,
    facts: TargetFacts | None = None,
    sections: Sequence[str] = (),
    preamble: str = "",
) -> tuple[int, list[dict[str, str]]]:
    """Write the filtered archive as plain SQL (what a plain Supabase backup should contain).

    Without ``facts`` (no target to ask) a new project's shape is assumed. ``preamble`` (see
    :func:`plain_preamble`) goes first. Returns the number of kept entries and the left-out ones.
    """
    toc = list_toc(archive)
    kept, excluded = filter_toc(toc, kind, facts, trigger_functions(archive, toc))
    listing = out.with_name(out.name + ".list")
    listing.write_text("".join(line + "\n" for line in kept))
    # --no-owner: objects belong to whoever restores (postgres), as in the seed's restores.
    body = out.with_name(out.name + ".body") if preamble else out
    argv = [find_program("pg_restore"), "--no-owner", "-L", str(listing), "-f", str(body)]
    argv += [f"--section={s}" for s in sections]
    _run([*argv, str(archive)])
    listing.unlink()
    if preamble:
        # Streamed, not read: a rendered dump can be as large as the database.
        with out.open("wb") as sink, body.open("rb") as source:
            sink.write(preamble.encode("utf-8"))
            shutil.copyfileobj(source, sink, 1 << 20)
        body.unlink()
    return len(kept), excluded


def plain_preamble(roles: Mapping[str, Any] | None, clear_default_privileges: bool) -> str:
    """What a plain Supabase backup runs before its objects, so that the documented
    ``psql --single-transaction -v ON_ERROR_STOP=1 -f backup.sql`` alone restores it:
    replica mode (platform FKs/triggers already exist), the custom roles, and postgres's
    default privileges cleared (the file's DEFAULT ACL entries put the source's back)."""
    parts = [
        "-- pgbackup supabase preamble\n",
        "SET session_replication_role = replica;\n",
        roles_sql(roles) if roles else "",
        CLEAR_OWN_DEFAULT_PRIVILEGES if clear_default_privileges else "",
    ]
    return "".join(parts)


def run_sql_strict(target: PgConnInfo, scripts: Sequence[Path], *, replica: bool = True) -> float:
    """The documented strict restore: one transaction, stop at the first error.

    ``psql --single-transaction -v ON_ERROR_STOP=1 -c 'SET session_replication_role =
    replica' -f ...``: platform FKs and triggers are already in the target, and replica mode
    keeps them from firing on the rows being loaded (postgres has SET on that parameter).
    """
    argv = [find_program("psql", server_major_version(target)), "--no-password", "-X", "-q",
            "--single-transaction", "-v", "ON_ERROR_STOP=1", f"--dbname={target.dbname}"]
    if replica:
        argv += ["-c", "SET session_replication_role = replica"]
    for script in scripts:
        argv += ["-f", str(script)]
    started = time.monotonic()
    with libpq_environment(target) as env:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    errors = [line for line in done.stderr.splitlines() if "ERROR:" in line]
    if done.returncode != 0 or errors:
        raise RestoreError(f"restore into {target.describe()} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-4000:]}")
    return time.monotonic() - started


# A new project grants anon/authenticated/service_role everything on postgres's new objects
# (ALTER DEFAULT PRIVILEGES). pg_dump writes grants relative to the built-in defaults, so
# with those in force a restored table would gain grants the source had revoked. Clear
# postgres's own default privileges first; the archive's DEFAULT ACL entries (restored
# last) then put back exactly the source's.
CLEAR_OWN_DEFAULT_PRIVILEGES = """
DO $pgbackup$
DECLARE
  d record;
BEGIN
  FOR d IN
    SELECT n.nspname, CASE a.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES'
             WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' WHEN 'n' THEN 'SCHEMAS' END AS kind,
           CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END AS grantee
    FROM pg_default_acl a
    LEFT JOIN pg_namespace n ON n.oid = a.defaclnamespace
    CROSS JOIN LATERAL aclexplode(a.defaclacl) x
    WHERE a.defaclrole = current_user::regrole AND x.grantee <> a.defaclrole
  LOOP
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I %s REVOKE ALL ON %s FROM %s', current_user,
                   CASE WHEN d.nspname IS NULL THEN '' ELSE format('IN SCHEMA %I', d.nspname) END,
                   d.kind, d.grantee);
  END LOOP;
END $pgbackup$;
"""


def archive_has_acls(archive: Path) -> bool:
    """Whether the archive carries grants (not dumped with --no-privileges)."""
    return any(e is not None and e.desc in ("ACL", "DEFAULT ACL") for e in map(parse_toc_line, list_toc(archive)))


def restore_supabase(
    archive: Path,
    target: PgConnInfo,
    *,
    kind: str = "full",
    roles: Mapping[str, Any] | None = None,
    workdir: Path | None = None,
) -> SupabaseRestoreReport:
    """Restore a custom-format archive into a Supabase project: filtered TOC, one transaction."""
    return restore_supabase_parts([(archive, ())], target, kind=kind, roles=roles, workdir=workdir)


def restore_supabase_pair(
    schema_archive: Path,
    data_archive: Path,
    target: PgConnInfo,
    *,
    roles: Mapping[str, Any] | None = None,
    populated_matviews: Sequence[str] = (),
    workdir: Path | None = None,
) -> SupabaseRestoreReport:
    """Schema pre-data, data, schema post-data, in ONE transaction (like the CLI's schema.sql + data.sql)."""
    return restore_supabase_parts(
        [(schema_archive, ("pre-data",)), (data_archive, ()), (schema_archive, ("post-data",))],
        target, kind="schema+data", roles=roles, populated_matviews=populated_matviews, workdir=workdir,
    )


def restore_supabase_parts(
    parts: Sequence[tuple[Path, tuple[str, ...]]],
    target: PgConnInfo,
    *,
    kind: str,
    roles: Mapping[str, Any] | None = None,
    populated_matviews: Sequence[str] = (),
    workdir: Path | None = None,
) -> SupabaseRestoreReport:
    started = time.monotonic()
    facts = target_facts(target)
    with tempfile.TemporaryDirectory(prefix="pgbackup-sb-", dir=workdir) as tmp:
        scripts: list[Path] = []
        if roles:
            scripts.append(Path(tmp) / "roles.sql")
            scripts[-1].write_text(roles_sql(roles))
        kept_total = 0
        excluded: list[dict[str, str]] = []
        rendered: list[Path] = []
        for index, (archive, sections) in enumerate(parts):
            script = Path(tmp) / f"part{index}.sql"
            kept, left_out = render_sql(archive, kind, script, facts, sections)
            kept_total += kept
            excluded += [e for e in left_out if e not in excluded]
            rendered.append(script)
        if any(archive_has_acls(archive) for archive, _ in parts):
            scripts.append(Path(tmp) / "default_privileges.sql")
            scripts[-1].write_text(CLEAR_OWN_DEFAULT_PRIVILEGES)
        scripts += rendered
        if populated_matviews:
            # Neither a schema-only nor a data-only archive populates materialized views.
            scripts.append(Path(tmp) / "matviews.sql")
            scripts[-1].write_text("".join(f"REFRESH MATERIALIZED VIEW {name};\n" for name in populated_matviews))
        run_sql_strict(target, scripts)
    return SupabaseRestoreReport(time.monotonic() - started, kept_total, excluded, 0)


# -- what the manifest records at backup time ---------------------------------------------------


def manifest_exclusions(kind: str) -> list[dict[str, str]]:
    """Category-level notes for ``manifest.excluded``; the per-entry list comes with each restore."""
    notes = [
        {"what": "platform-owned objects (schemas, tables, functions, triggers of the platform)",
         "reason": "a new Supabase project already has them; only their owner could recreate them"},
        {"what": "event triggers, platform publications, preinstalled extensions",
         "reason": "need a superuser, or already present in every new project"},
        {"what": "roles' passwords; reserved roles " + ", ".join(sorted(RESERVED_ROLES)),
         "reason": "passwords are unreadable without a superuser; reserved roles belong to the platform"},
    ]
    if kind != "schema":
        notes.append({"what": "rows of " + ", ".join(f"{s}.{t}" for s, t in sorted(MIGRATION_TABLES)),
                      "reason": "platform migration history; the target keeps its own"})
        notes.append({"what": "rows in schemas " + ", ".join(sorted(NO_DATA_SCHEMAS)),
                      "reason": "platform state, or secrets encrypted with the source project's key"})
    return notes


def rows_left_out(tables: Iterable[str]) -> dict[str, str]:
    """Of the manifest's ``schema.table`` keys, those whose rows no supabase restore loads, and why."""
    found: dict[str, str] = {}
    for table in tables:
        schema, _, name = table.partition(".")
        if (schema, name) in MIGRATION_TABLES:
            found[table] = MIGRATION_REASON
        elif schema in NO_DATA_SCHEMAS:
            found[table] = NO_DATA_REASON
    return found


# -- the platform's shape: what a scratch database must match before a restore proves anything --

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
            cur.execute(_PLATFORM_COLUMNS_SQL, (list(SUPABASE_PLATFORM_SCHEMAS), sorted(PLATFORM_ROLES)))
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
