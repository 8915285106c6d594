"""Which data path a target takes, decided from the executor when the DAG file is parsed.

The staged chain (dump -> compress -> encrypt -> upload as separate tasks) hands files
between tasks through the worker's staging disk, so every task of a run must run on one
machine: true of the LocalExecutor and SequentialExecutor only. Anywhere else (Celery,
Kubernetes, Edge, Astro's executors, or a mix of executors) the tasks of one run may land
on different workers with no shared disk, so ``data_path: auto`` (the default) takes the
streamed chain there: one task dumps, compresses, encrypts and uploads to the primary with
kernel pipes, and ``replicate`` copies the stored ciphertext to the other destinations.
Nothing but ciphertext ever leaves a worker.

A config that asks for ``staged`` on a multi-worker executor is refused at parse time: it
would fail on the first run whose tasks are spread out (or, worse, succeed by luck).
"""

from __future__ import annotations

from collections.abc import Iterable

from pgbackup.config import PgBackupConfig, TargetConfig
from pgbackup.errors import ConfigError

# Executors whose tasks all run on the scheduler's machine.
SINGLE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


def configured_executors() -> tuple[str, ...]:
    """The executors named by ``[core] executor`` (a comma-separated list in Airflow 3)."""
    from airflow.configuration import conf

    return executor_names(conf.get("core", "executor"))


def executor_names(setting: str) -> tuple[str, ...]:
    """``"alias:my.module.CeleryExecutor, LocalExecutor"`` -> ``("CeleryExecutor", "LocalExecutor")``."""
    names = [item.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1] for item in setting.split(",") if item.strip()]
    return tuple(names) or ("LocalExecutor",)  # Airflow's default when unset


def single_machine(executors: Iterable[str]) -> bool:
    return all(name in SINGLE_MACHINE_EXECUTORS for name in executors)


def resolve_data_path(config: PgBackupConfig, target: TargetConfig, executors: Iterable[str] | None = None) -> str:
    """``staged`` or ``stream`` for ``target``; a :class:`ConfigError` naming the file, the key and
    the executor when the configured path cannot work under this executor."""
    executors = tuple(configured_executors() if executors is None else executors)
    if single_machine(executors):
        return "stream" if target.data_path == "stream" else "staged"
    where = f"{config.source_file}: targets.{target.name}.data_path"
    running = ", ".join(executors)
    if target.data_path == "staged":
        raise ConfigError(
            f"{where}: 'staged' hands files between tasks on one worker's disk, but the executor is {running}, "
            "where the tasks of a run may land on different workers with no shared disk; "
            "use data_path auto (the default) or stream"
        )
    if target.profile == "supabase" and target.dump_format == "plain":
        raise ConfigError(
            f"{where}: profile supabase with dump_format plain needs the staged path (the plain file is rendered "
            f"from a filtered custom archive), which cannot run on {running}; use dump_format custom"
        )
    return "stream"
