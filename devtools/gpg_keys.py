"""Throwaway gpg keys for the demo, tests and benchmarks (real gpg, fast curve25519 keys)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedKey:
    email: str
    fingerprint: str
    public_key_file: Path
    private_key_armored: str
    passphrase: str


def _gpg(home: Path, *args: str, input_text: str | None = None) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


def generate_key(
    out_dir: Path,
    email: str = "backups@projectx.example",
    *,
    passphrase: str = "demo-passphrase",
    expire: str = "2y",
    faked_system_time: str | None = None,
    encryption_subkey: bool = True,
) -> GeneratedKey:
    """Generate a key; writes ``<out_dir>/<email>.asc`` (public) and returns the private key armored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="pgb-keygen-", dir="/tmp"))
    try:
        home.chmod(0o700)
        when = [f"--faked-system-time={faked_system_time}"] if faked_system_time else []
        pin = ["--pinentry-mode", "loopback", "--passphrase", passphrase]  # test keys only
        _gpg(home, *when, *pin, "--quick-generate-key", f"pgbackup test <{email}>", "ed25519", "sign", expire)
        fingerprint = _gpg(home, "--with-colons", "--list-keys", email).split("fpr:::::::::")[1].split(":")[0]
        if encryption_subkey:
            _gpg(home, *when, *pin, "--quick-add-key", fingerprint, "cv25519", "encr", expire)
        public = _gpg(home, "--armor", "--export", fingerprint)
        private = _gpg(home, *pin, "--armor", "--export-secret-keys", fingerprint)
        public_file = out_dir / f"{email}.asc"
        public_file.write_text(public)
        return GeneratedKey(email, fingerprint, public_file, private, passphrase)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
