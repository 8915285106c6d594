"""OpenPGP encryption with gpg, in a private throwaway keyring per run.

Recipients are checked before anything is dumped: a missing, expired or revoked key, or
one with no usable encryption subkey, fails the run at once. gpg does not compress again
(``--compress-algo none``): the data is already compressed. Passphrases reach gpg through
a 0600 file in the private keyring directory, never argv.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgbackup.errors import EncryptionError
from pgbackup.pipeline import StageCommand, private_tempdir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipientKey:
    query: str
    fingerprint: str
    user_ids: tuple[str, ...]
    expires_at: int | None  # unix time of the encryption subkey, None = never

    def as_dict(self) -> dict[str, object]:
        return {
            "recipient": self.query,
            "fingerprint": self.fingerprint,
            "user_ids": list(self.user_ids),
            "expires_at": self.expires_at,
        }


def gpg_program() -> str:
    path = shutil.which("gpg")
    if not path:
        raise EncryptionError("gpg is not installed (apt-get install gnupg)")
    return path


def gpg_version() -> str:
    out = subprocess.run([gpg_program(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "gpg ?"


class Keyring:
    """A private GNUPGHOME (0700) holding only the keys a run needs."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @classmethod
    @contextlib.contextmanager
    def temporary(cls) -> Iterator[Keyring]:
        # Short path: gpg-agent's socket path must fit in 108 bytes.
        with private_tempdir("pgb-gpg-", "/tmp") as home:
            keyring = cls(home)
            try:
                yield keyring
            finally:
                subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)

    def gpg_argv(self, *args: str) -> list[str]:
        """A non-interactive gpg command on this keyring only."""
        return [gpg_program(), "--homedir", str(self.home), "--batch", "--no-tty", *args]

    def _run(self, args: list[str], *, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.gpg_argv(*args), input=input_bytes, capture_output=True, check=False)

    def import_keys(self, armored: bytes, source: str) -> None:
        done = self._run(["--import"], input_bytes=armored)
        if done.returncode != 0:
            raise EncryptionError(
                f"cannot import gpg key from {source}: {done.stderr.decode(errors='replace').strip()}"
            )

    def import_key_files(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise EncryptionError(f"cannot read gpg public key file {path}: {exc.strerror}") from exc
            self.import_keys(data, str(path))

    def resolve_recipients(self, recipients: tuple[str, ...], *, now: float | None = None) -> list[RecipientKey]:
        """Each recipient's usable encryption key, or an error naming what is wrong with it."""
        now = time.time() if now is None else now
        resolved = []
        for query in recipients:
            done = self._run(["--with-colons", "--fixed-list-mode", "--list-keys", "--", query])
            if done.returncode != 0:
                raise EncryptionError(
                    f"gpg recipient {query!r}: no public key found in the configured public_key_files"
                )
            resolved.append(_usable_key(query, done.stdout.decode(errors="replace"), now))
        return resolved

    def import_private_key(self, armored: str, passphrase: str | None) -> None:
        self.import_keys(armored.encode(), "the decryption key connection")
        if passphrase is not None:
            path = self.passphrase_file
            path.write_text(passphrase)
            path.chmod(0o600)

    @property
    def passphrase_file(self) -> Path:
        return self.home / "passphrase"


def _usable_key(query: str, colons: str, now: float) -> RecipientKey:
    """The recipient's valid encryption-capable key, or an error saying why there is none."""
    blocks: list[dict[str, list[dict[str, str]]]] = []
    current: dict[str, str] | None = None
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            if fields[0] == "pub":
                blocks.append({"keys": [], "uids": []})
            current = {"validity": fields[1], "expires": fields[6], "caps": fields[11]}
            blocks[-1]["keys"].append(current)
        elif fields[0] == "fpr" and current is not None and "fpr" not in current:
            current["fpr"] = fields[9]
        elif fields[0] == "uid" and blocks:
            blocks[-1]["uids"].append({"uid": fields[9]})

    def state(key: dict[str, str]) -> str | None:
        if key["validity"] == "r":
            return "revoked"
        if key["validity"] == "e" or (key["expires"] and int(key["expires"]) <= now):
            return "expired"
        return None

    problems: list[str] = []
    for block in blocks:
        primary = block["keys"][0]
        if state(primary):
            problems.append(f"key {primary.get('fpr', '?')} is {state(primary)}")
            continue
        # Lower-case 'e' marks a (sub)key that itself can encrypt.
        usable = [k for k in block["keys"] if "e" in k["caps"] and not state(k)]
        if not usable:
            problems.append(f"key {primary.get('fpr', '?')} has no valid encryption subkey (expired or revoked)")
            continue
        expiry = usable[-1]["expires"]
        return RecipientKey(
            query, primary["fpr"], tuple(u["uid"] for u in block["uids"]), int(expiry) if expiry else None
        )
    raise EncryptionError(f"gpg recipient {query!r} cannot be used: {'; '.join(problems) or 'no key found'}")


@dataclass
class EncryptStage:
    keyring: Keyring
    fingerprints: tuple[str, ...]
    name: str = "gpg-encrypt"
    error_class: type[EncryptionError] = EncryptionError

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        argv = self.keyring.gpg_argv(
            "--quiet", "--trust-model", "always", "--compress-algo", "none", "--encrypt", "--output", "-"
        )
        for fingerprint in self.fingerprints:
            argv += ["--recipient", fingerprint]
        yield StageCommand(argv)


@dataclass
class DecryptStage:
    keyring: Keyring
    name: str = "gpg-decrypt"
    error_class: type[EncryptionError] = EncryptionError

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        argv = self.keyring.gpg_argv("--quiet", "--pinentry-mode", "loopback")
        if self.keyring.passphrase_file.exists():
            argv += ["--passphrase-file", str(self.keyring.passphrase_file)]
        argv += ["--decrypt", "--output", "-"]
        yield StageCommand(argv)
