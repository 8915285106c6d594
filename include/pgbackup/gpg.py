"""OpenPGP encryption with gpg, in a private throwaway keyring per run.

Recipients are checked before anything is dumped: a missing, expired or revoked key, or
one with no usable encryption subkey, fails the run at once. gpg does not compress again
(``--compress-algo none``): the data is already compressed.

Secrets and a kill: the keyring lives in a private runtime folder (:mod:`pgbackup.staging`)
that the next run removes, with its gpg-agent, if this process is killed. The passphrase
reaches gpg through a pipe (``--passphrase-fd``), never a file or argv; gpg and its agent get
a minimal environment, not ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgbackup.errors import EncryptionError
from pgbackup.pipeline import StageCommand, minimal_environment
from pgbackup.staging import GNUPG_HOME, RUNTIME_DIR_ENV, kill_gpg_agent, private_run_dir

GPG_TIMEOUT_SECONDS = 120  # key import and listing: local work, but an agent can hang
MAX_SOCKET_PATH_BYTES = 107  # sun_path is 108 bytes with its terminating NUL
LONGEST_SOCKET_NAME = "S.gpg-agent.browser"

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
    out = subprocess.run(
        [gpg_program(), "--version"], env=minimal_environment(), capture_output=True, text=True, check=False
    ).stdout
    return out.splitlines()[0] if out else "gpg ?"


class Keyring:
    """A private GNUPGHOME (0700) holding only the keys a run needs."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.passphrase: str | None = None  # kept in memory only; handed to gpg through a pipe

    @classmethod
    @contextlib.contextmanager
    def temporary(cls) -> Iterator[Keyring]:
        """A keyring in a fresh private runtime folder (short path: agent sockets fit in 108 bytes)."""
        with private_run_dir("gpg-") as run_dir:
            home = run_dir / GNUPG_HOME
            check_socket_path(home)
            home.mkdir(mode=0o700)
            try:
                yield cls(home)
            finally:
                kill_gpg_agent(home)

    def gpg_argv(self, *args: str) -> list[str]:
        """A non-interactive gpg command on this keyring only."""
        return [gpg_program(), "--homedir", str(self.home), "--batch", "--no-tty", *args]

    def environment(self) -> dict[str, str]:
        """gpg's environment (inherited by the gpg-agent it starts): minimal, on this keyring."""
        return minimal_environment({"GNUPGHOME": str(self.home)})

    def _run(self, args: list[str], *, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self.gpg_argv(*args),
                input=input_bytes,
                env=self.environment(),
                capture_output=True,
                check=False,
                timeout=GPG_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise EncryptionError(f"gpg {args[0]} did not finish within {GPG_TIMEOUT_SECONDS}s") from None

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
        self.passphrase = passphrase


def check_socket_path(home: Path) -> None:
    """gpg-agent cannot listen on a socket path longer than the kernel's limit; say so up front."""
    longest = home / LONGEST_SOCKET_NAME
    if len(os.fsencode(longest)) > MAX_SOCKET_PATH_BYTES:
        raise EncryptionError(
            f"gpg keyring folder {home} is too deep for gpg-agent's socket ({len(os.fsencode(longest))} bytes, "
            f"the limit is {MAX_SOCKET_PATH_BYTES}); set {RUNTIME_DIR_ENV} to a shorter private folder"
        )


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
        yield StageCommand(argv, self.keyring.environment())


@dataclass
class DecryptStage:
    keyring: Keyring
    name: str = "gpg-decrypt"
    error_class: type[EncryptionError] = EncryptionError

    @contextlib.contextmanager
    def command(self) -> Iterator[StageCommand]:
        argv = self.keyring.gpg_argv("--quiet", "--pinentry-mode", "loopback")
        if self.keyring.passphrase is None:
            argv += ["--decrypt", "--output", "-"]
            yield StageCommand(argv, self.keyring.environment())
            return
        # A pipe holding the passphrase: written whole before gpg starts (far below the pipe
        # buffer), so it never exists as a file, and dies with both processes.
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, self.keyring.passphrase.encode() + b"\n")
            os.close(write_fd)
            write_fd = -1
            argv += ["--passphrase-fd", str(read_fd), "--decrypt", "--output", "-"]
            yield StageCommand(argv, self.keyring.environment(), pass_fds=(read_fd,))
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
