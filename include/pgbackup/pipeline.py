"""Run stage commands as an OS pipeline, one at a time (staged) or chained (stream).

A stage is one external program reading stdin and writing stdout (pg_dump, zstd, gpg).
The same stage objects serve both data paths: the staged path runs a chain of one stage
between two files; the stream path chains them all, so bytes flow kernel pipe to kernel
pipe and Python only reads the last stdout (to hash and upload it). Memory is bounded by
pipe buffers and one read chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, BinaryIO, Protocol, TypeVar, cast

from pgbackup.errors import PgBackupError

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 8192
RSS_SAMPLE_SECONDS = 0.05
RSS_FIRST_SAMPLE_SECONDS = 0.005  # then doubling up to RSS_SAMPLE_SECONDS: short stages are read too
T = TypeVar("T")
# What a child program may see of our environment: never the rest (Airflow puts connection
# secrets there, e.g. AIRFLOW_CONN_*). Each stage adds its own values (PG*, GNUPGHOME).
INHERITED_ENV = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LD_LIBRARY_PATH")
INHERITED_ENV_PREFIXES = ("LC_",)


@lru_cache(maxsize=1)
def die_with_us_prefix() -> tuple[str, ...]:
    """An argv prefix making a child die with the process that started it (Linux PR_SET_PDEATHSIG).

    A task killed with SIGKILL runs no cleanup: without this its pg_dump would write on alone
    into staging, and its gpg start an agent in a keyring already swept. ``setpriv`` (util-linux)
    sets the signal and execs the program; where it is missing or refuses, children run as before.
    """
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        probe = subprocess.run([*prefix, setpriv, "--version"], capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def minimal_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child program: path, locale, time zone and home, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in INHERITED_ENV or key.startswith(INHERITED_ENV_PREFIXES)
    }
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class StageCommand:
    argv: list[str]
    env: dict[str, str] | None = None
    pass_fds: tuple[int, ...] = ()


class Stage(Protocol):
    """Something that can be run as one program of a pipeline."""

    @property
    def name(self) -> str: ...

    @property
    def error_class(self) -> type[PgBackupError]: ...

    def command(self) -> contextlib.AbstractContextManager[StageCommand]:
        """Yield the command; whatever it needs (a passfile, a keyring) lives until exit."""
        ...


@dataclass
class StageStats:
    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    output_bytes: int | None = None


@dataclass
class ChainResult:
    stages: list[StageStats] = field(default_factory=list)
    output_bytes: int = 0
    output_sha256: str = ""
    input_bytes: int = 0
    input_sha256: str = ""
    seconds: float = 0.0


class HashingReader:
    """A read-only stream that counts and sha256-hashes what passes through it."""

    def __init__(self, raw: BinaryIO, *, hashed: bool = True) -> None:
        self._raw = raw
        self._hash = hashlib.sha256() if hashed else None
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            if self._hash is not None:
                self._hash.update(data)
            self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else ""


def copy_stream(source: BinaryIO, target: BinaryIO) -> None:
    """Copy in bounded chunks."""
    shutil.copyfileobj(source, target, READ_CHUNK_BYTES)


@dataclass(frozen=True)
class FileSink:
    """Write the chain's output to ``path`` atomically (``.partial`` + fsync + rename).

    Unhashed, the last stage writes the file itself and Python never touches the bytes;
    ``hashed`` copies them through Python to take their sha256 on the way.
    """

    path: Path
    hashed: bool = False

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    def __call__(self, stream: HashingReader) -> None:
        # run_chain publishes it, once every stage has exited cleanly.
        with self.open_partial() as handle:
            copy_stream(stream, handle)  # type: ignore[arg-type]

    def open_partial(self) -> BinaryIO:
        """The ``.partial`` file, created 0600: staged files may be plaintext dumps."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file from a dead run keeps its old mode otherwise
        return os.fdopen(fd, "wb")

    def publish(self) -> None:
        with open(self.partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)


def write_to_file(path: Path, *, hashed: bool = False) -> FileSink:
    return FileSink(path, hashed)


