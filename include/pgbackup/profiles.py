"""Source profiles: what a dump leaves out, and why, per kind of PostgreSQL host."""

from __future__ import annotations

from dataclasses import dataclass

# Schemas the Supabase platform creates and owns in every project. They are NOT left out
# of dumps: their rows (auth users, storage objects) are user data, and user objects hang on
# their tables (a trigger on auth.users, policies on storage.objects). The restore's TOC
# filter (pgbackup.supabase) leaves the platform's own objects out instead.
# https://supabase.com/docs/guides/platform/migrating-within-supabase/backup-restore
SUPABASE_PLATFORM_SCHEMAS = (
    "auth",
    "storage",
    "realtime",
    "_realtime",
    "extensions",
    "graphql",
    "graphql_public",
    "vault",
    "pgsodium",
    "pgsodium_masks",
    "pgbouncer",
    "supabase_functions",
    "supabase_migrations",
    "net",
    "_analytics",
    "cron",
)

# Left out of every supabase dump: platform state, schemas postgres cannot read, and
# secrets encrypted with the source project's root key (useless in another project).
# Unverified against a real project beyond the Supabase CLI's own exclusions.
SUPABASE_NO_DATA_SCHEMAS = (
    "_analytics",
    "_realtime",
    "_supavisor",
    "graphql",
    "graphql_public",
    "net",
    "pgbouncer",
    "pgsodium",
    "pgsodium_masks",
    "supabase_migrations",
    "vault",
)


@dataclass(frozen=True)
class Profile:
    name: str
    schema_exclusions: tuple[str, ...] = ()
    # Grants are security (a REVOKE from anon); the supabase restore puts them back exactly.
    keep_privileges: bool = False
    exclusion_reason: str = ""

    def excluded_schemas(self, kind: str) -> tuple[str, ...]:
        return self.schema_exclusions

    def exclusion_notes(self, kind: str, configured: tuple[str, ...]) -> list[dict[str, str]]:
        notes = [{"schema": s, "reason": "excluded by the target's exclude_schemas"} for s in configured]
        notes += [{"schema": s, "reason": self.exclusion_reason} for s in self.excluded_schemas(kind)]
        return notes


PROFILES = {
    "plain": Profile("plain"),
    "supabase": Profile(
        "supabase",
        SUPABASE_NO_DATA_SCHEMAS,
        keep_privileges=True,
        exclusion_reason="Supabase platform state or secrets encrypted with the project's key, "
        "or not readable by postgres; no user data",
    ),
}


def profile_for(name: str) -> Profile:
    return PROFILES[name]
