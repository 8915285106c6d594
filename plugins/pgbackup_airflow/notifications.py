"""Slack alerts through the Slack provider's SlackWebhookNotifier.

Importing the provider's notifier pulls in slack_sdk and aiohttp (about 0.45 s), which
would put every DAG file over its parse budget. ``SlackAlert`` keeps the notifier's shape
(``template_fields``, ``notify`` / ``async_notify``) and builds the provider's notifier
only when a message is actually sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference

TASK_FAILED_TEXT = (
    ":red_circle: pgbackup: task `{{ ti.task_id }}` of `{{ dag.dag_id }}` failed "
    "(run `{{ run_id }}`, try {{ ti.try_number }}): {{ exception }}"
)
# The triggerer's context has only ``dag_run`` (REST shape: ``dag_run_id``) and ``deadline``.
DEADLINE_MISSED_TEXT = (
    ":hourglass: pgbackup: `{dag_id}` run `{{{{ dag_run.dag_run_id }}}}` is still not finished "
    "{minutes} minutes after it was queued (deadline missed)"
)


class SlackAlert(BaseNotifier):
    """The Slack provider's ``SlackWebhookNotifier``, imported when a message is sent.

    :param slack_webhook_conn_id: a Slack Incoming Webhook connection
    :param text: the message (templated)
    """

    template_fields: Sequence[str] = ("slack_webhook_conn_id", "text")

    def __init__(self, *, slack_webhook_conn_id: str, text: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slack_webhook_conn_id = slack_webhook_conn_id
        self.text = text

    def _provider_notifier(self) -> Any:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(slack_webhook_conn_id=self.slack_webhook_conn_id, text=self.text)

    def notify(self, context: Any) -> None:
        self._provider_notifier().notify(context)

    async def async_notify(self, context: Any) -> None:
        await self._provider_notifier().async_notify(context)


class TaskFailureAlert:
    """``on_failure_callback``: a fresh notifier per failure.

    A notifier renders its template into itself, so one shared instance would repeat the
    first failure's text for every later one in the same process.
    """

    def __init__(self, slack_conn_id: str) -> None:
        self.slack_conn_id = slack_conn_id

    def __call__(self, context: Any) -> None:
        SlackAlert(slack_webhook_conn_id=self.slack_conn_id, text=TASK_FAILED_TEXT)(context)


def task_failure_notifier(slack_conn_id: str) -> TaskFailureAlert:
    return TaskFailureAlert(slack_conn_id)


def late_run_deadline(slack_conn_id: str, minutes: float, dag_id: str) -> DeadlineAlert:
    """A Deadline Alert (Airflow 3's replacement for SLAs) that posts to Slack from the triggerer."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            SlackAlert,
            kwargs={
                "slack_webhook_conn_id": slack_conn_id,
                "text": DEADLINE_MISSED_TEXT.format(dag_id=dag_id, minutes=f"{minutes:g}"),
            },
        ),
    )
