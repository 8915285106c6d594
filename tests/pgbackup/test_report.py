"""The monthly report, rendered from a backup history stored in real storage (moto's S3 as
the primary, a local directory), checked for what a reader must learn from it."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import pytest

from devtools.report_sample import (
    SampleHistory,
    build_sample,
    sample_events,
    write_audit,
    write_drills,
    write_history,
)
from devtools.services import MotoServer
from pgbackup.catalog import Catalog
from pgbackup.manifest import Manifest, iso
from pgbackup.report import (
    ReportEvent,
    ReportInputs,
    ReportSettings,
    gather_inputs,
    human_duration,
    render_report,
    store_report,
    tier_health,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(moto: MotoServer) -> Storage:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return open_storage(
        f"s3://{bucket}/pgbackup", endpoint_url=moto.endpoint_url, force_path_style=True, **moto.credentials
    )


def text_of(html: str) -> str:
    """The page's visible text, whitespace collapsed (what a reader sees, not the markup)."""
    without_svg = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", without_svg)).replace(" ,", ",")


def test_report_from_s3_says_what_a_reader_needs(s3: Storage) -> None:
    html, history = build_sample(s3)
    text = text_of(html)
    run = history.run_at

    # Self-contained: nothing to fetch, nothing to run.
    for forbidden in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url("):
        assert forbidden not in html.lower()
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}  # a namespace, not a fetch
    assert html.count("<svg") == 6  # phases, RTO trend, growth, sizes, ratios, durations

    assert f"Backup strategy review: {run:%B %Y}" in text
    assert "Needs attention" in text  # an outage and a failed restore test, all since recovered
    # Per tier: counts, the newest verified backup, the RPO actually achieved against the objective.
    daily = [m for m in history.written if m.tier == "daily"]
    assert f"daily {len(daily)} {sum(m.verified for m in daily)} " in text
    assert "2.5 days 26 h breached in period 1 failed validation" in text  # the two-day outage
    assert "weekly 13 13" in text and "7.0 days 8.0 days met" in text
    newest_monthly = max(m.created for m in history.written if m.tier == "monthly")
    assert f"{newest_monthly:%Y-%m-%d %H:%M} UTC" in text
    # This period's drill and the trend of past ones.
    assert "objectives met" in text and "Drill RTO over time" in html
    assert text.count("passed") >= 7 and "Drill history" in text
    # The audit, every failure and alert, and the audit finding.
    assert "gcs, local, s3, supabase_storage 270 61 GB 33.5 MB/s 0 / 1 passed" in text
    for event in sample_events(history):
        assert escape(event.message, quote=False) in html
    assert "failed its restore test (tables differ: public.orders)" in text
    assert "upload_in_flight gcs:projectx/monthly/" in text

    key = store_report(html, s3, f"{run:%Y-%m}")
    assert key == f"reports/{run:%Y-%m}.html"
    assert s3.get_bytes(key) == html.encode()
    assert store_report(html, s3, f"{run:%Y-%m}") == f"reports/{run:%Y-%m}_2.html"  # never replaces one


def _healthy(storage: Storage) -> datetime:
    """A month with nothing wrong; returns when its report is written."""
    history = write_history(storage, SampleHistory(outage_days=(), failed_validation_day=None))
    write_drills(storage, history)
    write_audit(storage, history)
    return history.run_at + timedelta(hours=1)


