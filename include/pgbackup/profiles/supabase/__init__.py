"""The supabase profile, one module per concern.

``platform`` names the platform's schemas and roles; ``toc`` decides which archive entries
a restore runs; ``roles`` captures and recreates custom roles; ``shape`` fingerprints the
platform; ``strict`` renders and runs the restore in one transaction; ``profile`` plugs
it all into the engine. The names a hand restore needs are re-exported here.
"""

from __future__ import annotations

from pgbackup.profiles.supabase.roles import capture_custom_roles, roles_sql
from pgbackup.profiles.supabase.shape import check_platform_shape, platform_shape
from pgbackup.profiles.supabase.strict import (
    SupabaseRestoreReport,
    plain_preamble,
    render_sql,
    restore_supabase,
    restore_supabase_pair,
    run_sql_strict,
)
from pgbackup.profiles.supabase.toc import TargetFacts, filter_toc, target_facts

__all__ = [
    "SupabaseRestoreReport",
    "TargetFacts",
    "capture_custom_roles",
    "check_platform_shape",
    "filter_toc",
    "plain_preamble",
    "platform_shape",
    "render_sql",
    "restore_supabase",
    "restore_supabase_pair",
    "roles_sql",
    "run_sql_strict",
    "target_facts",
]
