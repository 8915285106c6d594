"""What every pgbackup operator shares: the config, the target, the run's staging folder."""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from pgbackup.config import PgBackupConfig, TargetConfig, load_config
from pgbackup.errors import ConfigError
from pgbackup.manifest import Manifest

AUTO_KIND = "auto"


class PgBackupBaseOperator(BaseOperator):
    """Base of the pgbackup step operators.

    :param config_path: the pgbackup YAML file (``None``: ``PGBACKUP_CONFIG`` or ``include/pgbackup.yaml``)
    :param target: the target's name in the config
    :param manifest_task_id: the upstream task whose return value is this run's manifest so far
    """

    template_fields: Sequence[str] = ("target",)
    ui_color = "#d6eaf8"

    def __init__(
        self, *, target: str, config_path: str | None = None, manifest_task_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.config_path = config_path
        self.manifest_task_id = manifest_task_id

    @cached_property
    def config(self) -> PgBackupConfig:
        return load_config(self.config_path)

    @cached_property
    def target_config(self) -> TargetConfig:
        return self.config.target(self.target)

    def workdir(self, context: Any) -> Path:
        """This run's private staging folder for this target."""
        run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", str(context["run_id"]))
        return Path(self.config.staging_dir) / context["dag"].dag_id / run_id / self.target

    def staged_file(self, context: Any, name: str) -> Path:
        """A file an upstream task of this run left in staging, on this worker."""
        path = self.workdir(context) / name
        if not path.exists():
            raise ConfigError(
                f"{self.task_id}: staging file {path} is not on this worker ({socket.gethostname()}). "
                "The staged data path needs every task of a run on one worker's disk; on a multi-worker "
                "executor set the target's data_path: stream"
            )
        return path

    def upstream_manifest(self, context: Any) -> Manifest:
        if not self.manifest_task_id:
            raise ConfigError(f"{self.task_id}: manifest_task_id is not set")
        data = context["ti"].xcom_pull(task_ids=self.manifest_task_id)
        if not data:
            raise ConfigError(f"{self.task_id}: upstream task {self.manifest_task_id} returned no manifest")
        return Manifest.from_dict(data)


def resolve_kind(requested: str, context: Any, config: PgBackupConfig) -> str:
    """``auto`` picks the kind from the schedule slot (06:00 full, 12:00 schema, 18:00 data)."""
    if requested != AUTO_KIND:
        return requested
    dag_run = context.get("dag_run")
    moment = context.get("logical_date") or (dag_run.run_after if dag_run is not None else None)
    run_type = str(getattr(dag_run, "run_type", "")) if dag_run is not None else ""
    if moment is not None and any(t in run_type.lower() for t in ("scheduled", "backfill")):
        kind = config.daily.kind_for_hour_minute(moment.hour, moment.minute)
        if kind:
            return kind
    return "full"
