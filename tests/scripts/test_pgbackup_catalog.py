"""The catalog script runs with the engine alone (no Airflow importable) and finds corruption."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgbackup.manifest import Manifest, manifest_key

SCRIPT = Path(__file__).resolve().parents[2] / "include" / "scripts" / "pgbackup_catalog.py"


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A stub "airflow" package that explodes on import proves the script never imports Airflow.
    blocker = tmp_path / "no_airflow"
    (blocker / "airflow").mkdir(parents=True, exist_ok=True)
    (blocker / "airflow" / "__init__.py").write_text("raise ImportError('airflow must not be imported')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          check=False, timeout=60)


def test_list_and_verify_without_airflow(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    key = "projectx/daily/2026-11-27/backup_20261127_060000.dump.zst.gpg"
    (root / key).parent.mkdir(parents=True)
    (root / key).write_bytes(b"encrypted bytes")
    import hashlib

    manifest = Manifest(backup_id="projectx-full-1", target="projectx", kind="full", tier="daily", object_key=key,
                        created_at="2026-11-27T06:00:00Z",
                        artifact={"sha256": hashlib.sha256(b"encrypted bytes").hexdigest(), "size": 15},
                        verification={"status": "passed", "restore_seconds": 1.5})
    (root / manifest_key(key)).write_bytes(manifest.to_json())
    (root / "projectx/daily/2026-11-27/backup_20261127_070000.dump.zst.gpg").write_bytes(b"partial")

    listed = run_script("list", f"file://{root}", "projectx", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "passed" in listed.stdout and key in listed.stdout
    assert "INCOMPLETE" in listed.stdout

    assert run_script("verify", f"file://{root}", "projectx", tmp_path=tmp_path).returncode == 0
    (root / key).write_bytes(b"encrypted bytez")
    corrupt = run_script("verify", f"file://{root}", "projectx", tmp_path=tmp_path)
    assert corrupt.returncode == 1
    assert "CORRUPT  projectx-full-1" in corrupt.stdout


@pytest.mark.fault("malformed manifest seen by the catalog script (JSON [] beside an object; a date ten years ahead)",
                   "listed with its reason, exit status 1; every other backup still listed")
def test_list_reports_unreadable_and_suspect_manifests_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    good = "projectx/daily/2026-11-27/backup_20261127_060000_000001_aaaa0001.dump.zst.gpg"
    bad = "projectx/daily/2026-11-27/backup_20261127_070000_000002_aaaa0002.dump.zst.gpg"
    future = "projectx/daily/2036-11-27/backup_20361127_060000_000003_aaaa0003.dump.zst.gpg"
    for key, created in ((good, "2026-11-27T06:00:00Z"), (future, "2036-11-27T06:00:00Z")):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")
        manifest = Manifest(backup_id=key, target="projectx", kind="full", tier="daily", object_key=key,
                            created_at=created, artifact={"sha256": "0" * 64, "size": 1},
                            verification={"status": "passed"})
        (root / manifest_key(key)).write_bytes(manifest.to_json())
    (root / bad).write_bytes(b"x")
    (root / manifest_key(bad)).write_bytes(b"[]")

    listed = run_script("list", f"file://{root}", "projectx", tmp_path=tmp_path)
    assert listed.returncode == 1, listed.stderr
    assert good in listed.stdout
    assert f"UNREADABLE manifest {manifest_key(bad)}: expected a JSON object, got []" in listed.stdout
    assert f"SUSPECT  {future}: created_at 2036-11-27T06:00:00Z is" in listed.stdout
    assert "Traceback" not in listed.stderr
