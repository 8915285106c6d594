"""The archive's table of contents: which ``pg_restore -l`` entries a Supabase restore runs.

The owner column decides: entries owned by a platform role are the platform's and are
left out (a new project already has them), EXCEPT
  - platform tables' rows (auth users and identities, storage buckets and objects, ...)
    and their sequence values, minus the platform's migration-history tables;
  - user objects attached to platform objects: triggers calling user functions (the
    documented "profile on signup" trigger on auth.users), policies on platform tables,
    user tables added to the ``supabase_realtime`` publication.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup.errors import RestoreError
from pgbackup.pgconn import PgConnInfo, connect
from pgbackup.pgtools import find_program
from pgbackup.pipeline import die_with_us_prefix, minimal_environment
from pgbackup.profiles.supabase.platform import (
    MIGRATION_REASON,
    MIGRATION_TABLES,
    NO_DATA_REASON,
    NO_DATA_SCHEMAS,
    PLATFORM_PUBLICATIONS,
    PLATFORM_ROLES,
    PLATFORM_SCHEMAS,
    PREINSTALLED_EXTENSIONS,
    is_platform_schema,
)

log = logging.getLogger(__name__)

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
_ADD_TO_PUBLICATION = re.compile(r'^ALTER PUBLICATION ("(?:[^"]|"")+"|[^ ]+) ADD ')
MEMBERSHIP_DESCS = ("PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA")


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
    # Publications in the target (name -> owner) and those the restoring role may add tables
    # to (it has its owner's privileges). None: no target to ask (a plain file rendered at
    # backup time), so each membership is written to check that itself when it runs.
    publication_owners: Mapping[str, str] = field(default_factory=dict)
    alterable_publications: frozenset[str] | None = None
    restoring_role: str = ""


@dataclass
class RestorePlan:
    kept: list[str] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    def exclude(self, entry: TocEntry, reason: str) -> None:
        self.excluded.append({"entry": entry.label, "reason": reason})


def _platform_owned(entry: TocEntry) -> bool:
    if entry.owner:
        return entry.owner in PLATFORM_ROLES
    return is_platform_schema(entry.schema)


def filter_toc(
    toc_lines: Iterable[str],
    kind: str = "full",
    facts: TargetFacts | None = None,
    trigger_functions: Mapping[int, str] | None = None,
    membership_statements: Mapping[int, str] | None = None,
) -> tuple[list[str], list[dict[str, str]]]:
    """Split ``pg_restore -l`` lines into the ones to restore and the left-out ones (with why).

    ``trigger_functions`` maps a TRIGGER entry's dump id to the function it executes
    (see :func:`trigger_functions`); a trigger on a platform table is the user's when that
    function is outside the platform schemas. ``membership_statements`` maps a publication
    membership entry to its ``ALTER PUBLICATION ... ADD`` statement (see
    :func:`membership_statements`), named in what a left-out membership records. ``kind``
    only labels the reasons: the rules are per entry, so schema, data and full archives filter alike.
    """
    facts = facts or TargetFacts()
    trigger_functions = trigger_functions or {}
    plan = RestorePlan()
    entries = [e for e in (parse_toc_line(line) for line in toc_lines) if e is not None]
    platform_schema_names = {e.name for e in entries if e.desc == "SCHEMA" and _platform_owned(e)}
    platform_schema_names |= set(PLATFORM_SCHEMAS)
    for entry in entries:
        if entry.desc in MEMBERSHIP_DESCS:
            left_out = _membership_left_out(entry, facts, (membership_statements or {}).get(entry.dump_id, ""))
            if left_out is None:
                plan.kept.append(entry.line)
            else:
                plan.excluded.append(left_out)
            continue
        reason = _exclusion_reason(entry, facts, trigger_functions, platform_schema_names)
        if reason is None:
            plan.kept.append(entry.line)
        else:
            plan.exclude(entry, reason)
    return plan.kept, plan.excluded


def _membership_left_out(entry: TocEntry, facts: TargetFacts, statement: str) -> dict[str, str] | None:
    """A user table's membership in a publication: kept unless the restoring role cannot add it.

    Only a publication's owner may add tables to it (``must be owner of publication
    supabase_realtime``), and Supabase's initial schema creates ``supabase_realtime`` as
    ``supabase_admin``. Restoring as ``postgres`` must not depend on owning platform
    objects, so such a membership is left out with the statement its owner can run.
    """
    publication = publication_of(statement) if statement else entry.name.split(" ", 1)[0]
    member = entry.name[len(publication) + 1:] if entry.name.startswith(publication + " ") else entry.name
    schema = f"{entry.schema}." if entry.schema and entry.desc == "PUBLICATION TABLE" else ""
    label = f"{entry.desc} {publication}: {schema}{member}"
    record = {"entry": label, "publication": publication, "statement": statement}
    if facts.alterable_publications is None:
        # Rendered without a target: the SQL checks ownership itself (render_sql, guarded_membership).
        record["reason"] = (
            f"left out only when the restoring role cannot add tables to publication {publication} (not its owner); "
            "the restore then prints a WARNING with the statement for the owner to run"
        )
        record["conditional"] = "true"
        return record
    reason = _membership_reason(publication, facts)
    if reason is None:
        return None
    record["reason"] = reason
    return record


def _membership_reason(publication: str, facts: TargetFacts) -> str | None:
    """Why the restoring role cannot add tables to ``publication`` in the target; None if it can."""
    assert facts.alterable_publications is not None
    if publication in facts.alterable_publications:
        return None
    owner = facts.publication_owners.get(publication)
    if owner is None:
        if publication not in PLATFORM_PUBLICATIONS:
            return None  # a user publication the restore itself creates, owned by the restoring role
        return f"the target has no publication {publication}; create it, then run the statement"
    return (
        f"only the owner of publication {publication} ({owner}) may add tables to it, and the restoring role "
        f"{facts.restoring_role or '(unknown)'} is not; run the statement as {owner}"
    )


def publication_of(statement: str) -> str:
    """The publication an ``ALTER PUBLICATION <name> ADD ...`` statement alters (unquoted)."""
    match = _ADD_TO_PUBLICATION.match(statement)
    if not match:
        raise RestoreError(f"unexpected publication statement in the archive: {statement!r}")
    return _unquote(match.group(1))


def guarded_membership(statement: str) -> str:
    """SQL that adds the membership when the restoring role may, and otherwise warns with the
    exact statement to run, so a plain file restores strictly into either ownership."""
    publication = publication_of(statement)
    warning = (
        f"pgbackup: left out a membership of publication {publication}: only its owner may add tables to it; "
        f"run as the owner: {statement}"
    )
    return (
        "DO $pgbackup$\nBEGIN\n"
        f"  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {_literal(publication)}\n"
        "             AND pg_has_role(current_user, pubowner, 'USAGE')) THEN\n"
        f"    {statement}\n"
        "  ELSE\n"
        f"    RAISE WARNING '%', {_literal(warning)};\n"
        "  END IF;\nEND $pgbackup$;\n"
    )


def resolve_memberships(excluded: Iterable[dict[str, str]], facts: TargetFacts) -> list[dict[str, str]]:
    """What a plain file's conditional memberships come to in ``facts``' target (asked before
    the file runs): restored ones drop out of the list, the others are definite exclusions."""
    resolved: list[dict[str, str]] = []
    for item in excluded:
        if item.get("conditional") != "true":
            resolved.append(item)
            continue
        reason = _membership_reason(item["publication"], facts)
        if reason is not None:
            resolved.append({**{k: v for k, v in item.items() if k != "conditional"}, "reason": reason})
    return resolved


def warn_left_out_memberships(excluded: Iterable[Mapping[str, str]], target: str) -> None:
    """Say, for each membership a restore left out, exactly what the publication's owner must run."""
    for item in excluded:
        if item.get("statement") and item.get("conditional") != "true":
            log.warning("restore into %s left out %s (%s); to restore it run: %s",
                        target, item["entry"], item["reason"], item["statement"])


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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
    if desc in ("TABLE DATA", "SEQUENCE SET") and not _platform_owned(entry):
        # pg_restore -l prints names unquoted: a user schema "net stuff" reads as schema net.
        # The owner is unambiguous (last word), and the platform's own state is the platform's.
        return None
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
        if function and not is_platform_schema(function.split(".", 1)[0].strip('"')):
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


