#!/usr/bin/env python3
"""List and check backups straight from storage, with no Airflow installed.

    python include/scripts/pgbackup_catalog.py list   s3://projectx-backups/pgbackup projectx
    python include/scripts/pgbackup_catalog.py verify file:///backups projectx [--backup-id ID]

S3 credentials come from the usual AWS environment (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...);
``--endpoint-url`` targets S3-compatible services. Exit status 0 means every listed or
checked backup is complete and intact; ``list`` exits 1 when a manifest is unreadable or
a backup's date is suspect (each printed with its reason).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # include/, for the engine

from pgbackup.catalog import read_catalog
from pgbackup.errors import PgBackupError
from pgbackup.storage import open_storage

log = logging.getLogger("pgbackup_catalog")


def _storage(args: argparse.Namespace) -> Any:
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    return open_storage(args.url, **options)


def list_backups(args: argparse.Namespace) -> int:
    catalog = read_catalog(_storage(args), args.target)
    print(f"{'created':<21} {'kind':<7} {'verified':<9} {'restore s':>9} {'size':>14}  object")
    for manifest in catalog.of():
        print(f"{manifest.created_at:<21} {manifest.kind:<7} {manifest.verification.get('status', '?'):<9} "
              f"{manifest.verification.get('restore_seconds') or '':>9} {manifest.size:>14,}  {manifest.object_key}")
    for info in catalog.incomplete:
        print(f"{'':<21} {'?':<7} {'INCOMPLETE':<9} {'':>9} {info.size:>14,}  {info.key} (no manifest)")
    for suspect in catalog.suspect:
        print(f"SUSPECT  {suspect.key}: {suspect.reason} (kept, not counted)")
    for key, reason in catalog.unreadable:
        print(f"UNREADABLE manifest {key}: {reason} (its object is kept)")
    return 1 if catalog.unreadable or catalog.suspect else 0


def verify_backups(args: argparse.Namespace) -> int:
    """Re-read each stored object and compare its sha256 and size with the manifest."""
    storage = _storage(args)
    catalog = read_catalog(storage, args.target)
    chosen = [m for m in catalog.of() if args.backup_id in (None, m.backup_id)]
    if not chosen:
        print(f"no complete backup{' ' + args.backup_id if args.backup_id else ''} for {args.target} at {args.url}")
        return 1
    failures = 0
    for manifest in chosen:
        try:
            storage.verify(manifest.object_key, manifest.sha256, manifest.size)
            print(f"ok       {manifest.backup_id}  sha256 {manifest.sha256}")
        except PgBackupError as exc:
            failures += 1
            print(f"CORRUPT  {manifest.backup_id}: {exc}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, helptext in (("list", list_backups, "list complete and incomplete backups"),
                                 ("verify", verify_backups, "re-hash stored objects against their manifests")):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("url", help="file:///dir, s3://bucket/prefix or gs://bucket/prefix")
        command.add_argument("target", help="the target's name in the config")
        command.add_argument("--endpoint-url", help="S3-compatible endpoint")
        if name == "verify":
            command.add_argument("--backup-id")
        command.set_defaults(func=func)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except PgBackupError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
