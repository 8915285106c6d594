"""pg_restore_manual's trigger form: safe defaults, sections, and every bad input refused with a
message that names the problem (before anything is read or touched)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgbackup.config import load_config
from pgbackup.errors import ConfigError
from pgbackup_airflow.operators.restore import RestoreInputs, approval_body
from pgbackup_airflow.restore_dag import build_restore_dag, restore_params


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    config = {
        "targets": [
            {
                "name": "projectx",
                "postgres_conn_id": "projectx_db",
                "profile": "plain",
                "validation": {"scratch_conn_id": "scratch"},
            },
            {
                "name": "other",
                "postgres_conn_id": "other_db",
                "profile": "plain",
                "validation": {"scratch_conn_id": "scratch"},
            },
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(tmp_path / "b")},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "aws", "bucket": "backups"},
        ],
        "encryption": {"recipients": ["a@b.example"], "public_key_files": ["key.asc"], "decryption_key_conn_id": "gpg"},
    }
    path = tmp_path / "pgbackup.yaml"
    path.write_text(json.dumps(config))
    return str(path)


def defaults(config_path: str) -> dict[str, Any]:
    return {name: param.value for name, param in restore_params(load_config(config_path)).items()}


def test_the_form_defaults_are_the_safe_choices(config_path: str) -> None:
    params = restore_params(load_config(config_path))
    values = {name: p.value for name, p in params.items()}
    assert values["backup"] == "latest_verified"
    assert values["into"] == "new_database"
    assert values["confirm_overwrite"] is False
    assert values["mode"] == "full"
    assert values["destination"] == "s3"  # the primary
    assert values["target"] == "projectx"
    # Every field has a title, a description and a section; the dropdowns say what each value means.
    for name, param in params.items():
        schema = param.schema
        assert schema.get("title") and param.description and schema.get("section"), name
    assert params["backup"].schema["values_display"]["latest_verified"] == "Latest verified backup"
    assert set(params["destination"].schema["enum"]) == {"local", "s3"}
    inputs = RestoreInputs.from_params(values, load_config(config_path))
    assert not inputs.overwrite and inputs.choice.backup_id == "latest" and inputs.destination == "s3"


def test_the_dag_shape(config_path: str) -> None:
    dag = build_restore_dag(config_path)
    assert dag.schedule is None or str(dag.timetable.summary) in ("None", "")
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    assert upstream == {
        "resolve": [],
        "approve_overwrite": ["resolve"],
        "restore": ["approve_overwrite", "resolve"],
        "audit": ["resolve", "restore"],  # not below the approval: a Reject does not skip the audit
    }
    # It decides from the recorded answer itself (a Reject skips it directly).
    assert dag.task_dict["restore"].trigger_rule == "all_done"
    assert dag.task_dict["audit"].trigger_rule == "all_done"
    # A restore or an approval is never retried by itself (a retry would ask again); reading and recording are.
    assert dag.task_dict["restore"].retries == dag.task_dict["approve_overwrite"].retries == 0
    assert dag.task_dict["resolve"].retries == dag.task_dict["audit"].retries == 2


BAD_INPUTS = [
    ({"backup": "exact_id", "backup_id": "../../etc/passwd"}, "contains a path"),
    (
        {"backup": "exact_id", "backup_id": "projectx-full-1; DROP DATABASE postgres"},
        "characters a backup id never has",
    ),
    ({"backup": "exact_id", "backup_id": "$(rm -rf ~)"}, "characters a backup id never has"),
    ({"backup": "exact_id", "backup_id": None}, "needs the backup's id"),
    ({"backup": "newest_before", "before": None}, "needs a date-time"),
    ({"backup": "newest_before", "before": "yesterday-ish"}, "expected an ISO date"),
    ({"backup": "latest_verified", "backup_id": "../x"}, "contains a path"),
    ({"database": "Robert'); DROP TABLE students;--"}, "is not a valid identifier"),
    ({"database": "template1"}, "is a template database"),
    ({"into": "existing_database", "database": "victim"}, "tick confirm_overwrite"),
    ({"into": "existing_database", "confirm_overwrite": True}, "needs the database's name"),
    ({"mode": "everything"}, "mode 'everything' is not one of"),
    ({"tables": ["public.orders; DELETE FROM x"]}, "expected a name like orders"),
    ({"target": "nope"}, "target 'nope' is not in the config"),
    ({"destination": "ftp"}, "destination 'ftp' is not in the config"),
    ({"mode": "supabase-pitr", "recovery_time": "2026-11-27T12:00Z"}, "choose into existing_database"),
    ({"mode": "supabase-pitr", "into": "existing_database", "confirm_overwrite": True}, "needs the point in time"),
]


@pytest.mark.fault(
    "bad input in pg_restore_manual's trigger form", "refused before anything is read, naming the problem"
)
@pytest.mark.parametrize(
    ("change", "message"), BAD_INPUTS, ids=[f"{i}-{m[:30]}" for i, (_, m) in enumerate(BAD_INPUTS)]
)
def test_bad_input_is_named(config_path: str, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("$", r"\$")):
        RestoreInputs.from_params({**defaults(config_path), **change}, load_config(config_path))


def test_approval_body_names_target_backup_and_consequences() -> None:
    resolved = {
        "mode": "full",
        "target": "projectx",
        "destination": "s3",
        "triggered_by": "alice (Airflow UI/API)",
        "summary": {
            "consequence": "database victim on db:5432 EXISTS and will be overwritten (dropped and recreated) after "
            "a verified safety backup of it",
            "into": "db:5432/victim",
            "backup_id": "projectx-full-20261127T060002.123456Z-9f3a1c07",
            "kind": "full",
            "tier": "daily",
            "created_at": "2026-11-27T06:00:02Z",
            "size": 1234,
            "verified": "passed",
            "verified_at": "2026-11-27T06:03:00Z",
            "restored_from": "s3://b/pg/projectx/daily/x.gpg",
            "mode": "full",
            "tables": [],
            "source_rows": 315000,
            "source_tables": 5,
        },
    }
    body = approval_body(resolved)
    assert "EXISTS and will be overwritten" in body
    assert "db:5432/victim" in body and "projectx-full-20261127T060002.123456Z-9f3a1c07" in body
    assert "315000 rows in 5 tables" in body and "safety backup" in body and "Reject" in body
    assert "alice" in body