def run_tool(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program on a file: a minimal environment (never the task's AIRFLOW_CONN_*)
    unless ``env`` is given, and it dies with the task."""
    done = subprocess.run([*die_with_us_prefix(), *argv], env=dict(env) if env is not None else minimal_environment(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RestoreError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {done.stderr.strip()[-4000:]}")
    return done


def list_toc(archive: Path) -> list[str]:
    """``pg_restore -l`` of a custom-format archive, entry lines only."""
    out = run_tool([find_program("pg_restore"), "-l", str(archive)]).stdout
    return [line for line in out.splitlines() if line and not line.startswith(";")]


def _rendered_entries(archive: Path, entries: Sequence[TocEntry]) -> dict[int, list[str]]:
    """The SQL lines ``pg_restore`` writes for each of these entries (verbose, to get their
    ``TOC entry`` headers), comments and psql meta-commands left out."""
    if not entries:
        return {}
    with tempfile.TemporaryDirectory(prefix="pgbackup-toc-") as tmp:
        listing = Path(tmp) / "entries.list"
        listing.write_text("".join(e.line + "\n" for e in entries))
        sql = run_tool([find_program("pg_restore"), "--verbose", "-L", str(listing), "-f", "-", str(archive)]).stdout
    found: dict[int, list[str]] = {}
    current: int | None = None
    for line in sql.splitlines():
        header = _ENTRY_HEADER.match(line)
        if header:
            current = int(header.group(1))
            found[current] = []
        elif current is not None and line.strip() and not line.startswith(("--", "\\")):
            found[current].append(line)  # psql meta-commands (pg_dump's \\unrestrict) are not the entry's
    return found


def trigger_functions(archive: Path, toc_lines: Iterable[str]) -> dict[int, str]:
    """For each TRIGGER entry on a platform-owned table: the function it executes.

    ``pg_restore -l`` does not show it, so those entries alone are rendered and each
    CREATE TRIGGER is read.
    """
    wanted = [e for e in map(parse_toc_line, toc_lines) if e is not None and e.desc == "TRIGGER"
              and _platform_owned(e)]
    found: dict[int, str] = {}
    for dump_id, lines in _rendered_entries(archive, wanted).items():
        match = _EXECUTE_FUNCTION.search(" ".join(lines))
        if match:
            found[dump_id] = match.group(1).strip()
    return found


def membership_statements(archive: Path, toc_lines: Iterable[str]) -> dict[int, str]:
    """For each publication membership entry: its exact ``ALTER PUBLICATION ... ADD`` statement
    (identifiers quoted by pg_dump, row filters and column lists included)."""
    wanted = [e for e in map(parse_toc_line, toc_lines) if e is not None and e.desc in MEMBERSHIP_DESCS]
    return {dump_id: " ".join(lines) for dump_id, lines in _rendered_entries(archive, wanted).items() if lines}


def target_facts(conn: PgConnInfo) -> TargetFacts:
    """Ask the target project what it already has (extensions, platform triggers/policies)."""
    schemas = list(PLATFORM_SCHEMAS)
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
            cur.execute("SELECT pubname, pg_get_userbyid(pubowner), pg_has_role(current_user, pubowner, 'USAGE')"
                        " FROM pg_publication")
            publications = cur.fetchall()
            cur.execute("SELECT current_user")
            role = cur.fetchone()[0]
    finally:
        connection.close()
    return TargetFacts(
        extensions, triggers, policies,
        publication_owners={name: owner for name, owner, _ in publications},
        alterable_publications=frozenset(name for name, _, alterable in publications if alterable),
        restoring_role=role,
    )




def archive_has_acls(archive: Path) -> bool:
    """Whether the archive carries grants (not dumped with --no-privileges)."""
    return any(e is not None and e.desc in ("ACL", "DEFAULT ACL") for e in map(parse_toc_line, list_toc(archive)))


