"""data_path auto: staged on a single machine, streamed wherever tasks may land on different workers."""

from __future__ import annotations

from typing import Any

import pytest

from pgbackup.config import PgBackupConfig, parse_config
from pgbackup.errors import ConfigError
from pgbackup_airflow.executors import configured_executors, executor_names, resolve_data_path


def config(**target: Any) -> PgBackupConfig:
    data = {
        "targets": [{"name": "app", "postgres_conn_id": "app_db", "validation": {"scratch_conn_id": "scratch"},
                     **target}],
        "destinations": [{"name": "s3", "type": "s3", "primary": True, "conn_id": "aws", "bucket": "backups"}],
        "encryption": {"recipients": ["ops@example.com"], "public_key_files": ["/keys/ops.asc"],
                       "decryption_key_conn_id": "gpg"},
    }
    return parse_config(data, "/etc/pgbackup.yaml")


def resolve(executor: str, **target: Any) -> str:
    cfg = config(**target)
    return resolve_data_path(cfg, cfg.targets[0], executor_names(executor))


def test_auto_is_the_default() -> None:
    assert config().targets[0].data_path == "auto"


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        ("LocalExecutor", "staged"),
        ("SequentialExecutor", "staged"),
        ("", "staged"),  # Airflow's default executor is the LocalExecutor
        ("CeleryExecutor", "stream"),
        ("KubernetesExecutor", "stream"),
        ("airflow.providers.celery.executors.celery_executor.CeleryExecutor", "stream"),
        ("LocalExecutor,CeleryExecutor", "stream"),  # tasks may be sent to either
        ("fast:my_company.executors.EdgeExecutor", "stream"),
    ],
)
def test_auto_follows_the_executor(executor: str, expected: str) -> None:
    assert resolve(executor) == expected


def test_explicit_choices_are_kept_where_they_work() -> None:
    assert resolve("LocalExecutor", data_path="stream") == "stream"
    assert resolve("LocalExecutor", data_path="staged") == "staged"
    assert resolve("CeleryExecutor", data_path="stream") == "stream"


@pytest.mark.fault("data_path staged configured on a multi-worker executor (Celery)",
                   "refused when the DAG is parsed, naming the file, the key, the executor and the fix")
def test_staged_on_a_multi_worker_executor_is_refused_at_parse_time() -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve("CeleryExecutor", data_path="staged")
    message = str(excinfo.value)
    assert message.startswith("/etc/pgbackup.yaml: targets.app.data_path: 'staged'")
    assert "CeleryExecutor" in message and "use data_path auto (the default) or stream" in message


@pytest.mark.fault("a Supabase plain-format target (staged only) on a multi-worker executor",
                   "refused when the DAG is parsed, naming dump_format custom as the fix")
def test_a_target_that_needs_staging_is_refused_on_a_multi_worker_executor() -> None:
    with pytest.raises(ConfigError, match="targets.app.data_path: profile supabase with dump_format plain"):
        resolve("KubernetesExecutor", profile="supabase", dump_format="plain",
                validation={"scratch_conn_id": "scratch", "scratch_template": "platform"})
    assert resolve("LocalExecutor", profile="supabase", dump_format="plain",
                   validation={"scratch_conn_id": "scratch", "scratch_template": "platform"}) == "staged"


def test_the_executor_is_read_from_airflow_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert configured_executors() == ("CeleryExecutor",)
    cfg = config()
    assert resolve_data_path(cfg, cfg.targets[0]) == "stream"
