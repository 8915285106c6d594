#!/usr/bin/env python3
"""Kept for old runbooks: list and check the backups at one storage URL, with no config.

    python include/scripts/pgbackup_catalog.py list   s3://projectx-backups/pgbackup projectx
    python include/scripts/pgbackup_catalog.py verify file:///backups projectx [--backup-id ID]

Superseded by ``pgbackup.py`` (``--config FILE list`` / ``verify``), which reads the config
and its connections; this is a thin shim over the same functions. S3 credentials come from
the AWS default chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...); ``--endpoint-url`` targets
S3-compatible services. Exit status 0 means every listed or checked backup is complete and
intact; 1 when a backup is corrupt or a manifest unreadable or suspect; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # include/, for the engine

from pgbackup.catalog import read_catalog
from pgbackup.errors import PgBackupError
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

log = logging.getLogger("pgbackup_catalog")


def _cli() -> ModuleType:
    # pgbackup.py shares its name with the engine package, so it is loaded from its path.
    spec = importlib.util.spec_from_file_location("pgbackup_cli", Path(__file__).with_name("pgbackup.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _storage(args: argparse.Namespace) -> Storage:
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    return open_storage(args.url, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("list", "list complete and incomplete backups"),
        ("verify", "re-hash stored objects against their manifests"),
    ):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("url", help="file:///dir, s3://bucket/prefix or gs://bucket/prefix")
        command.add_argument("target", help="the target's name in the config")
        command.add_argument("--endpoint-url", help="S3-compatible endpoint")
        if name == "verify":
            command.add_argument("--backup-id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cli = _cli()
    try:
        storage = _storage(args)
        catalog = read_catalog(storage, args.target)
        if args.command == "list":
            print(f"{'created':<21} {'tier':<8} {'kind':<7} {'verified':<9} {'restore s':>9} {'size':>14}  id  object")
            return int(cli.print_catalog(catalog, sys.stdout))
        chosen = [m for m in catalog.of() if args.backup_id in (None, m.backup_id)]
        if not chosen:
            print(f"no complete backup{' ' + args.backup_id if args.backup_id else ''} for {args.target} at {args.url}")
            return 1
        return int(cli.verify_checksums(storage, chosen))
    except PgBackupError as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
