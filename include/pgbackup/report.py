"""The monthly strategy review: one self-contained HTML page a person can read alone.

Inline CSS, charts as inline SVG (``svgcharts``), no script, no external resource: it
opens from a bucket, an e-mail attachment or a laptop with no network. Per target and
tier it shows what exists, whether the recovery point objective held all month (the
worst gap between verified recovery points, not just today's age), the drill's RTO and
its trend, sizes, compression ratios and durations over time, and every failure, alert
and audit finding of the month.

Stored in the primary destination at ``reports/YYYY-MM.html`` (create-only).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any

from pgbackup.audit import read_audits
from pgbackup.catalog import Catalog, read_catalog
from pgbackup.drill import PHASES, DrillObjectives, read_drills
from pgbackup.manifest import Manifest, iso, parse_iso, utcnow
from pgbackup.records import read_events, store_new
from pgbackup.storage.base import Storage
from pgbackup.svgcharts import BYTE_STEPS, DURATION_STEPS, Series, Threshold, line_chart, stacked_bar

REPORT_PREFIX = "reports/"
TIERS = ("daily", "weekly", "monthly")
# Worst acceptable gap between verified recovery points. Weekly: 7 days plus a day of slack;
# monthly: first Sundays can be five weeks apart.
DEFAULT_RPO = {"daily": timedelta(hours=26), "weekly": timedelta(days=8), "monthly": timedelta(days=36)}
RECOVERY_KINDS = ("full", "data")  # a schema-only backup recovers no data

OK, WARN, BAD = "ok", "warn", "bad"


@dataclass(frozen=True)
class ReportSettings:
    """:param month: ``YYYY-MM``, the report's name (``reports/YYYY-MM.html``)
    :param period_start: the reviewed period; the monthly run passes its previous run's time
    :param period_end: usually the run's time
    :param rpo: tier -> worst acceptable gap between verified recovery points
    :param primary: how the primary destination is named in the text
    """

    month: str
    period_start: datetime
    period_end: datetime
    rpo: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_RPO))
    rto: DrillObjectives = field(default_factory=DrillObjectives)
    tiers: tuple[str, ...] = TIERS
    primary: str = "primary destination"
    title: str = "Backup strategy review"

    def __post_init__(self) -> None:
        try:
            datetime.strptime(self.month, "%Y-%m")
        except (TypeError, ValueError):
            raise ValueError(f"ReportSettings.month: expected YYYY-MM like '2026-12', got {self.month!r}") from None
        if self.period_start.tzinfo is None or self.period_end.tzinfo is None or self.period_start >= self.period_end:
            raise ValueError(
                "ReportSettings: expected timezone-aware period_start < period_end, "
                f"got {self.period_start} and {self.period_end}"
            )
        missing = [t for t in self.tiers if t not in self.rpo]
        if missing:
            raise ValueError(f"ReportSettings.rpo: no objective for tier(s) {missing}")

    @classmethod
    def for_run(cls, run_at: datetime, days: int = 31, **options: Any) -> ReportSettings:
        """The report a monthly run at ``run_at`` writes: named after its month, covering ``days`` before it."""
        return cls(month=f"{run_at:%Y-%m}", period_start=run_at - timedelta(days=days), period_end=run_at, **options)

    @property
    def start(self) -> datetime:
        return self.period_start

    @property
    def end(self) -> datetime:
        return self.period_end

    def covers(self, at: str | None) -> bool:
        try:
            return at is not None and self.period_start <= parse_iso(at) <= self.period_end
        except ValueError:
            return False

    @property
    def period_text(self) -> str:
        return f"{self.period_start:%Y-%m-%d %H:%M} to {self.period_end:%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class ReportEvent:
    """A failure or alert of the month, from Airflow or the monitor (``severity``: error, warning, info)."""

    at: str
    source: str
    severity: str
    message: str
    target: str | None = None


@dataclass
class ReportInputs:
    catalogs: Mapping[str, Catalog]  # target -> what the primary destination holds
    drills: Mapping[str, Sequence[dict[str, Any]]] = field(default_factory=dict)  # target -> records, oldest first
    audits: Sequence[dict[str, Any]] = ()  # audit records
    events: Sequence[ReportEvent] = ()


def gather_inputs(
    storage: Storage, targets: Iterable[str], events: Sequence[ReportEvent] = (), now: datetime | None = None
) -> ReportInputs:
    """Everything the report needs that lives in the primary destination: catalogs, drill,
    audit and event records (``records.record_events``), plus any ``events`` the caller adds."""
    names = list(targets)
    stored = [
        ReportEvent(str(e["at"]), str(e["source"]), str(e["severity"]), str(e["message"]), e.get("target"))
        for e in read_events(storage)
    ]
    return ReportInputs(
        catalogs={t: read_catalog(storage, t, now=now) for t in names},
        drills={t: read_drills(storage, t) for t in names},
        audits=read_audits(storage),
        events=[*stored, *events],
    )


def store_report(html: str, storage: Storage, month: str) -> str:
    """``reports/YYYY-MM.html`` (``_2``... when the month was already reported)."""
    return store_new(storage, f"{REPORT_PREFIX}{month}", html.encode(), extension=".html")


# -- formatting ----------------------------------------------------------------------------


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f}".removesuffix(".0") + f" {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds == 0:
        return "0"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{hours / 24:.1f} days"


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _badge(state: str, text: str) -> str:
    return f'<span class="badge {state}">{escape(text)}</span>'


# -- what the page says ----------------------------------------------------------------------


@dataclass
class TierHealth:
    tier: str
    total: int
    this_month: int
    verified: int
    failed_this_month: int
    newest_verified: Manifest | None
    age: timedelta | None
    worst_gap: timedelta | None
    objective: timedelta

    @property
    def state(self) -> str:
        if self.newest_verified is None or self.worst_gap is None:
            return BAD
        if self.age is not None and self.age > self.objective:
            return BAD  # breached right now
        if self.worst_gap > self.objective or self.failed_this_month:
            return WARN  # breached during the month, or a backup failed validation
        return OK


def tier_health(
    catalog: Catalog, tier: str, objective: timedelta, settings: ReportSettings, now: datetime
) -> TierHealth:
    window_end = min(settings.end, now)
    backups = catalog.of(tier=tier)
    points = sorted(m.created for m in backups if m.verified and m.kind in RECOVERY_KINDS and m.created <= window_end)
    newest = next((m for m in backups if m.verified and m.kind in RECOVERY_KINDS), None)
    before = [p for p in points if p < settings.start]
    within = [p for p in points if p >= settings.start]
    chain = before[-1:] + within
    worst: timedelta | None = None
    if chain:
        gaps = [b - a for a, b in itertools.pairwise(chain)] + [window_end - chain[-1]]
        worst = max(gaps)
    in_month = [m for m in backups if settings.start <= m.created < settings.end]
    return TierHealth(
        tier=tier,
        total=len(backups),
        this_month=len(in_month),
        verified=sum(1 for m in backups if m.verified),
        failed_this_month=sum(1 for m in in_month if m.verification.get("status") == "failed"),
        newest_verified=newest,
        age=now - newest.created if newest else None,
        worst_gap=worst,
        objective=objective,
    )


def _compression_ratio(manifest: Manifest) -> float | None:
    compress = manifest.stages.get("compress") or {}
    if isinstance(compress.get("ratio"), int | float):
        return float(compress["ratio"])
    dumped = (manifest.stages.get("dump") or {}).get("output_bytes")
    if isinstance(dumped, int) and manifest.size:
        return round(dumped / manifest.size, 3)
    return None


def _backup_seconds(manifest: Manifest) -> float | None:
    total = manifest.stages.get("total_seconds")
    if isinstance(total, int | float):
        return float(total)
    parts = [s.get("seconds") for name, s in manifest.stages.items() if isinstance(s, dict) and name != "render"]
    seconds = [p for p in parts if isinstance(p, int | float)]
    return float(sum(seconds)) if seconds else None


def _month_events(inputs: ReportInputs, settings: ReportSettings) -> list[ReportEvent]:
    """The caller's events plus what the stored records say went wrong in the period."""

    in_month = settings.covers
    events = [e for e in inputs.events if in_month(e.at)]
    for target, catalog in inputs.catalogs.items():
        # Not dated by the period: they are wrong now, whenever they were written.
        at = iso(settings.period_end)
        for entry in catalog.unreadable:
            events.append(
                ReportEvent(at, "catalog", "error", f"unreadable manifest {entry.key}: {entry.reason}", target)
            )
        for suspect in catalog.suspect:
            events.append(
                ReportEvent(at, "catalog", "warning", f"suspect backup {suspect.key}: {suspect.reason}", target)
            )
        for manifest in catalog.backups:
            if manifest.verification.get("status") == "failed" and in_month(manifest.created_at):
                mismatches = manifest.verification.get("mismatches") or []
                detail = f" (tables differ: {', '.join(mismatches[:5])})" if mismatches else ""
                events.append(
                    ReportEvent(
                        manifest.created_at,
                        "validation",
                        "error",
                        f"{manifest.kind} backup {manifest.backup_id} failed its restore test{detail}",
                        target,
                    )
                )
        for record in inputs.drills.get(target, []):
            if not in_month(record.get("started_at", "")):
                continue
            if record.get("status") != "passed":
                events.append(
                    ReportEvent(record["started_at"], "drill", "error", f"drill failed: {record.get('error')}", target)
                )
            elif not record.get("objectives_met", True):
                events.append(
                    ReportEvent(
                        record["started_at"],
                        "drill",
                        "warning",
                        f"drill RTO {human_duration(record.get('rto_seconds'))} missed an objective",
                        target,
                    )
                )
    for audit in inputs.audits:
        if not in_month(audit.get("started_at", "")):
            continue
        for finding in audit.get("findings", []):
            where = ":".join(x for x in (finding.get("destination"), finding.get("key")) if x)
            events.append(
                ReportEvent(
                    audit["started_at"],
                    "audit",
                    finding.get("severity", "error"),
                    f"{finding.get('kind')} {where}: {finding.get('detail')}",
                    finding.get("target"),
                )
            )
    return sorted(events, key=lambda e: (e.at, e.source, e.message))


