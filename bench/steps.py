"""The measured paths, all against the same database, moto S3 and gpg recipient.

* L   ``pg_dump -Fc -Z0 > /dev/null``: the floor any logical backup pays.
* S   the seed's sequence: plain ``pg_dump`` to a file, ``gzip``, ``gpg --encrypt``,
      upload with boto3 ``upload_file`` (what ``aws s3 cp`` does).
* P   ours through the engine, no Airflow: staged (dump_to_file, compress_file,
      encrypt_file, upload_artifact) and stream (stream_backup).
* R   restore: ours (fetch_plaintext + restore_archive, pg_restore -j 2) vs the seed's
      download, ``gpg --decrypt``, ``gunzip -c | psql``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import REPO
from bench.measure import Usage, descendants, probe, wait_for_quiet
from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from pgbackup import backup
from pgbackup.config import CompressionConfig
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo, libpq_environment
from pgbackup.pgtools import find_program
from pgbackup.restore import DecryptionKey
from pgbackup.storage import Storage

T = TypeVar("T")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESTORE_JOBS = 2


@dataclass
class StepResult:
    key: str  # e.g. "S.gzip"
    label: str
    seconds: float
    rate_bytes: int  # the MB/s column is rate_bytes / seconds
    out_bytes: int | None
    usage: Usage
    cpu_seconds: float = 0.0  # the processes the step started (the step process, its programs, gpg-agent)
    server_cpu_seconds: float = 0.0  # PostgreSQL server processes (backends, parallel workers)
    moto_cpu_seconds: float = 0.0  # the S3 service
    other_cpu_seconds: float = 0.0  # the rest of the machine (other work on it skews the figures)
    engine_rss: dict[str, int] = field(default_factory=dict)  # pipeline.StageStats.peak_rss_bytes by stage
    engine_cpu: dict[str, float] = field(default_factory=dict)  # pipeline.StageStats.cpu_seconds by stage
    quiet_wait_seconds: float = 0.0  # how long the machine took to go idle before this step
    gpg_agent_cpu_seconds: float = 0.0  # included in cpu_seconds


@dataclass
class PathResult:
    key: str
    steps: list[StepResult]

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def staging_peak(self) -> int | None:
        peaks = [s.usage.staging_peak for s in self.steps if s.usage.staging_peak is not None]
        return max(peaks) if peaks else None

    @property
    def max_rss(self) -> tuple[str, str, int]:
        """(step key, program, bytes) of the largest peak RSS in this path."""
        best = ("-", "-", 0)
        for step in self.steps:
            name, peak = step.usage.max_rss
            if peak > best[2]:
                best = (step.key, name, peak)
        return best


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _gpg_agents() -> list[int]:
    """gpg-agent daemonises out of our process tree, so it is found by name."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", "rb") as handle:
                    if handle.read().strip() == b"gpg-agent":
                        found.append(int(entry))
            except OSError:
                continue
    return found


class _TreeCpu:
    """CPU some processes used during a step: a process tree, or (root None) every gpg-agent.

    Sampled every 0.25 s and at the end: a process that starts and exits between two samples
    is missed, and one that exits loses its last interval; server backends and the agent
    live for a whole step, so in practice only sub-second helpers can slip through.
    """

    def __init__(self, root: int | None, *, agents: bool = False) -> None:
        self.root = root
        self.agents = agents
        self._start = self._read()
        self._last = dict(self._start)

    def _read(self) -> dict[int, float]:
        if self.agents:
            pids = _gpg_agents()
        elif self.root:
            pids = [self.root, *descendants(self.root)]
        else:
            return {}
        found = {}
        for pid in pids:
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                found[pid] = cpu
        return found

    def sample(self) -> None:
        for pid, cpu in self._read().items():
            self._last[pid] = max(self._last.get(pid, 0.0), cpu)

    @property
    def seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())


@dataclass
class Services:
    cluster: TemporaryCluster
    source: PgConnInfo
    storage: Storage
    storage_spec: dict[str, Any]  # how a step process opens the same storage: {"url", "options"}
    bucket: str
    key: GeneratedKey
    seed_gnupghome: Path
    moto_pid: int | None
    out: Path
    quiet_max_seconds: float = 300.0

    def conn(self, dbname: str) -> PgConnInfo:
        return conn_info(self.cluster, dbname)


def conn_info(cluster: TemporaryCluster, dbname: str) -> PgConnInfo:
    assert cluster.port is not None, "the cluster is not started"
    return PgConnInfo(cluster.host, cluster.port, cluster.user, dbname, cluster.password, label=dbname)


