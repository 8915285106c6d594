"""Where a run keeps what it must not leave behind, and how the next run removes it after a kill.

Two places hold a run's files:

- the run's staging folder (``<staging_dir>/<dag>/<run>/<target>``): dumps on the staged path;
- a private runtime folder (``<runtime root>/<prefix><random>``, 0700, short path): throwaway gpg
  keyrings, public and private, with their gpg-agent. Short, because gpg-agent's socket path
  must fit in 108 bytes, which a deep staging path may not.

A task killed with SIGKILL (OOM killer, execution_timeout, a lost worker) runs no ``finally``.
So each runtime folder holds an ``flock`` for as long as its process lives; the kernel releases
it when the process dies however it dies. Whoever comes next (a keyring being created, the
run's cleanup, the next run's prepare) takes the lock of every runtime folder it can: the ones
it gets belong to dead processes, so their gpg-agent is killed and the folder removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pgbackup.errors import ConfigError
from pgbackup.pipeline import minimal_environment

log = logging.getLogger(__name__)

RUNTIME_DIR_ENV = "PGBACKUP_RUNTIME_DIR"
OWNER_LOCK = ".owner"
CREATING_PREFIX = ".creating-"
GNUPG_HOME = "gnupg"
# A folder without its lock file is either being created right now or half removed.
UNLOCKED_GRACE_SECONDS = 60.0
GPGCONF_TIMEOUT_SECONDS = 30
DAEMON_EXIT_SECONDS = 5.0
GPG_DAEMONS = (b"gpg-agent", b"dirmngr", b"keyboxd", b"scdaemon")


def runtime_root() -> Path:
    """The per-user 0700 parent of the runtime folders.

    ``$PGBACKUP_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/pgbackup``, else
    ``/dev/shm/pgbackup-<uid>`` (both memory file systems: a key never reaches a disk), else
    ``/tmp/pgbackup-<uid>``. It is checked to be ours, a real folder and private.
    """
    configured = os.environ.get(RUNTIME_DIR_ENV)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if configured:
        root = Path(configured)
    elif xdg and os.path.isdir(xdg):
        root = Path(xdg) / "pgbackup"
    elif os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        root = Path("/dev/shm") / f"pgbackup-{os.getuid()}"
    else:
        root = Path("/tmp") / f"pgbackup-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(
            f"runtime folder {root} is not a folder owned by uid {os.getuid()}; refusing to keep keys there"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(root, 0o700)
    return root


@contextlib.contextmanager
def private_run_dir(prefix: str) -> Iterator[Path]:
    """A new 0700 runtime folder, locked by this process until exit, then removed with its agents."""
    root = runtime_root()
    sweep_dead_run_dirs(root)
    name = f"{prefix}{secrets.token_hex(6)}"
    # Built under a name sweepers leave alone, and renamed once locked: no window where a
    # sweeper could take the lock of a folder still being set up.
    creating = root / f"{CREATING_PREFIX}{name}"
    creating.mkdir(mode=0o700)
    # Non-inheritable (Python's default): children must not keep the lock alive after we die.
    lock_fd = os.open(creating / OWNER_LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    path = creating
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        path = root / name
        os.rename(creating, path)
        yield path
    finally:
        _remove_run_dir(path)
        os.close(lock_fd)


def sweep_dead_run_dirs(root: Path | None = None) -> list[Path]:
    """Remove the runtime folders of processes that died, killing their gpg-agents first."""
    root = runtime_root() if root is None else root
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(CREATING_PREFIX) and _age(path) < UNLOCKED_GRACE_SECONDS:
            continue
        if _owner_alive(path):
            continue
        log.warning("removing %s, left by a process that died", path)
        _remove_run_dir(path)
        removed.append(path)
    return removed


def _owner_alive(path: Path) -> bool:
    try:
        lock_fd = os.open(path / OWNER_LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _age(path) < UNLOCKED_GRACE_SECONDS
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(lock_fd)  # releases the lock if we took it
    return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # already gone: nothing to do


def _remove_run_dir(path: Path) -> None:
    for home in _gnupg_homes(path):
        kill_gpg_agent(home)
    shutil.rmtree(path, ignore_errors=True)


def _gnupg_homes(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [p for p in path.rglob(GNUPG_HOME) if p.is_dir() and not p.is_symlink()]


def kill_gpg_agent(home: Path) -> None:
    """Stop the gpg-agent (and any other gpg daemon) serving ``home``, and its socket folder.

    ``gpgconf --kill`` only asks; the agent exits a moment later, or never if its socket is
    gone. So any daemon still running on ``home`` afterwards is found by its argv and killed.
    """
    seen = set(_gpg_daemons(home))
    gpgconf = shutil.which("gpgconf")
    for action in (["--kill", "all"], ["--remove-socketdir"]):
        if gpgconf is None:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [gpgconf, "--homedir", str(home), *action],
                env=minimal_environment(),
                capture_output=True,
                check=False,
                timeout=GPGCONF_TIMEOUT_SECONDS,
            )
    deadline = time.monotonic() + DAEMON_EXIT_SECONDS
    while (daemons := _gpg_daemons(home)) and time.monotonic() < deadline:
        seen |= set(daemons)
        time.sleep(0.05)
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    # A dying process loses its argv before it is gone, and SIGKILL lands asynchronously:
    # return only once every daemon seen has exited (or is a zombie its parent has not reaped).
    deadline = time.monotonic() + DAEMON_EXIT_SECONDS
    while [pid for pid in seen if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[:1] != [b"Z"]


def _gpg_daemons(home: Path) -> list[int]:
    """Running gpg daemons started with ``--homedir home`` (Linux /proc; elsewhere none found)."""
    wanted = f"\0--homedir\0{home}\0".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            program = os.path.basename(cmdline.split(b"\0", 1)[0])
            if program in GPG_DAEMONS and wanted in cmdline + b"\0":
                found.append(int(entry))
    return found


def prepare_staging(workdir: Path, *, stale_after_seconds: float = 6 * 3600) -> Path:
    """Create this run's private staging folder, removing what dead runs left first.

    Runtime folders of dead processes go at once (the lock says they are dead). Other runs'
    staging folders of the same DAG and target go once nothing in them changed for
    ``stale_after_seconds``: a live run leaves its folder idle between tasks, so only age
    tells a dead run's folder from a live one's.
    """
    sweep_dead_run_dirs()
    run_dir = workdir.parent
    dag_dir = run_dir.parent
    if dag_dir.is_dir():
        now = time.time()
        for other in dag_dir.iterdir():
            leftover = other / workdir.name
            if other == run_dir or other.is_symlink() or not leftover.is_dir():
                continue
            if now - _newest_mtime(leftover) >= stale_after_seconds:
                log.warning("removing staging %s, left by a run that did not clean up", leftover)
                remove_staging(leftover)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(workdir, 0o700)
    return workdir


def remove_staging(workdir: Path) -> None:
    """Remove a run's staging folder (and any gpg-agent under it), then dead runs' runtime folders."""
    if workdir.is_dir() and not workdir.is_symlink():
        _remove_run_dir(workdir)
    run_dir = workdir.parent
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when empty: other targets of the run may still use it
    sweep_dead_run_dirs()


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest
