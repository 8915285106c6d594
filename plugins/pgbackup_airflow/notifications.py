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
    ":red_circle: pgbackup: task `{{ ti.task_id }}` of `{{ dag.dag_id }}` failed for "
    "{{ 'target ' ~ task.target if task.target is defined and task.target else 'every target' }} "
    "(run `{{ run_id }}`, try {{ ti.try_number }}): {{ exception }}\nLog: {{ ti.log_url }}"
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

    def __init__(self, slack_conn_id: str, timeout: int | None = None, config_path: str | None = None) -> None:
        self.slack_conn_id = slack_conn_id
        self.timeout = timeout
        self.config_path = config_path

    def __call__(self, context: Any) -> None:
        try:
            SlackAlert(slack_webhook_conn_id=self.slack_conn_id, text=TASK_FAILED_TEXT, timeout=self.timeout)(context)
        finally:
            record_failure_event(context, self.config_path)


def record_failure_event(context: Any, config_path: str | None) -> None:
    """Keep the failure in the primary destination (``events/``), where the monthly report reads
    every failure of its period. Best effort: a storage outage must not hide the Slack alert."""
    import logging

    from pgbackup.config import load_config
    from pgbackup.manifest import iso, utcnow
    from pgbackup.records import record_events
    from pgbackup_airflow.connections import open_destination

    ti, task = context.get("ti"), context.get("task")
    target = getattr(task, "target", None) or None
    # The first line: an audit's or drill's details are in their own records, which the report lists.
    lines = str(context.get("exception")).splitlines() or [""]
    reason = lines[0] + (" (details in the task log)" if len(lines) > 1 else "")
    try:
        config = load_config(config_path)
        event = {
            "at": iso(utcnow()),
            "source": f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}",
            "severity": "error",
            "message": f"failed (try {getattr(ti, 'try_number', '?')}): {reason}"[:2000],
            "target": target,
        }
        primary = config.primary
        record_events([(primary.name, open_destination(primary, config.timeouts))], event["at"], [event])
    except Exception as exc:  # noqa: BLE001 - whatever broke, the Slack alert above has been tried
        logging.getLogger(__name__).warning("could not record the failure event: %s", exc)


def send_slack(slack_conn_id: str | None, text: str, timeouts: TimeoutsConfig) -> bool:
    """Post ``text`` as it is (no template rendering); False when no Slack connection is configured."""
    if not slack_conn_id:
        return False
    SlackAlert(slack_webhook_conn_id=slack_conn_id, text=text, timeout=slack_timeout(timeouts)).notify({})
    return True


def slack_timeout(timeouts: TimeoutsConfig) -> int:
    """Slack's client takes whole seconds."""
    return max(1, math.ceil(timeouts.read_seconds))


def task_failure_notifier(
    slack_conn_id: str, timeouts: TimeoutsConfig, config_path: str | None = None
) -> TaskFailureAlert:
    return TaskFailureAlert(slack_conn_id, slack_timeout(timeouts), config_path)


def late_run_deadline(
    slack_conn_id: str, minutes: float, dag_id: str, timeouts: TimeoutsConfig, what: str = ""
) -> DeadlineAlert:
    """A Deadline Alert (Airflow 3's replacement for SLAs) that posts to Slack from the triggerer.

    :param what: which deadline it is, for the message (``validated by 04:00``)
    """
    text = DEADLINE_MISSED_TEXT.format(dag_id=dag_id, minutes=f"{minutes:g}")
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            SlackAlert,
            kwargs={
                "slack_webhook_conn_id": slack_conn_id,
                "text": text.replace("(deadline missed)", f"(deadline missed: {what})") if what else text,
                "timeout": slack_timeout(timeouts),
            },
        ),
    )
