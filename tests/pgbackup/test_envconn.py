"""AIRFLOW_CONN_* values parse here exactly as Airflow parses them, with no Airflow imported."""

from __future__ import annotations

import json

import pytest

from pgbackup import envconn
from pgbackup.errors import ConfigError

URIS = [
    "postgresql://backup%40user:p%40ss%3Aw%2Frd@db.abc.supabase.co:5432/postgres?sslmode=require",
    "postgres://u:p@localhost/my%20db",
    "aws://AKIA:se%2Fcret@?region_name=eu-west-1&endpoint_url=http%3A%2F%2F127.0.0.1%3A9000",
    "google-cloud-platform://?__extra__=%7B%22project%22%3A+%22p1%22%7D",
    "slackwebhook://:T000%2FB000%2Fxyz@hooks.slack.com",
    "http://https://user:pw@example.com:8443/path",
    "generic://:phrase@?private_key=-----BEGIN+PGP+PRIVATE+KEY+BLOCK-----",
]


@pytest.mark.parametrize("uri", URIS)
def test_uri_parses_as_airflow_does(uri: str) -> None:
    from airflow.models.connection import Connection  # the reference, in the test only

    ours = envconn.parse_uri("x", uri)
    theirs = Connection(conn_id="x", uri=uri)
    assert (ours.conn_type, ours.host, ours.port, ours.login, ours.password, ours.schema) == (
        theirs.conn_type,
        theirs.host or None,
        theirs.port,
        theirs.login or None,
        theirs.password or None,
        theirs.schema or None,
    )
    assert ours.extra == theirs.extra_dejson


def test_json_format_and_lookup_by_env_name() -> None:
    value = json.dumps(
        {"conn_type": "postgres", "host": "db", "port": "6432", "login": "u", "password": "s3cret",
         "schema": "app", "extra": {"sslmode": "verify-full"}}
    )
    conn = envconn.lookup("projectx_db", {"AIRFLOW_CONN_PROJECTX_DB": value})
    assert conn is not None
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        "postgres", "db", 6432, "u", "s3cret", "app"
    )
    assert conn.extra == {"sslmode": "verify-full"}
    assert "s3cret" not in repr(conn)
    assert envconn.lookup("missing", {}) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"conn_type": "postgres", "port": "abc"}', "port must be an integer"),
        ('{"conn_type": "postgres", "extra": "[1]"}', "extra must be a JSON object"),
        ('{"conn_type": "postgres", "hostname": "x"}', "unknown field(s) hostname"),
        ("{not json", "not valid JSON"),
        ("just-a-host", "expected <conn-type>://"),
        ("postgres://h:99999/db", "port is not a number"),
    ],
)
@pytest.mark.fault("malformed AIRFLOW_CONN_* value", "ConfigError naming the variable and the problem; no secret shown")
def test_malformed_values_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        envconn.lookup("projectx_db", {"AIRFLOW_CONN_PROJECTX_DB": value})
    assert "AIRFLOW_CONN_PROJECTX_DB" in str(raised.value)
    assert message in str(raised.value)
