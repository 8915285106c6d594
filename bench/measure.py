"""What a step costs: wall time, peak RSS per program, staging disk, bytes written.

``StepProbe`` runs a sampler thread while a step runs. Every 50 ms it walks the
processes this benchmark started *during the step* (descendants that did not exist when
the probe began, so the moto server and the cluster watchdog are never counted) and
reads ``VmHWM`` from ``/proc/<pid>/status`` and ``write_bytes`` from ``/proc/<pid>/io``.
The kernel keeps VmHWM per process image, so the last sample before a process exits
holds its true peak. Python-side work (engine calls, uploads, downloads) runs in a
step process of its own (``bench.worker``), so it is sampled like any other program.

``os.wait4``'s ``ru_maxrss`` is deliberately not used: a child is (v)forked from this
process, so it reports at least this process's own peak.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

MB = 1_000_000
SAMPLE_SECONDS = 0.05
STAGING_SAMPLE_SECONDS = 0.1
PYTHON = "python"  # a bench.worker step process


def _read_status(pid: int | str) -> tuple[str, int] | None:
    """(Name, VmHWM bytes) of a live process; None for a zombie or a vanished pid."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    name = ""
    for line in lines:
        if line.startswith(b"Name:"):
            name = line.split(maxsplit=1)[1].decode(errors="replace") if len(line.split()) > 1 else "?"
        elif line.startswith(b"VmHWM:"):
            return name, int(line.split()[1]) * 1024
    return None


def _read_write_bytes(pid: int | str) -> int | None:
    try:
        with open(f"/proc/{pid}/io", "rb") as handle:
            for line in handle:
                if line.startswith(b"write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                kids.extend(int(x) for x in handle.read().split())
        except OSError:
            continue
    return kids


def descendants(root: int, skip: frozenset[int] = frozenset()) -> list[int]:
    """Every live descendant of ``root``, not entering the subtrees of ``skip``."""
    found: list[int] = []
    todo = [root]
    while todo:
        for kid in _children(todo.pop()):
            if kid in skip:
                continue
            found.append(kid)
            todo.append(kid)
    return found


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat", "rb") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def staging_bytes(path: Path) -> int:
    """Sum of file sizes under ``path``; files may vanish mid-walk."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def wait_for_quiet(max_seconds: float, threshold_cores: float = 0.2, window: float = 1.0) -> float:
    """Block until the whole machine is nearly idle for ``window`` seconds; return the seconds waited.

    Called between steps, when nothing of ours runs: any load is someone else's (other jobs
    share this machine) and would be charged to the next step. Gives up after ``max_seconds``.
    """
    started = time.monotonic()
    while True:
        before = system_busy_seconds()
        time.sleep(window)
        if (system_busy_seconds() - before) / window <= threshold_cores:
            return time.monotonic() - started
        if time.monotonic() - started >= max_seconds:
            return time.monotonic() - started


@dataclass
class _Seen:
    name: str
    hwm: int = 0
    write_bytes: int = 0


@dataclass
class Usage:
    """What a probe saw during one step."""

    seconds: float = 0.0
    peak_rss: dict[str, int] = field(default_factory=dict)  # program name -> peak VmHWM bytes
    processes: int = 0  # how many processes the step started
    staging_peak: int | None = None  # bytes; None when no staging dir was watched
    disk_written: int = 0  # bytes the step's processes sent to the block layer
    system_cpu_seconds: float = 0.0  # every process on the machine, ours included

    @property
    def max_rss(self) -> tuple[str, int]:
        if not self.peak_rss:
            return "-", 0
        name = max(self.peak_rss, key=lambda n: self.peak_rss[n])
        return name, self.peak_rss[name]


class StepProbe:
    """Context manager sampling one step; ``usage`` is filled on exit."""

    def __init__(self, staging: Path | None = None) -> None:
        self.staging = staging
        self.usage = Usage()
        self._seen: dict[int, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._skip: frozenset[int] = frozenset()
        self._staging_peak = 0
        self._started = 0.0
        self._busy_start = 0.0

    def __enter__(self) -> StepProbe:
        self._skip = frozenset(descendants(os.getpid()))
        self._busy_start = system_busy_seconds()
        self._thread = threading.Thread(target=self._run, name="bench-probe", daemon=True)
        self._thread.start()
        self._started = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.usage.seconds = time.monotonic() - self._started
        self.usage.system_cpu_seconds = system_busy_seconds() - self._busy_start
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample_processes()
        self._sample_staging()
        peaks: dict[str, int] = {}
        written = 0
        for seen in self._seen.values():
            peaks[seen.name] = max(peaks.get(seen.name, 0), seen.hwm)
            written += seen.write_bytes
        self.usage.peak_rss = peaks
        self.usage.processes = len(self._seen)
        self.usage.disk_written = written
        self.usage.staging_peak = self._staging_peak if self.staging is not None else None

    def _run(self) -> None:
        next_staging = 0.0
        while not self._stop.is_set():
            self._sample_processes()
            now = time.monotonic()
            if now >= next_staging:
                self._sample_staging()
                next_staging = now + STAGING_SAMPLE_SECONDS
            self._stop.wait(SAMPLE_SECONDS)

    def _sample_processes(self) -> None:
        for pid in descendants(os.getpid(), self._skip):
            status = _read_status(pid)
            if status is None:
                continue
            name, hwm = status
            seen = self._seen.get(pid)
            if seen is None or seen.name != name:  # a new pid, or a fork that has since exec'd: VmHWM restarts
                seen = self._seen[pid] = _Seen(name)
            seen.hwm = max(seen.hwm, hwm)
            written = _read_write_bytes(pid)
            if written is not None:
                seen.write_bytes = max(seen.write_bytes, written)

    def _sample_staging(self) -> None:
        if self.staging is not None and self.staging.exists():
            self._staging_peak = max(self._staging_peak, staging_bytes(self.staging))


@contextlib.contextmanager
def probe(staging: Path | None = None) -> Iterator[Usage]:
    """``with probe(dir) as usage: ...`` - usage is complete after the block."""
    step = StepProbe(staging)
    with step:
        yield step.usage