# -- rendering ----------------------------------------------------------------------------------

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#24292f;font:14px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',
Helvetica,Arial,sans-serif}
main{max-width:1000px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 2px}
h2{font-size:19px;margin:34px 0 10px;padding-bottom:6px;border-bottom:1px solid #d8dee4}
h3{font-size:15px;margin:22px 0 8px}
.sub{color:#57606a;margin:0 0 18px}
.verdict{border-radius:8px;padding:16px 20px;margin:16px 0 8px;border:1px solid;font-size:15px}
.verdict strong{font-size:17px;display:block;margin-bottom:4px}
.verdict.ok{background:#dafbe1;border-color:#4ac26b}.verdict.warn{background:#fff8c5;border-color:#d4a72c}
.verdict.bad{background:#ffebe9;border-color:#ff8182}
.verdict ul{margin:6px 0 0;padding-left:20px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:14px 0}
.card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:12px 14px}
.card .k{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin-top:2px}.card .n{color:#57606a;font-size:12px}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d8dee4;border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eaeef2;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa;font-size:12px;color:#57606a;text-transform:uppercase;letter-spacing:.03em}
tr:last-child td{border-bottom:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eaeef2;padding:1px 4px;border-radius:4px;
word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.badge.ok{background:#dafbe1;color:#116329}.badge.warn{background:#fff8c5;color:#7d4e00}
.badge.bad{background:#ffebe9;color:#a40e26}.badge.info{background:#ddf4ff;color:#0550ae}
.charts{display:grid;grid-template-columns:1fr;gap:12px}
.chart{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:10px 12px}
.chart svg{width:100%;height:auto}
.muted{color:#57606a}.empty{color:#57606a;font-style:italic}
footer{margin-top:40px;color:#57606a;font-size:12px}
@media print{body{background:#fff}.chart,table,.card{break-inside:avoid}}
"""


def _tier_table(rows: list[TierHealth], now: datetime) -> str:
    body = []
    for row in rows:
        state_text = {OK: "met", WARN: "breached in period", BAD: "breached now"}[row.state]
        newest = (
            f"{_when(row.newest_verified.created)}<br><span class='muted'>{human_duration(row.age.total_seconds())} ago"
            f" · {row.newest_verified.kind}</span>"
            if row.newest_verified and row.age is not None
            else "<span class='empty'>none</span>"
        )
        worst = human_duration(row.worst_gap.total_seconds()) if row.worst_gap is not None else "—"
        body.append(
            "<tr>"
            f"<td><strong>{escape(row.tier)}</strong></td>"
            f"<td class='num'>{row.total}</td><td class='num'>{row.verified}</td><td class='num'>{row.this_month}</td>"
            f"<td>{newest}</td>"
            f"<td class='num'>{worst}</td><td class='num'>{human_duration(row.objective.total_seconds())}</td>"
            f"<td>{_badge(row.state, state_text)}"
            + (
                f"<br><span class='muted'>{row.failed_this_month} failed validation</span>"
                if row.failed_this_month
                else ""
            )
            + "</td></tr>"
        )
    return (
        "<table><thead><tr><th>Tier</th><th>Backups</th><th>Verified</th><th>In period</th>"
        "<th>Newest verified</th><th>Worst RPO gap</th><th>RPO objective</th><th>RPO</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _phases(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The drill's phases in the order they ran (stored JSON sorts keys)."""
    found = record.get("phases") or {}
    order = [p for p in PHASES if p in found] + sorted(p for p in found if p not in PHASES)
    return [(name, float(found[name])) for name in order]


def _drill_section(target: str, records: Sequence[dict[str, Any]], settings: ReportSettings) -> str:
    rto = settings.rto
    this_month = [r for r in records if settings.covers(r.get("started_at"))]
    parts = []
    if not this_month:
        parts.append(
            f"<p>{_badge(BAD, 'no drill')} No recovery drill of <strong>{escape(target)}</strong> ran in this period: "
            "the RTO below is not current.</p>"
        )
    else:
        latest = this_month[-1]
        if latest.get("status") != "passed":
            parts.append(
                f"<p>{_badge(BAD, 'drill failed')} {escape(_when(parse_iso(latest['started_at'])))}: "
                f"{escape(str(latest.get('error')))}</p>"
            )
        else:
            seconds = float(latest.get("rto_seconds") or 0)
            state = OK if latest.get("objectives_met") else BAD
            share = 100 * seconds / rto.critical_seconds
            parts.append(
                f"<p>{_badge(state, 'objectives met' if state == OK else 'objective missed')} "
                f"Restored backup <code>{escape(str(latest.get('backup_id')))}</code> "
                f"({human_bytes(float(latest.get('object_bytes') or 0))} stored, "
                f"{human_bytes(float(latest.get('plaintext_bytes') or 0))} archive, "
                f"{int(latest.get('rows_restored') or 0):,} rows in {int(latest.get('tables_checked') or 0)} tables, "
                f"every count matching the snapshot) into a scratch database in "
                f"<strong>{human_duration(seconds)}</strong>: {share:.1f}% of the critical-data objective "
                f"({human_duration(rto.critical_seconds)}), full-database objective {human_duration(rto.full_seconds)}."
                "</p>"
            )
            phases = _phases(latest)
            show_limit = seconds > rto.critical_seconds / 3
            parts.append(
                "<div class='chart'>"
                + stacked_bar(
                    phases,
                    title=f"Where the {human_duration(seconds)} went",
                    limit=rto.critical_seconds if show_limit else None,
                    limit_label=f"critical objective {human_duration(rto.critical_seconds)}",
                    value_format=human_duration,
                )
                + "</div>"
            )
    past = [r for r in records if r.get("status") == "passed" and r.get("rto_seconds") is not None]
    if past:
        worst = max(float(r["rto_seconds"]) for r in past)
        thresholds = [
            Threshold(rto.critical_seconds, f"critical-data objective {human_duration(rto.critical_seconds)}")
        ]
        if worst > rto.critical_seconds:
            thresholds.append(
                Threshold(rto.full_seconds, f"full objective {human_duration(rto.full_seconds)}", "#9a6700")
            )
        trend = Series("", [(parse_iso(r["started_at"]), float(r["rto_seconds"])) for r in past])
        parts.append(
            "<div class='chart'>"
            + line_chart(
                [trend],
                title="Drill RTO over time",
                y_format=human_duration,
                y_steps=DURATION_STEPS,
                thresholds=thresholds,
            )
            + "</div>"
        )
    if records:
        rows = []
        for record in reversed(records[-12:]):
            ok = record.get("status") == "passed"
            state = OK if ok and record.get("objectives_met") else BAD
            spent = ", ".join(f"{k} {human_duration(v)}" for k, v in _phases(record))
            rows.append(
                f"<tr><td>{escape(_when(parse_iso(record['started_at'])))}</td>"
                f"<td><code>{escape(str(record.get('backup_id') or '—'))}</code></td>"
                f"<td class='num'>{human_duration(record.get('rto_seconds'))}</td><td>{escape(spent)}</td>"
                f"<td>{_badge(state, 'passed' if state == OK else ('slow' if ok else 'failed'))}</td></tr>"
            )
        parts.append(
            "<h3>Drill history</h3><table><thead><tr><th>When</th><th>Backup</th><th>RTO</th><th>Phases</th>"
            f"<th>Result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts)


def _trend_charts(catalog: Catalog, settings: ReportSettings) -> str:
    """Long-term growth from the weekly and monthly tiers, then the period in detail."""
    backups = sorted(catalog.backups, key=lambda m: m.created_at)
    long_term: dict[str, Series] = {}
    sizes: dict[str, Series] = {}
    ratios: dict[str, Series] = {}
    backup_time = Series("backup")
    restore_time = Series("restore test")
    for manifest in backups:
        if manifest.kind == "full" and manifest.tier in ("weekly", "monthly"):
            long_term.setdefault(manifest.tier, Series(manifest.tier)).points.append(
                (manifest.created, float(manifest.size))
            )
        if not settings.start <= manifest.created <= settings.end:
            continue
        label = f"full ({manifest.tier})" if manifest.kind == "full" else f"{manifest.kind}-only"
        if manifest.kind != "schema":  # ~100 KB next to hundreds of MB: a flat line at zero
            sizes.setdefault(label, Series(label)).points.append((manifest.created, float(manifest.size)))
        ratio = _compression_ratio(manifest)
        if ratio is not None:
            name = f"{manifest.kind}-only" if manifest.kind != "full" else "full"
            ratios.setdefault(name, Series(name)).points.append((manifest.created, ratio))
        if manifest.kind == "full":
            seconds = _backup_seconds(manifest)
            if seconds is not None:
                backup_time.points.append((manifest.created, seconds))
            restored = manifest.verification.get("restore_seconds")
            if isinstance(restored, int | float):
                restore_time.points.append((manifest.created, float(restored)))
    charts = [
        line_chart(
            list(long_term.values()),
            title="Growth: stored size of the weekly and monthly full backups kept",
            y_format=human_bytes,
            y_steps=BYTE_STEPS,
            empty_text="no weekly or monthly backups yet",
        ),
        line_chart(
            list(sizes.values()),
            title="Stored size of every backup in the period (compressed, encrypted; schema-only left out)",
            y_format=human_bytes,
            y_steps=BYTE_STEPS,
        ),
        line_chart(
            list(ratios.values()),
            title="Compression ratio in the period (dump bytes / compressed bytes)",
            y_format=lambda v: f"{v:.1f} : 1",
        ),
        line_chart(
            [backup_time, restore_time],
            title="Full backups in the period: backup and restore-test durations",
            y_format=human_duration,
            y_steps=DURATION_STEPS,
        ),
    ]
    return "<div class='charts'>" + "".join(f"<div class='chart'>{c}</div>" for c in charts) + "</div>"


def _audit_section(audits: Sequence[dict[str, Any]], settings: ReportSettings) -> str:
    month = [a for a in audits if settings.covers(a.get("started_at"))]
    if not month:
        return f"<p>{_badge(BAD, 'no audit')} No complete audit of the stored backups ran in this period.</p>"
    rows = []
    for audit in month:
        state = OK if audit.get("status") == "passed" else BAD
        rows.append(
            f"<tr><td>{escape(_when(parse_iso(audit['started_at'])))}</td>"
            f"<td>{escape(', '.join(audit.get('destinations', {})))}</td>"
            f"<td class='num'>{audit.get('backups_checked', 0)}</td>"
            f"<td class='num'>{human_bytes(float(audit.get('bytes_read', 0)))}</td>"
            f"<td class='num'>{audit.get('mb_per_second', 0)} MB/s</td>"
            f"<td class='num'>{audit.get('errors', 0)} / {audit.get('warnings', 0)}</td>"
            f"<td>{_badge(state, 'passed' if state == OK else 'failed')}</td></tr>"
        )
    return (
        "<p>Every stored copy was re-read and its sha256 recomputed against its manifest; copies at the "
        "different destinations were compared; objects without a manifest and manifests without an object "
        "were looked for.</p>"
        "<table><thead><tr><th>When</th><th>Destinations</th><th>Copies</th><th>Re-read</th><th>Speed</th>"
        f"<th>Errors / warnings</th><th>Result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _events_table(events: list[ReportEvent]) -> str:
    if not events:
        return "<p class='empty'>No failures, alerts or audit findings in this period.</p>"
    rows = []
    for event in events:
        state = {"error": BAD, "warning": WARN}.get(event.severity, "info")
        try:
            when = _when(parse_iso(event.at))
        except ValueError:
            when = event.at
        rows.append(
            f"<tr><td style='white-space:nowrap'>{escape(when)}</td><td>{_badge(state, event.severity)}</td>"
            f"<td>{escape(event.source)}</td><td>{escape(event.target or '—')}</td>"
            f"<td>{escape(event.message)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>When</th><th>Severity</th><th>Source</th><th>Target</th><th>What happened</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_report(inputs: ReportInputs, settings: ReportSettings, now: datetime | None = None) -> str:
    """The whole page as one string."""
    now = now or utcnow()
    events = _month_events(inputs, settings)
    health = {
        target: [tier_health(catalog, tier, settings.rpo[tier], settings, now) for tier in settings.tiers]
        for target, catalog in inputs.catalogs.items()
    }
    problems: list[tuple[str, str]] = []  # (state, sentence)
    for target, rows in health.items():
        for row in rows:
            if row.state == BAD:
                what = (
                    f"no verified {row.tier} backup"
                    if row.newest_verified is None
                    else f"its newest verified {row.tier} backup is "
                    f"{human_duration((row.age or timedelta()).total_seconds())} old"
                )
                problems.append((BAD, f"{target}: {what} (objective {human_duration(row.objective.total_seconds())})."))
            elif row.state == WARN:
                problems.append(
                    (
                        WARN,
                        f"{target} {row.tier}: the RPO objective was exceeded during the period or a backup "
                        "failed its restore test.",
                    )
                )
        drills = [r for r in inputs.drills.get(target, []) if settings.covers(r.get("started_at"))]
        if not drills:
            problems.append((BAD, f"{target}: no recovery drill in this period."))
        elif drills[-1].get("status") != "passed":
            problems.append((BAD, f"{target}: the period's recovery drill failed."))
        elif not drills[-1].get("objectives_met"):
            problems.append((BAD, f"{target}: the period's drill was slower than the RTO objective."))
    month_audits = [a for a in inputs.audits if settings.covers(a.get("started_at"))]
    if not month_audits:
        problems.append((WARN, "No audit of the stored backups ran in this period."))
    elif month_audits[-1].get("status") != "passed":
        problems.append((BAD, f"The audit found {month_audits[-1].get('errors')} problem(s) with stored backups."))
    errors = [e for e in events if e.severity == "error"]
    if errors and not any(s == BAD for s, _ in problems):
        problems.append((WARN, f"{len(errors)} failure(s) in the period (all since recovered)."))
    overall = BAD if any(s == BAD for s, _ in problems) else WARN if problems else OK
    headline = {
        OK: "Healthy: every backup objective held in this period.",
        WARN: "Needs attention: backups are restorable, but not everything went to plan.",
        BAD: "At risk: at least one objective is not met. Act on the items below.",
    }[overall]
    if overall == OK:
        details = (
            "<p style='margin:0'>Every tier met its recovery point objective throughout the period, the recovery drill "
        )
        details += "restored within its objective and the audit found every stored copy intact.</p>"
    else:
        details = "<ul>" + "".join(f"<li>{escape(text)}</li>" for _, text in problems) + "</ul>"

    total_backups = sum(len(c.backups) for c in inputs.catalogs.values())
    total_bytes = sum(m.size for c in inputs.catalogs.values() for m in c.backups)
    last_drill = [r for rs in inputs.drills.values() for r in rs if settings.covers(r.get("started_at"))]
    last_rto = max((float(r["rto_seconds"]) for r in last_drill if r.get("rto_seconds") is not None), default=None)
    cards = [
        ("Backups held", f"{total_backups}", f"{human_bytes(total_bytes)} in the {settings.primary}"),
        ("Drill RTO", human_duration(last_rto), f"objective {human_duration(settings.rto.critical_seconds)}"),
        (
            "Audit",
            (month_audits[-1].get("status", "—") if month_audits else "not run"),
            f"{month_audits[-1].get('backups_checked', 0)} copies re-read" if month_audits else "",
        ),
        ("Failures & alerts", f"{len(events)}", f"{len(errors)} errors in this period"),
    ]
    sections = []
    for target, rows in health.items():
        catalog = inputs.catalogs[target]
        sections.append(
            f"<h2>Target <code>{escape(target)}</code></h2>"
            "<h3>Backups and recovery point objective</h3>"
            "<p class='muted'>The worst RPO gap is the longest time in the period with no newer verified "
            "recovery point (a full or data-only backup that passed its restore test): the data a disaster at the "
            "worst moment would have lost.</p>"
            + _tier_table(rows, now)
            + "<h3>Recovery drill (RTO)</h3>"
            + _drill_section(target, inputs.drills.get(target, []), settings)
            + "<h3>Sizes, compression and durations over time</h3>"
            + _trend_charts(catalog, settings)
        )
    month_name = datetime.strptime(settings.month, "%Y-%m").strftime("%B %Y")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(settings.title)}: {escape(month_name)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{escape(settings.title)}: {escape(month_name)}</h1>"
        f"<p class='sub'>Period {escape(settings.period_text)} · {len(inputs.catalogs)} target(s) · read from the "
        f"{escape(settings.primary)} · generated {escape(_when(now))}</p>"
        f"<div class='verdict {overall}'><strong>{escape(headline)}</strong>{details}</div>"
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><div class='k'>{escape(k)}</div><div class='v'>{escape(v)}</div>"
            f"<div class='n'>{escape(n)}</div></div>"
            for k, v, n in cards
        )
        + "</div>"
        + "".join(sections)
        + "<h2>Audit of stored backups</h2>"
        + _audit_section(inputs.audits, settings)
        + "<h2>Failures, alerts and findings in this period</h2>"
        + _events_table(events)
        + "<footer>Generated by pgbackup from the manifests, drill and audit records held in storage: the same "
        "facts the restores rely on. Times are UTC. RPO objectives: "
        + ", ".join(f"{t} {human_duration(settings.rpo[t].total_seconds())}" for t in settings.tiers)
        + f"; RTO objectives: critical data {human_duration(settings.rto.critical_seconds)}, full database "
        f"{human_duration(settings.rto.full_seconds)}.</footer>"
        "</main></body></html>"
    )