def test_a_healthy_month_says_so(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    at = _healthy(storage)
    html = render_report(gather_inputs(storage, ["projectx"]), ReportSettings.for_run(at), now=at)
    text = text_of(html)
    assert "Healthy: every backup objective held" in text
    assert "breached" not in text and "No failures, alerts or audit findings" not in text  # the audit warning shows


def test_no_drill_and_a_stale_tier_put_the_target_at_risk(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    history = write_history(storage, SampleHistory(outage_days=tuple(range(1, 5)), failed_validation_day=None))
    at = history.run_at + timedelta(hours=1)
    html = render_report(gather_inputs(storage, ["projectx"]), ReportSettings.for_run(at), now=at)
    text = text_of(html)
    assert "At risk" in text
    assert "projectx: no recovery drill in this period." in text
    assert "No audit of the stored backups ran in this period." in text
    assert "projectx: its newest verified daily backup is 4.4 days old (objective 26 h)." in text
    assert "breached now" in text


def test_every_text_from_storage_or_events_is_escaped(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    at = _healthy(storage)
    hostile = ReportEvent(iso(at - timedelta(days=1)), "task failure", "error", "<script>alert(1)</script> & co", "x<y")
    html = render_report(gather_inputs(storage, ["projectx"], [hostile]), ReportSettings.for_run(at), now=at)
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "x&lt;y" in html


def test_worst_rpo_gap_counts_from_the_last_point_before_the_period_to_now() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)

    def backup(day: float, verified: bool = True, kind: str = "full") -> Manifest:
        created = start + timedelta(days=day)
        return Manifest(
            backup_id=f"b{day}{kind}",
            target="t",
            kind=kind,
            tier="daily",
            object_key=f"t/{day}{kind}",
            created_at=iso(created),
            artifact={"sha256": "0" * 64, "size": 1},
            verification={"status": "passed" if verified else "failed"},
        )

    catalog = Catalog(
        backups=[
            backup(-0.5),  # before the period: the gap to the first in-period point counts
            backup(1),
            backup(2, verified=False),  # not a recovery point
            backup(2.5, kind="schema"),  # not a recovery point either
            backup(4),
            backup(4.5, kind="data"),
        ]
    )
    settings = ReportSettings(month="2026-11", period_start=start, period_end=start + timedelta(days=6))
    health = tier_health(catalog, "daily", timedelta(hours=26), settings, now=start + timedelta(days=5))
    assert health.worst_gap == timedelta(days=3)  # day 1 -> day 4
    assert health.age == timedelta(days=0.5) and health.newest_verified is not None
    assert health.newest_verified.kind == "data"
    assert health.failed_this_month == 1 and health.state == "warn"  # breached in the period, fine now
    empty = tier_health(Catalog(), "weekly", timedelta(days=8), settings, now=start)
    assert empty.state == "bad" and empty.worst_gap is None


def test_settings_are_checked() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        ReportSettings(month="November", period_start=at - timedelta(days=1), period_end=at)
    with pytest.raises(ValueError, match="period_start < period_end"):
        ReportSettings(month="2026-11", period_start=at, period_end=at)
    with pytest.raises(ValueError, match="no objective for tier"):
        ReportSettings.for_run(at, rpo={"daily": timedelta(hours=26)})
    assert human_duration(0) == "0" and human_duration(900) == "15 min" and human_duration(3600) == "1 h"
    assert isinstance(ReportInputs(catalogs={}).audits, tuple)


def test_unreadable_manifests_in_the_catalog_are_reported(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    at = _healthy(storage)
    key = "projectx/daily/2026-01-01/backup_20260101_060000_ab12.dump.zst.gpg"
    storage.put_bytes(key, b"x")
    storage.put_bytes(key + ".manifest.json", b"{not json")
    text = text_of(render_report(gather_inputs(storage, ["projectx"]), ReportSettings.for_run(at), now=at))
    assert f"unreadable manifest {key}.manifest.json" in text


def test_charts_scale_to_readable_steps_and_say_when_empty() -> None:
    from pgbackup.svgcharts import BYTE_STEPS, DURATION_STEPS, Series, line_chart, nice_step

    assert nice_step(1000, steps=DURATION_STEPS) == 300  # 5-minute ticks, not 250 s
    assert nice_step(330 * 1024**2, steps=BYTE_STEPS) == 100 * 1024**2
    assert nice_step(7.3) == 2
    empty = line_chart([Series("x")], title="Sizes", empty_text="no backups yet")
    assert "no backups yet" in empty and "<circle" not in empty


def test_event_records_are_checked_before_they_are_stored(tmp_path: Path) -> None:
    from pgbackup.records import read_events, record_events

    storage = open_storage(f"file://{tmp_path}")
    with pytest.raises(ValueError, match="severity in"):
        record_events(
            [("local", storage)],
            "2026-11-01T00:00:00Z",
            [{"at": "x", "source": "s", "severity": "bad", "message": "m"}],
        )
    event = {"at": "2026-11-01T00:00:00Z", "source": "task failure", "severity": "error", "message": "dump failed"}
    record_events([("local", storage)], event["at"], [event])
    record_events([("local", storage)], event["at"], [event])  # same second: a second record, not an overwrite
    assert read_events(storage) == [event, event]
