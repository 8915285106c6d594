"""Source profiles: what a dump leaves out, and why, per kind of PostgreSQL host."""

from __future__ import annotations

from dataclasses import dataclass

# Schemas the Supabase platform creates and owns in every project; a new project already
# has them, so a schema backup that includes them cannot restore into one.
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


@dataclass(frozen=True)
class Profile:
    name: str
    schema_exclusions: tuple[str, ...] = ()

    def excluded_schemas(self, kind: str) -> tuple[str, ...]:
        return self.schema_exclusions if kind == "schema" else ()

    def exclusion_notes(self, kind: str, configured: tuple[str, ...]) -> list[dict[str, str]]:
        notes = [{"schema": s, "reason": "excluded by the target's exclude_schemas"} for s in configured]
        notes += [
            {"schema": s, "reason": f"owned by the {self.name} platform; a new project already has it"}
            for s in self.excluded_schemas(kind)
        ]
        return notes


PROFILES = {
    "plain": Profile("plain"),
    "supabase": Profile("supabase", SUPABASE_PLATFORM_SCHEMAS),
}


def profile_for(name: str) -> Profile:
    return PROFILES[name]