def run_chain(
    stages: Sequence[Stage],
    sink: Callable[[HashingReader], T],
    *,
    source: Path | BinaryIO | None = None,
    hash_output: bool = True,
) -> tuple[T, ChainResult]:
    """Run ``stages`` as one pipeline from ``source`` into ``sink``.

    ``source`` is a file path, a readable stream (fed from a thread, and hashed), or None
    (the first stage produces the data, e.g. pg_dump). ``sink`` reads the last stage's
    output (hashed on the way), or is an unhashed :class:`FileSink` that the last stage
    writes directly. Every stage's exit status is checked; the first failing stage raises
    its own error class with its stderr tail. If the sink fails, the stages are killed
    and the sink's error propagates. ``hash_output=False`` skips the sha256 of the output
    for a sink that takes its own (an upload does).
    """
    direct = sink if isinstance(sink, FileSink) and not sink.hashed else None
    if not stages:
        raise ValueError("run_chain needs at least one stage")
    result = ChainResult()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        commands = [stack.enter_context(stage.command()) for stage in stages]
        stderr_files = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
        procs: list[subprocess.Popen[bytes]] = []
        feeder: threading.Thread | None = None
        feeder_error: list[BaseException] = []
        input_reader: HashingReader | None = None
        stdin: int | IO[bytes]
        if source is None:
            stdin = subprocess.DEVNULL
        elif isinstance(source, Path):
            stdin = stack.enter_context(open(source, "rb"))
        else:
            stdin = subprocess.PIPE
            input_reader = HashingReader(source)
        starts: list[float] = []
        rss = _PeakRssSampler()
        output: HashingReader | None = None
        sink_value = cast(T, None)  # what a direct FileSink returns
        sink_error: list[OSError] = []
        try:
            last_stdout: int | IO[bytes] = subprocess.PIPE
            if direct is not None:
                last_stdout = stack.enter_context(direct.open_partial())
            for index, (stage, command) in enumerate(zip(stages, commands, strict=True)):
                proc = subprocess.Popen(
                    [*die_with_us_prefix(), *command.argv],
                    stdin=stdin,
                    stdout=last_stdout if index == len(stages) - 1 else subprocess.PIPE,
                    stderr=stderr_files[index],
                    env=command.env if command.env is not None else minimal_environment(),
                    pass_fds=command.pass_fds,
                    close_fds=True,
                )
                starts.append(time.monotonic())
                rss.watch(proc.pid)
                if procs:
                    # The parent's copy must close, or an early exit downstream never reaches upstream.
                    procs[-1].stdout.close()  # type: ignore[union-attr]
                procs.append(proc)
                if proc.stdout is not None:
                    stdin = proc.stdout
                log.debug("started stage %s (pid %s)", stage.name, proc.pid)
            if input_reader is not None:
                feeder = threading.Thread(
                    target=_feed, args=(input_reader, procs[0], feeder_error), name="pgbackup-feeder", daemon=True
                )
                feeder.start()
            rss.start()
            if direct is None:
                output = HashingReader(procs[-1].stdout, hashed=hash_output)  # type: ignore[arg-type]
                try:
                    sink_value = sink(output)
                except OSError as exc:
                    sink_error.append(exc)
                    raise
                # Drain anything the sink left so the last stage can exit.
                while output.read(READ_CHUNK_BYTES):
                    pass
            else:
                for proc in procs:
                    # Wait without reaping: _reap takes each stage's CPU time from wait4.
                    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except BaseException:
            rss.stop()  # before anything reaps a stage: a reaped pid may be reused
            # A stage that already failed on its own is the cause; judge before killing the rest.
            for proc in procs:
                proc.poll()
            failure = _first_failure(procs, stages, stderr_files, reader_failed=True)
            if failure is not None:
                failure = _naming_the_file(failure, sink)
            elif sink_error and isinstance(sink, FileSink):
                # Python's own write to the file failed (a hashed sink): the last stage's step failed.
                failure = _write_failure(stages[-1], sink, sink_error[0])
            _discard_quietly(sink)  # after naming it: the room left is measured with the partial file there
            _kill_all(procs)
            _reap(procs, stages, result, starts, rss)
            if feeder is not None:
                feeder.join(timeout=5)
            if failure is not None:
                raise failure from failure.__cause__
            raise
        rss.stop()
        _reap(procs, stages, result, starts, rss)
        if feeder is not None:
            feeder.join()
        failure = _first_failure(procs, stages, stderr_files)
        if failure is not None or feeder_error:
            named = _naming_the_file(failure, sink) if failure is not None else None
            _discard_quietly(sink)
            raise named or feeder_error[0]
        if isinstance(sink, FileSink):
            try:
                sink.publish()  # fsync can still find the disk full (quotas, NFS, thin volumes)
            except OSError as exc:
                failure = _write_failure(stages[-1], sink, exc)
                _discard_quietly(sink)
                raise failure from exc
        for stage, stderr_file in zip(stages, stderr_files, strict=True):
            warnings = _tail(stderr_file)
            if warnings:
                log.info("%s said: %s", stage.name, warnings)
    if output is not None:
        result.output_bytes = output.bytes_read
        result.output_sha256 = output.sha256
    elif direct is not None:
        result.output_bytes = direct.path.stat().st_size
    if input_reader is not None:
        result.input_bytes = input_reader.bytes_read
        result.input_sha256 = input_reader.sha256
    result.seconds = time.monotonic() - started
    return sink_value, result


def _feed(reader: HashingReader, proc: subprocess.Popen[bytes], errors: list[BaseException]) -> None:
    assert proc.stdin is not None
    try:
        while True:
            chunk = reader.read(READ_CHUNK_BYTES)
            if not chunk:
                break
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the stage died; its exit status tells why
    except BaseException as exc:  # noqa: BLE001 - re-raised by run_chain
        errors.append(exc)
        proc.kill()
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _reap(
    procs: list[subprocess.Popen[bytes]],
    stages: Sequence[Stage],
    result: ChainResult,
    starts: list[float],
    rss: _PeakRssSampler,
) -> None:
    """Wait for every stage, recording wall time, CPU time (from wait4) and sampled peak RSS."""
    for proc, stage, start in zip(procs, stages, starts, strict=False):
        if proc.returncode is None:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            # wait4's ru_maxrss is no use here: the child starts as a (v)fork of this process,
            # so it reports at least our own peak RSS. Fall back to it only if no sample was read.
            sampled = rss.peak_bytes(proc.pid)
            result.stages.append(
                StageStats(
                    name=stage.name,
                    seconds=time.monotonic() - start,
                    cpu_seconds=usage.ru_utime + usage.ru_stime,
                    peak_rss_bytes=sampled if sampled is not None else usage.ru_maxrss * 1024,
                )
            )
        if proc.stdout is not None:
            proc.stdout.close()