def _rusage_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    services: Services, key: str, label: str, action: Callable[[], T], *, staging: Path | None = None
) -> tuple[T, StepResult]:
    """Run ``action`` as one step: wall time, RSS, staging, disk writes, CPU (ours, server, moto, others)."""
    os.sync()  # earlier steps' dirty pages must not be written back on this step's clock
    waited = wait_for_quiet(services.quiet_max_seconds)
    ours_before = _rusage_seconds()
    server = _TreeCpu(services.cluster.postmaster_pid)
    moto = _TreeCpu(services.moto_pid)
    agents = _TreeCpu(None, agents=True)  # unlocking the private key for a decrypt: ~1.4 CPU s
    with _Repeat(0.25, [server.sample, moto.sample, agents.sample]), probe(staging) as usage:
        value = action()
    for tracker in (server, moto, agents):
        tracker.sample()
    ours = _rusage_seconds() - ours_before  # includes a step process's start-up; the probe thread is noise
    other = max(0.0, usage.system_cpu_seconds - ours - agents.seconds - server.seconds - moto.seconds)
    result = StepResult(key, label, usage.seconds, 0, None, usage, ours + agents.seconds, server.seconds,
                        moto.seconds, other)
    result.quiet_wait_seconds = waited
    result.gpg_agent_cpu_seconds = agents.seconds
    return value, result


def measure_worker(
    services: Services, key: str, label: str, spec: dict[str, Any], *, staging: Path | None = None
) -> tuple[dict[str, Any], StepResult]:
    """A Python-side step in its own process (bench.worker); its own clock times just the call."""
    value, result = measure(services, key, label, lambda: call_worker(spec), staging=staging)
    result.seconds = float(value["seconds"])
    result.cpu_seconds = float(value["cpu_seconds"]) + result.gpg_agent_cpu_seconds
    return value, result


def call_worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "bench.worker"], input=json.dumps(spec).encode(),
                          capture_output=True, env=env, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"step {spec['op']} failed: {done.stderr.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class _Repeat:
    """Call functions every ``interval`` seconds from a thread while the block runs."""

    def __init__(self, interval: float, calls: list[Callable[[], None]]) -> None:
        self._interval = interval
        self._calls = calls
        self._event = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Repeat:
        self._event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._event.wait(self._interval):
            for call in self._calls:
                call()

    def __exit__(self, *exc: object) -> None:
        self._event.set()
        if self._thread is not None:
            self._thread.join()


def _run(argv: list[str], *, env: dict[str, str] | None = None, stdout: Any = subprocess.DEVNULL) -> None:
    done = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")


def _gpg_seed(services: Services, *args: str) -> list[str]:
    return ["gpg", "--homedir", str(services.seed_gnupghome), "--batch", "--yes", "--no-tty", *args]


@contextlib.contextmanager
def seed_keyring(key: GeneratedKey) -> Iterator[Path]:
    """The seed's operator keyring: the recipient's public key, and the private key for restores."""
    home = Path(tempfile.mkdtemp(prefix="pgb-seed-", dir="/tmp"))
    try:
        home.chmod(0o700)
        pin = ["--pinentry-mode", "loopback", "--passphrase", key.passphrase]
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", str(key.public_key_file)],
                       capture_output=True, check=True)
        subprocess.run(["gpg", "--homedir", str(home), "--batch", *pin, "--import"],
                       input=key.private_key_armored.encode(), capture_output=True, check=True)
        (home / "passphrase").write_text(key.passphrase)
        (home / "passphrase").chmod(0o600)
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _conn_spec(conn: PgConnInfo) -> dict[str, Any]:
    return {"host": conn.host, "port": conn.port, "user": conn.user, "dbname": conn.dbname, "password": conn.password}


def engine_spec(services: Services, op: str, *, level: int | None = None, **extra: Any) -> dict[str, Any]:
    """A daily full backup at the DEFAULT settings (CompressionConfig(): zstd at its default level, all cores)."""
    compression = (CompressionConfig() if level is None else CompressionConfig(level=level)).model_dump()
    return {
        "op": op,
        "source": _conn_spec(services.source),
        "key": {"email": services.key.email, "public_key_file": str(services.key.public_key_file)},
        "compression": compression,
        "storage": services.storage_spec,
        **extra,
    }


# -- L ----------------------------------------------------------------------------------


def run_lower_bound(services: Services, key: str = "L") -> StepResult:
    """Exactly ``pg_dump -Fc -Z0 > /dev/null``; the caller fills in the archive size for MB/s."""
    pg_dump = find_program("pg_dump")

    def action() -> None:
        with libpq_environment(services.source) as env, open(os.devnull, "wb") as devnull:
            _run([pg_dump, "-Fc", "-Z0"], env=env, stdout=devnull)

    _, result = measure(services, key, "pg_dump -Fc -Z0 > /dev/null", action)
    return result


# -- S: the seed ------------------------------------------------------------------------


@dataclass
class SeedArtifacts:
    plain_bytes: int
    gzip_bytes: int
    gpg_bytes: int
    object_key: str


