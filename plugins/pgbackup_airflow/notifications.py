"""Slack alerts through the Slack provider's webhook notifier (no wrapper of our own)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

TASK_FAILED_TEXT = (
    ":red_circle: pgbackup: task `{{ ti.task_id }}` of `{{ dag.dag_id }}` failed "
    "(run `{{ run_id }}`, try {{ ti.try_number }}): {{ exception }}"
)
DEADLINE_MISSED_TEXT = (
    ":hourglass: pgbackup: `{{ dag_run.dag_id }}` run `{{ dag_run.run_id }}` is still not finished "
    "{minutes} minutes after it was queued (deadline missed)"
)


def task_failure_notifier(slack_conn_id: str) -> SlackWebhookNotifier:
    return SlackWebhookNotifier(slack_webhook_conn_id=slack_conn_id, text=TASK_FAILED_TEXT)


def late_run_deadline(slack_conn_id: str, minutes: int) -> DeadlineAlert:
    """A Deadline Alert (Airflow 3's SLA replacement) posting to Slack from the triggerer."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            SlackWebhookNotifier,
            kwargs={"slack_webhook_conn_id": slack_conn_id, "text": DEADLINE_MISSED_TEXT.format(minutes=minutes)},
        ),
    )