class _PeakRssSampler:
    """Each stage's peak RSS: ``VmHWM`` from ``/proc/<pid>/status``, read every 50 ms.

    The kernel keeps VmHWM per process image, so a sample just before exit sees the true
    peak; only growth in a process's last few milliseconds can be missed. The first reads
    come 5, 15, 35 ms after start, as a read right after Popen can precede the dynamic
    loader: a stage that lives under ~5 ms reports that early read, a lower bound.
    ``stop()`` must be called before any stage is reaped, or a read could hit a reused pid.
    """

    def __init__(self) -> None:
        self._peaks: dict[int, int] = {}
        self._pids: list[int] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.append(pid)
        self._sample(pid)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgbackup-rss", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        for pid in list(self._pids):
            self._sample(pid)

    def peak_bytes(self, pid: int) -> int | None:
        with self._lock:
            return self._peaks.get(pid)

    def _run(self) -> None:
        interval = RSS_FIRST_SAMPLE_SECONDS
        while not self._stopped.wait(interval):
            for pid in list(self._pids):
                self._sample(pid)
            interval = min(interval * 2, RSS_SAMPLE_SECONDS)

    def _sample(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                lines = status.read().splitlines()
        except OSError:
            return  # not Linux, or already gone
        for line in lines:
            if line.startswith(b"VmHWM:"):  # absent for a zombie
                kib = int(line.split()[1])
                with self._lock:
                    self._peaks[pid] = max(self._peaks.get(pid, 0), kib * 1024)
                return


def _first_failure(
    procs: list[subprocess.Popen[bytes]],
    stages: Sequence[Stage],
    stderr_files: Sequence[IO[bytes]],
    *,
    reader_failed: bool = False,
) -> PgBackupError | None:
    """The most upstream stage that failed on its own is the cause: downstream ones died of the
    end of their input, and one that died of a broken pipe only lost its reader (when that
    reader, the sink, failed first, ``reader_failed``, its error is the cause: None here)."""
    failed = [
        (proc, stage, _tail(stderr_file))
        for proc, stage, stderr_file in zip(procs, stages, stderr_files, strict=False)
        if proc.returncode not in (0, None)
    ]
    own = [f for f in failed if f[0].returncode != -signal.SIGPIPE and "Broken pipe" not in f[2]]
    if not failed or (reader_failed and not own):
        return None
    proc, stage, message = (own or failed)[0]
    return stage.error_class(
        f"{stage.name} failed (exit {proc.returncode}): {message or f'exit status {proc.returncode}'}"
    )


# What a program says when the file it writes cannot take more (strerror texts).
WRITE_FAILURES = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system")


def is_write_failure(error: BaseException) -> bool:
    """Whether a stage failed writing its own output (a full disk, a quota), as opposed to an
    error the database server sent it (the server's own disk full: "ERROR:  could not ...")."""
    return any(
        text in line and "ERROR:" not in line and "from server" not in line
        for line in str(error).splitlines()
        for text in WRITE_FAILURES
    )


def _write_failure(last: Stage, sink: FileSink, written: OSError) -> PgBackupError:
    failure = last.error_class(f"{last.name} output could not be written: {written.strerror or written}")
    failure.__cause__ = written
    return _naming_the_file(failure, sink, writing=True)


def _naming_the_file(failure: PgBackupError, sink: object, *, writing: bool = False) -> PgBackupError:
    """A stage that failed writing a staging file: the error names the file and the room left
    on its file system (pg_dump and zstd say only "No space left on device")."""
    if not isinstance(sink, FileSink) or not (writing or is_write_failure(failure)):
        return failure
    try:
        usage = shutil.disk_usage(sink.path.parent)
        room = f"; {usage.free:,} of {usage.total:,} bytes free on its file system"
    except OSError:
        room = ""
    failure.args = (f"{failure} (writing {sink.partial}{room})", *failure.args[1:])
    return failure


def _discard_quietly(sink: object) -> None:
    """Remove a file sink's partial file; failing to (a file system gone read-only) must not
    hide the error that brought us here, nor stop the stages from being killed."""
    if not isinstance(sink, FileSink):
        return
    try:
        sink.discard()
    except OSError as exc:
        log.warning("could not remove %s: %s", sink.partial, exc)


def _tail(stderr_file: IO[bytes]) -> str:
    stderr_file.seek(0, os.SEEK_END)
    size = stderr_file.tell()
    stderr_file.seek(max(0, size - STDERR_TAIL_BYTES))
    return stderr_file.read().decode("utf-8", "replace").strip()