def run_seed_backup(services: Services, workdir: Path) -> tuple[PathResult, SeedArtifacts]:
    workdir.mkdir(parents=True, exist_ok=True)
    plain = workdir / "projectx.sql"
    gz = workdir / "projectx.sql.gz"
    enc = workdir / "projectx.sql.gz.gpg"
    pg_dump = find_program("pg_dump")
    steps: list[StepResult] = []

    def dump() -> None:
        with libpq_environment(services.source) as env, open(plain, "wb") as handle:
            _run([pg_dump], env=env, stdout=handle)

    _, step = measure(services, "S.dump", "pg_dump (plain) > file", dump, staging=workdir)
    plain_bytes = plain.stat().st_size
    step.rate_bytes = step.out_bytes = plain_bytes
    steps.append(step)

    _, step = measure(services, "S.gzip", "gzip file (level 6, 1 thread)", lambda: _run(["gzip", str(plain)]),
                      staging=workdir)
    step.rate_bytes, step.out_bytes = plain_bytes, gz.stat().st_size
    steps.append(step)

    encrypt = _gpg_seed(services, "--trust-model", "always", "--recipient", services.key.email,
                        "--output", str(enc), "--encrypt", str(gz))
    _, step = measure(services, "S.gpg", "gpg --encrypt file", lambda: _run(encrypt), staging=workdir)
    step.rate_bytes, step.out_bytes = gz.stat().st_size, enc.stat().st_size
    steps.append(step)

    object_key = f"seed/{workdir.parent.name}/projectx.sql.gz.gpg"
    spec = {"op": "s3_upload_file", "storage": services.storage_spec, "path": str(enc), "bucket": services.bucket,
            "object_key": object_key}
    _, step = measure_worker(services, "S.upload", "boto3 upload_file (aws s3 cp)", spec, staging=workdir)
    step.rate_bytes = step.out_bytes = enc.stat().st_size
    steps.append(step)
    artifacts = SeedArtifacts(plain_bytes, gz.stat().st_size, enc.stat().st_size, object_key)
    shutil.rmtree(workdir, ignore_errors=True)
    return PathResult("S", steps), artifacts


# -- P: ours ----------------------------------------------------------------------------


def _engine_rss(manifest: Manifest, stage: str) -> dict[str, int]:
    record = manifest.stages.get(stage, {})
    return {stage: int(record["peak_rss_bytes"])} if isinstance(record, dict) and "peak_rss_bytes" in record else {}


def _engine_cpu(manifest: Manifest, stage: str) -> dict[str, float]:
    record = manifest.stages.get(stage, {})
    return {stage: float(record["cpu_seconds"])} if isinstance(record, dict) and "cpu_seconds" in record else {}


def _manifest(value: dict[str, Any]) -> Manifest:
    return Manifest.from_dict(value["manifest"])


def run_staged(
    services: Services, staging_root: Path, *, level: int | None = None, key: str = "P_staged"
) -> tuple[PathResult, Manifest]:
    workdir = staging_root / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    steps: list[StepResult] = []
    zstd = f"zstd -{level} -T0, NOT the default" if level is not None else f"zstd -{CompressionConfig().level} -T0"

    def step(name: str, label: str, op: str, manifest: Manifest | None) -> tuple[Manifest, StepResult]:
        extra: dict[str, Any] = {"workdir": str(workdir)}
        if manifest is not None:
            extra["manifest"] = manifest.to_dict()
        value, result = measure_worker(services, f"{key}.{name}", label,
                                       engine_spec(services, op, level=level, **extra), staging=staging_root)
        steps.append(result)
        return _manifest(value), result

    manifest, dump = step("dump", "dump_to_file", "dump_to_file", None)
    dump_bytes = int(manifest.stages["dump"]["output_bytes"])
    dump.rate_bytes = dump.out_bytes = dump_bytes
    dump.engine_rss, dump.engine_cpu = _engine_rss(manifest, "dump"), _engine_cpu(manifest, "dump")

    manifest, compress = step("compress", f"compress_file ({zstd})", "compress_file", manifest)
    compress.rate_bytes, compress.out_bytes = dump_bytes, int(manifest.stages["compress"]["output_bytes"])
    compress.engine_rss, compress.engine_cpu = _engine_rss(manifest, "compress"), _engine_cpu(manifest, "compress")

    manifest, encrypt = step("encrypt", "encrypt_file (gpg)", "encrypt_file", manifest)
    encrypt.rate_bytes, encrypt.out_bytes = compress.out_bytes, manifest.size
    encrypt.engine_rss, encrypt.engine_cpu = _engine_rss(manifest, "encrypt"), _engine_cpu(manifest, "encrypt")

    manifest, upload = step("upload", "upload_artifact (verified)", "upload_artifact", manifest)
    upload.rate_bytes = upload.out_bytes = manifest.size
    backup.remove_workdir(workdir)
    return PathResult(key, steps), manifest


