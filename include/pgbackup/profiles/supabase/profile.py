"""The supabase profile: backups of a Supabase project that restore into a new project.

On Supabase ``postgres`` is not a superuser, and a new project already holds the
platform: schemas owned by ``supabase_admin`` & co (auth, storage, extensions, ...),
their tables, functions and triggers, preinstalled extensions, the ``supabase_realtime``
publication, event triggers and the API roles. A plain dump replays all of that and
fails ("must be owner of table users", "... event trigger"). So a dump keeps grants and
records the custom roles and the platform's shape; a restore runs only the archive
entries that toc.py keeps, strictly, in one transaction (strict.py), as ``postgres``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgbackup.dump import split_qualified
from pgbackup.profiles import Profile, RestoreJob, RestoreOutcome
from pgbackup.profiles.supabase import roles, shape, strict, toc
from pgbackup.profiles.supabase.platform import (
    MIGRATION_REASON,
    MIGRATION_TABLES,
    NO_DATA_REASON,
    NO_DATA_SCHEMAS,
    RESERVED_ROLES,
)

if TYPE_CHECKING:
    from pgbackup.manifest import Manifest
    from pgbackup.pgconn import PgConnInfo


class SupabaseProfile(Profile):
    name = "supabase"
    keep_privileges = True
    renders_plain_from_archive = True
    needs_scratch_template = True
    scratch_template_needed = (
        "a template database with a new Supabase project's platform on the scratch server "
        "(an empty database proves nothing about a restore into a Supabase project)"
    )
    # Only platform state and secrets encrypted with the project's key leave every dump; platform
    # schemas stay (their rows are user data), the restore's TOC filter does the rest.
    schema_exclusions = NO_DATA_SCHEMAS
    exclusion_reason = (
        "Supabase platform state or secrets encrypted with the project's key, or not readable by postgres; no user data"
    )

    def exclusion_notes(self, kind: str, configured: tuple[str, ...]) -> list[dict[str, str]]:
        return super().exclusion_notes(kind, configured) + manifest_exclusions(kind)

    def capture_source(self, source: PgConnInfo) -> dict[str, Any]:
        # Roles without passwords, and the platform's shape, which validation's scratch must match.
        return {"roles": roles.capture_custom_roles(source), "platform_shape": shape.platform_shape(source)}

    def render_plain(
        self, archive: Path, kind: str, out: Path, source: dict[str, Any]
    ) -> tuple[int, list[dict[str, str]]]:
        """The filtered archive as SQL a new project accepts from ``psql --single-transaction``."""
        preamble = strict.plain_preamble(source.get("roles"), toc.archive_has_acls(archive))
        return strict.render_sql(archive, kind, out, preamble=preamble)

    def restore(self, job: RestoreJob) -> RestoreOutcome:
        """Prove the same strict restore a new project gets, on the source's platform shape."""
        manifest = job.manifest
        shape.check_platform_shape(
            manifest.source.get("platform_shape"), job.target, f"{manifest.backup_id} (template {job.template})"
        )
        record: dict[str, Any] = {"platform_shape": manifest.source["platform_shape"]["sha256"]}
        record["excluded"] = restore_backup(
            manifest, job.archive, job.target, job.workdir, job.schema_archive, job.schema_manifest
        )
        left_out = rows_left_out(manifest.source.get("tables", []))
        record["rows_not_compared"] = left_out
        return RestoreOutcome(record, left_out)


def manifest_exclusions(kind: str) -> list[dict[str, str]]:
    """Category-level notes for ``manifest.excluded``; the per-entry list comes with each restore."""
    notes = [
        {"what": "platform-owned objects (schemas, tables, functions, triggers of the platform)",
         "reason": "a new Supabase project already has them; only their owner could recreate them"},
        {"what": "event triggers, platform publications, preinstalled extensions",
         "reason": "need a superuser, or already present in every new project"},
        {"what": "user tables' membership in a publication the restoring role does not own (Supabase's own "
                 "initial schema makes supabase_admin the owner of supabase_realtime)",
         "reason": "only a publication's owner may add tables to it; the restore leaves the membership out, "
                   "lists it with the ALTER PUBLICATION statement to run, and logs a warning with it"},
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
        schema, name = split_qualified(table)
        if (schema, name) in MIGRATION_TABLES:
            found[table] = MIGRATION_REASON
        elif schema in NO_DATA_SCHEMAS:
            found[table] = NO_DATA_REASON
    return found



def restore_backup(
    manifest: Manifest,
    archive: Path,
    db: PgConnInfo,
    workdir: Path,
    schema_archive: Path | None = None,
    schema_manifest: Manifest | None = None,
) -> list[dict[str, str]]:
    """Restore a supabase-profile backup the way a new project takes it: TOC-filtered, one
    transaction, stop at the first error, as ``db``'s user. Returns what was left out, and why."""
    captured = manifest.source.get("roles")
    if schema_archive is None:
        if manifest.dump_format == "custom":
            return strict.restore_supabase(archive, db, kind=manifest.kind, roles=captured, workdir=workdir).excluded
        # Plain: already filtered at backup time, with its own preamble (roles, replica mode).
        facts = toc.target_facts(db)
        strict.run_sql_strict(db, [archive])
        left_out = toc.resolve_memberships([e for e in manifest.excluded if "entry" in e], facts)
        toc.warn_left_out_memberships(left_out, db.describe())
        return left_out
    matviews = schema_manifest.source.get("populated_matviews", []) if schema_manifest else []
    # A plain part was filtered at backup time: its manifest says what it left out.
    plain_excluded = [
        e for part in (schema_manifest, manifest) if part is not None and part.dump_format == "plain"
        for e in part.excluded if "entry" in e
    ]
    # Any combination of formats: schema pre-data, data, schema post-data, one transaction.
    report = strict.restore_supabase_pair(
        schema_archive, archive, db, roles=captured, populated_matviews=matviews, workdir=workdir,
        plain_excluded=plain_excluded,
    )
    return report.excluded
