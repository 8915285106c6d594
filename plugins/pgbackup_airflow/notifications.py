"""Slack alerts through the Slack provider's SlackWebhookNotifier.

Importing the provider's notifier pulls in slack_sdk and aiohttp (about 0.45 s), which
would put every DAG file over its parse budget. ``SlackAlert`` keeps the notifier's shape
(``template_fields``, ``notify`` / ``async_notify``) and builds the provider's notifier
only when a message is actually sent.

Every message is bounded by the config's ``timeouts.read_seconds``: Slack's client has one
timeout, for the connect and for each read (the async client: for the whole call), and
retries once only on a connection error, so a Slack that never answers costs a failure
callback at most about twice that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference

from pgbackup.config import TimeoutsConfig

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
    :param timeout: seconds Slack may take to connect, and to answer (``None``: slack_sdk's 30)
    """

    template_fields: Sequence[str] = ("slack_webhook_conn_id", "text")

    def __init__(self, *, slack_webhook_conn_id: str, text: str, timeout: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slack_webhook_conn_id = slack_webhook_conn_id
        self.text = text
        self.timeout = timeout

    def _provider_notifier(self) -> Any:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(
            slack_webhook_conn_id=self.slack_webhook_conn_id, text=self.text, timeout=self.timeout
        )

    def notify(self, context: Any) -> None:
        self._provider_notifier().notify(context)

    async def async_notify(self, context: Any) -> None:
        await self._provider_notifier().async_notify(context)


class TaskFailureAlert:
    """``on_failure_callback``: a fresh notifier per failure.

    A notifier renders its template into itself, so one shared instance would repeat the
    first failure's text for every later one in the same process.
    """

    def __init__(self, slack_conn_id: str, timeout: int | None = None) -> None:
        self.slack_conn_id = slack_conn_id
        self.timeout = timeout

    def __call__(self, context: Any) -> None:
        SlackAlert(slack_webhook_conn_id=self.slack_conn_id, text=TASK_FAILED_TEXT, timeout=self.timeout)(context)


def slack_timeout(timeouts: TimeoutsConfig) -> int:
    """Slack's client takes whole seconds."""
    return max(1, math.ceil(timeouts.read_seconds))


def task_failure_notifier(slack_conn_id: str, timeouts: TimeoutsConfig) -> TaskFailureAlert:
    return TaskFailureAlert(slack_conn_id, slack_timeout(timeouts))


def late_run_deadline(slack_conn_id: str, minutes: float, dag_id: str, timeouts: TimeoutsConfig) -> DeadlineAlert:
    """A Deadline Alert (Airflow 3's replacement for SLAs) that posts to Slack from the triggerer."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            SlackAlert,
            kwargs={
                "slack_webhook_conn_id": slack_conn_id,
                "text": DEADLINE_MISSED_TEXT.format(dag_id=dag_id, minutes=f"{minutes:g}"),
                "timeout": slack_timeout(timeouts),
            },
        ),
    )
