"""Strict execution: the kept entries rendered to SQL and run in one transaction.

The kept entries are rendered to SQL by ``pg_restore -L`` and run by ``psql
--single-transaction -v ON_ERROR_STOP=1`` with ``session_replication_role = replica``
(what the Supabase CLI's documented restore does): platform FKs and triggers already
exist in the target, and replica mode keeps them from firing on rows being loaded.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgbackup.dump import relation_sql, server_major_version
from pgbackup.errors import RestoreError
from pgbackup.pgconn import PgConnInfo, connect, libpq_environment
from pgbackup.pgtools import find_program, plain_dump_entries, split_plain_schema
from pgbackup.profiles.supabase.roles import roles_sql
from pgbackup.profiles.supabase.toc import (
    TargetFacts,
    archive_has_acls,
    filter_toc,
    guarded_membership,
    list_toc,
    membership_statements,
    resolve_memberships,
    run_tool,
    target_facts,
    trigger_functions,
    warn_left_out_memberships,
)

log = logging.getLogger(__name__)

# The first bytes of a pg_dump custom-format archive; anything else is a plain SQL script.
CUSTOM_ARCHIVE_MAGIC = b"PGDMP"


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

    Without ``facts`` (no target to ask) a new project's shape is assumed, and publication
    memberships are written to check, when they run, that the restoring role may add them.
    ``preamble`` (see :func:`plain_preamble`) goes first. Returns the number of kept entries
    and the left-out ones.
    """
    toc = list_toc(archive)
    kept, excluded = filter_toc(toc, kind, facts, trigger_functions(archive, toc), membership_statements(archive, toc))
    listing = out.with_name(out.name + ".list")
    listing.write_text("".join(line + "\n" for line in kept))
    # --no-owner: objects belong to whoever restores (postgres), as in the seed's restores.
    body = out.with_name(out.name + ".body") if preamble else out
    argv = [find_program("pg_restore"), "--no-owner", "-L", str(listing), "-f", str(body)]
    argv += [f"--section={s}" for s in sections]
    run_tool([*argv, str(archive)])
    listing.unlink()
    if preamble:
        # Streamed, not read: a rendered dump can be as large as the database.
        with out.open("wb") as sink, body.open("rb") as source:
            sink.write(preamble.encode("utf-8"))
            shutil.copyfileobj(source, sink, 1 << 20)
        body.unlink()
    guarded = [e["statement"] for e in excluded if e.get("conditional") == "true"]
    if guarded and (not sections or "post-data" in sections):
        with out.open("a", encoding="utf-8") as sink:
            sink.write("\n-- pgbackup: publication memberships, added where the restoring role owns the publication\n")
            sink.writelines(guarded_membership(statement) for statement in guarded)
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
            "--single-transaction", "-v", "ON_ERROR_STOP=1",
            # A bare name holding "=" would be parsed as a conninfo: pass an escaped one.
            f"--dbname={target.conninfo()}"]
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
    # A plain file's membership blocks warn with the statement the owner must run: pass them on.
    for line in done.stderr.splitlines():
        if "WARNING:" in line:
            log.warning("restore into %s: %s", target.describe(), line.split("WARNING:", 1)[1].strip())
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
    plain_excluded: Iterable[Mapping[str, str]] = (),
) -> SupabaseRestoreReport:
    """Schema pre-data, data, schema post-data, in ONE transaction (like the CLI's schema.sql + data.sql).

    Either part may be a custom archive or a plain supabase backup (the profile's rendered SQL),
    in any combination: a NOT VALID check that old rows violate, or a foreign key, must come
    after the rows whatever the formats. ``plain_excluded`` is what plain parts' manifests
    left out at backup time (their ``excluded`` entries), resolved here against the target.
    """
    return restore_supabase_parts(
        [(schema_archive, ("pre-data",)), (data_archive, ()), (schema_archive, ("post-data",))],
        target, kind="schema+data", roles=roles, populated_matviews=populated_matviews, workdir=workdir,
        plain_excluded=plain_excluded,
    )


