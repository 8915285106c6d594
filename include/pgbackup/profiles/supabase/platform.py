"""What the Supabase platform is: its schemas, roles, migration tables and publications.

Every rule of the supabase profile (what a dump leaves out, what a restore filters, what
the platform fingerprint covers) reads these names; nothing here touches a database.
"""

from __future__ import annotations

# Schemas the Supabase platform creates and owns in every project. They are NOT left out
# of dumps: their rows (auth users, storage objects) are user data, and user objects hang on
# their tables (a trigger on auth.users, policies on storage.objects). The restore's TOC
# filter (toc.py) leaves the platform's own objects out instead.
# https://supabase.com/docs/guides/platform/migrating-within-supabase/backup-restore
PLATFORM_SCHEMAS = (
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
NO_DATA_SCHEMAS = (
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
MIGRATION_REASON = "platform migration history; the target keeps its own"
NO_DATA_REASON = "platform state, or secrets encrypted with the source project's key"
PLATFORM_PUBLICATIONS = frozenset({"supabase_realtime", "supabase_realtime_messages_publication"})
# What a new project has installed; used when the target cannot be asked (plain rendering).
PREINSTALLED_EXTENSIONS = frozenset({
    "plpgsql", "pgcrypto", "uuid-ossp", "pg_stat_statements", "pg_graphql", "supabase_vault", "pgsodium",
})


def is_platform_schema(schema: str | None) -> bool:
    return schema is not None and schema in PLATFORM_SCHEMAS