def run_stream(
    services: Services, staging_root: Path, *, level: int | None = None, key: str = "P_stream"
) -> tuple[PathResult, Manifest]:
    staging_root.mkdir(parents=True, exist_ok=True)
    what = "" if level is None else f" (zstd -{level}, NOT the default)"
    value, step = measure_worker(services, key, f"stream_backup: pg_dump | zstd | gpg | upload{what}",
                                 engine_spec(services, "stream_backup", level=level), staging=staging_root)
    manifest = _manifest(value)
    step.rate_bytes = step.out_bytes = manifest.size
    for stage in ("dump", "compress", "encrypt"):
        step.engine_rss.update(_engine_rss(manifest, stage))
        step.engine_cpu.update(_engine_cpu(manifest, stage))
    return PathResult(key, [step]), manifest


# -- R: restore -------------------------------------------------------------------------


def _fresh_database(services: Services, name: str) -> PgConnInfo:
    services.cluster.drop_database(name)
    services.cluster.create_database(name)
    return services.conn(name)


def run_our_restore(
    services: Services, manifest: Manifest, decryption: DecryptionKey, workdir: Path, dbname: str
) -> tuple[PathResult, PgConnInfo]:
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "restore.dump"
    target = _fresh_database(services, dbname)
    spec: dict[str, Any] = {
        "op": "fetch_plaintext", "storage": services.storage_spec, "manifest": manifest.to_dict(),
        "target": str(archive),
        "decryption": {"armored": decryption.armored_private_key, "passphrase": decryption.passphrase},
    }
    value, fetch = measure_worker(services, "R_ours.fetch", "fetch_plaintext (download | gpg -d | zstd -d)", spec,
                                  staging=workdir)
    plaintext = int(value["value"]["plaintext_bytes"])
    fetch.rate_bytes, fetch.out_bytes = plaintext, plaintext
    spec = {"op": "restore_archive", "archive": str(archive), "into": _conn_spec(target), "jobs": RESTORE_JOBS}
    _, load = measure_worker(services, "R_ours.restore", f"restore_archive (pg_restore -j {RESTORE_JOBS})", spec,
                             staging=workdir)
    load.rate_bytes = plaintext
    shutil.rmtree(workdir, ignore_errors=True)
    return PathResult("R_ours", [fetch, load]), target


def run_seed_restore(
    services: Services, seed: SeedArtifacts, workdir: Path, dbname: str
) -> tuple[PathResult, PgConnInfo]:
    workdir.mkdir(parents=True, exist_ok=True)
    enc = workdir / "projectx.sql.gz.gpg"
    gz = workdir / "projectx.sql.gz"
    target = _fresh_database(services, dbname)
    steps: list[StepResult] = []

    spec = {"op": "s3_download_file", "storage": services.storage_spec, "path": str(enc), "bucket": services.bucket,
            "object_key": seed.object_key}
    _, step = measure_worker(services, "R_seed.download", "boto3 download_file", spec, staging=workdir)
    step.rate_bytes = step.out_bytes = seed.gpg_bytes
    steps.append(step)

    # Cold, like ours (a fresh keyring per restore): no agent holding the unlocked key from earlier.
    subprocess.run(["gpgconf", "--homedir", str(services.seed_gnupghome), "--kill", "gpg-agent"],
                   capture_output=True, check=False)
    decrypt = _gpg_seed(services, "--pinentry-mode", "loopback", "--passphrase-file",
                        str(services.seed_gnupghome / "passphrase"), "--output", str(gz), "--decrypt", str(enc))
    _, step = measure(services, "R_seed.decrypt", "gpg --decrypt file", lambda: _run(decrypt), staging=workdir)
    step.rate_bytes, step.out_bytes = seed.gpg_bytes, gz.stat().st_size
    steps.append(step)

    psql = find_program("psql")

    def load() -> None:
        with libpq_environment(target) as env:
            gunzip = subprocess.Popen(["gunzip", "-c", str(gz)], stdout=subprocess.PIPE)
            assert gunzip.stdout is not None
            done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                                  stdin=gunzip.stdout, env=env, capture_output=True, check=False)
            gunzip.stdout.close()
            gunzip.wait()
        if done.returncode != 0 or gunzip.returncode != 0:
            raise RuntimeError(f"seed restore failed: {done.stderr.decode(errors='replace')[-2000:]}")

    _, step = measure(services, "R_seed.restore", "gunzip -c | psql (one stream)", load, staging=workdir)
    step.rate_bytes = seed.plain_bytes
    steps.append(step)
    shutil.rmtree(workdir, ignore_errors=True)
    return PathResult("R_seed", steps), target