def restore_supabase_parts(
    parts: Sequence[tuple[Path, tuple[str, ...]]],
    target: PgConnInfo,
    *,
    kind: str,
    roles: Mapping[str, Any] | None = None,
    populated_matviews: Sequence[str] = (),
    workdir: Path | None = None,
    plain_excluded: Iterable[Mapping[str, str]] = (),
) -> SupabaseRestoreReport:
    """Each (file, sections) part in order, one transaction; all sections when none are named."""
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
        custom = [archive for archive, _ in parts if is_custom_archive(archive)]
        for index, (archive, sections) in enumerate(parts):
            script = Path(tmp) / f"part{index}.sql"
            if archive not in custom:
                # Plain: already filtered at backup time, with its own preamble.
                rendered.append(plain_section(archive, sections, script))
                continue
            kept, left_out = render_sql(archive, kind, script, facts, sections)
            kept_total += kept
            excluded += [e for e in left_out if e not in excluded]
            rendered.append(script)
        excluded += [e for e in resolve_memberships(map(dict, plain_excluded), facts) if e not in excluded]
        if any(archive_has_acls(archive) for archive in dict.fromkeys(custom)):
            scripts.append(Path(tmp) / "default_privileges.sql")
            scripts[-1].write_text(CLEAR_OWN_DEFAULT_PRIVILEGES)
        scripts += rendered
        if populated_matviews:
            # Neither a schema-only nor a data-only archive populates materialized views.
            scripts.append(Path(tmp) / "matviews.sql")
            scripts[-1].write_text(refresh_matviews_sql(target, populated_matviews))
        run_sql_strict(target, scripts)
    warn_left_out_memberships(excluded, target.describe())
    return SupabaseRestoreReport(time.monotonic() - started, kept_total, excluded, 0)


def is_custom_archive(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(CUSTOM_ARCHIVE_MAGIC)) == CUSTOM_ARCHIVE_MAGIC


def plain_section(script: Path, sections: tuple[str, ...], out: Path) -> Path:
    """``script`` itself, or the pre-data or post-data part of it (written to ``out``, mode 0600)."""
    if not sections:
        return script
    if sections not in (("pre-data",), ("post-data",)):
        raise RestoreError(f"{script.name}: a plain script splits into pre-data or post-data, not {sections}")
    # pg_dump writes every pre-data entry before every post-data one: split at the first post-data.
    pre_data, post_data = split_plain_schema(script.read_bytes().decode("utf-8", "surrogateescape"))
    text = pre_data if sections == ("pre-data",) else post_data
    if sections == ("pre-data",) and post_data:
        # pg_dump >= 15.14 opens with \restrict <key> and closes with \unrestrict <key>, which the
        # post-data part keeps; without it the next file run by the same psql could not start.
        restricted = _RESTRICT_LINE.search(pre_data, 0, _first_entry_offset(pre_data))
        if restricted:
            text += f"\n\\unrestrict {restricted[1]}\n"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as sink:
        sink.write(text.encode("utf-8", "surrogateescape"))
    return out


_RESTRICT_LINE = re.compile(r"^\\restrict (\S+)$", re.MULTILINE)


def _first_entry_offset(script: str) -> int:
    entries = plain_dump_entries(script)
    return entries[0].offset if entries else len(script)


def refresh_matviews_sql(target: PgConnInfo, names: Iterable[str]) -> str:
    """REFRESH statements for these manifest keys (``order."select mv"``), quoted by the server's rules."""
    from psycopg2 import sql

    connection = connect(target)
    try:
        return "".join(
            sql.SQL("REFRESH MATERIALIZED VIEW {};\n").format(relation_sql(name)).as_string(connection)
            for name in names
        )
    finally:
        connection.close()
