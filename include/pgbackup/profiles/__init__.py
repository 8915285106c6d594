"""Source profiles: per kind of PostgreSQL host, what a dump leaves out, what it records,
and how its backups restore.

One module per profile (``plain.py``, ``supabase/``), imported only when asked for, the
way barman keeps one module per cloud provider. A new managed PostgreSQL is one new
module subclassing :class:`Profile` plus a line in ``_PROFILES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgbackup.errors import ConfigError

if TYPE_CHECKING:
    from pgbackup.manifest import Manifest
    from pgbackup.pgconn import PgConnInfo


@dataclass(frozen=True)
class RestoreJob:
    """One stored backup, already decrypted, to restore into ``target`` (a scratch database)."""

    manifest: Manifest
    archive: Path
    target: PgConnInfo
    workdir: Path
    schema_archive: Path | None = None  # data backups: the schema they are restored onto
    schema_manifest: Manifest | None = None
    template: str | None = None  # what ``target`` was created from, for messages


@dataclass(frozen=True)
class RestoreOutcome:
    record: dict[str, Any]  # added to the verification record
    rows_not_compared: dict[str, str]  # table -> why the restore does not load its rows


class Profile:
    """The generic profile's behaviour; each hook is overridden where a host differs."""

    name = "plain"
    # Grants are security (a REVOKE from anon); a profile that restores them exactly keeps them.
    keep_privileges = False
    # A plain-format backup is an archive rendered to SQL by the profile (render_plain).
    renders_plain_from_archive = False
    # Validation needs a scratch database shaped like the host (validation.scratch_template): what it holds.
    needs_scratch_template = False
    scratch_template_needed = ""
    schema_exclusions: tuple[str, ...] = ()
    exclusion_reason = ""

    def excluded_schemas(self, kind: str) -> tuple[str, ...]:
        return self.schema_exclusions

    def exclusion_notes(self, kind: str, configured: tuple[str, ...]) -> list[dict[str, str]]:
        """What ``manifest.excluded`` says at dump time, before any restore."""
        notes = [{"schema": s, "reason": "excluded by the target's exclude_schemas"} for s in configured]
        notes += [{"schema": s, "reason": self.exclusion_reason} for s in self.excluded_schemas(kind)]
        return notes

    def capture_source(self, source: PgConnInfo) -> dict[str, Any]:
        """Extra ``manifest.source`` entries recorded at dump time."""
        return {}

    def render_plain(
        self, archive: Path, kind: str, out: Path, source: dict[str, Any]
    ) -> tuple[int, list[dict[str, str]]]:
        """Write ``archive`` (custom format) as this profile's plain SQL; (kept entries, left-out ones)."""
        raise NotImplementedError(f"profile {self.name} dumps plain SQL with pg_dump itself")

    def restore(self, job: RestoreJob) -> RestoreOutcome | None:
        """Restore a backup of this profile; None: the generic pg_restore/psql restore applies."""
        return None


_PROFILES = {
    "plain": "pgbackup.profiles.plain:PlainProfile",
    "supabase": "pgbackup.profiles.supabase.profile:SupabaseProfile",
}
PROFILE_NAMES = tuple(_PROFILES)


@cache
def profile_for(name: str) -> Profile:
    if name not in _PROFILES:
        raise ConfigError(f"unknown profile {name!r}: pgbackup knows {', '.join(PROFILE_NAMES)}")
    module, _, cls = _PROFILES[name].partition(":")
    profile: Profile = getattr(importlib.import_module(module), cls)()
    return profile
