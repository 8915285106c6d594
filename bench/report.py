"""Results of one database size, the issue's targets, and the tables printed and written to docs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from bench.measure import MB, PYTHON
from bench.steps import PathResult, SeedArtifacts, StepResult
from pgbackup.config import CompressionConfig

DEFAULT_LEVEL = CompressionConfig().level

RSS_LIMIT_BYTES = 300 * MB
# "Not growing with DB size": the larger database's peak may exceed the smaller's by at most this much.
RSS_GROWTH_TOLERANCE_BYTES = 10 * MB
RSS_GROWTH_TOLERANCE_RATIO = 1.10
OUR_PATHS = ("P_staged", "P_stream", "R_ours")


@dataclass
class SizeResult:
    requested_mb: int
    db_bytes: int  # Project X tables + indexes on disk (the "DB size")
    database_bytes: int  # pg_database_size, catalogs included
    rows: int
    generate_seconds: float
    archive_bytes: int  # pg_dump -Fc -Z0 output (the dump step's output)
    lower: list[StepResult]
    seed: PathResult
    staged: PathResult
    stream: PathResult
    r_ours: PathResult
    r_seed: PathResult
    seed_artifacts: SeedArtifacts
    ours_compressed_bytes: int
    ours_encrypted_bytes: int
    stream_encrypted_bytes: int
    restores_match_source: bool
    alternative: PathResult | None = None  # P_stream at another zstd level: information, not a target
    alternative_staged: PathResult | None = None  # P_staged at that level
    alternative_level: int = 0
    alternative_encrypted_bytes: int = 0
    load_avg: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.db_bytes / MB:,.0f} MB"

    @property
    def lower_seconds(self) -> float:
        return sum(step.seconds for step in self.lower) / len(self.lower)

    def paths(self) -> list[PathResult]:
        extra = [p for p in (self.alternative, self.alternative_staged) if p is not None]
        return [self.seed, self.staged, self.stream, *extra, self.r_ours, self.r_seed]


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    passed: bool


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def targets_for(result: SizeResult) -> list[Target]:
    lower = result.lower_seconds
    staged, stream, seed = result.staged.seconds, result.stream.seconds, result.seed.seconds
    size_ratio = _ratio(result.ours_compressed_bytes, result.seed_artifacts.gzip_bytes)
    found: list[Target] = [
        Target("P_stream / L", "<= 1.5", f"{_ratio(stream, lower):.2f}", _ratio(stream, lower) <= 1.5),
        Target("P_staged / L", "<= 2.0", f"{_ratio(staged, lower):.2f}", _ratio(staged, lower) <= 2.0),
        Target("S / P_stream", ">= 2.5", f"{_ratio(seed, stream):.2f}", _ratio(seed, stream) >= 2.5),
        Target("S / P_staged", ">= 2.5", f"{_ratio(seed, staged):.2f}", _ratio(seed, staged) >= 2.5),
        Target(f"ours zstd-{DEFAULT_LEVEL} size / seed gzip size", "<= 1.05", f"{size_ratio:.3f}", size_ratio <= 1.05),
    ]
    worst = ("-", "-", 0)
    for path in (result.staged, result.stream, result.r_ours):
        candidate = path.max_rss
        if candidate[2] > worst[2]:
            worst = candidate
    found.append(
        Target("peak RSS of every step of ours", "<= 300 MB", f"{worst[2] / MB:.0f} MB ({worst[1]}, {worst[0]})",
               worst[2] <= RSS_LIMIT_BYTES)
    )
    stream_usage = result.stream.steps[0].usage
    stream_staging = stream_usage.staging_peak or 0
    found.append(
        Target("P_stream staging disk", "0 bytes", f"{stream_staging} bytes in staging, "
               f"{stream_usage.disk_written / MB:.2f} MB written by the whole step", stream_staging == 0)
    )
    found.append(
        Target("P_staged peak staging disk", "report", f"{(result.staged.staging_peak or 0) / MB:.0f} MB", True)
    )
    r_ours, r_seed = result.r_ours.seconds, result.r_seed.seconds
    found.append(
        Target("restore: ours / seed", "<= 1.0", f"{_ratio(r_ours, r_seed):.2f} ({r_ours:.1f} s vs {r_seed:.1f} s)",
               r_ours <= r_seed)
    )
    found.append(Target("restored row counts equal the source", "yes", "yes" if result.restores_match_source else
                        "NO", result.restores_match_source))
    return found


def _our_step_peaks(result: SizeResult) -> dict[str, tuple[str, int]]:
    peaks: dict[str, tuple[str, int]] = {}
    for path in (result.staged, result.stream, result.r_ours):
        for step in path.steps:
            peaks[step.key] = step.usage.max_rss
    return peaks


def growth_targets(results: list[SizeResult]) -> list[Target]:
    """Peak RSS per step of ours must not grow from the smallest to the largest database."""
    if len(results) < 2:
        return []
    small, large = min(results, key=lambda r: r.db_bytes), max(results, key=lambda r: r.db_bytes)
    small_peaks, large_peaks = _our_step_peaks(small), _our_step_peaks(large)
    found = []
    for key, (name, low) in small_peaks.items():
        high_name, high = large_peaks.get(key, ("-", 0))
        grew = high > max(low * RSS_GROWTH_TOLERANCE_RATIO, low + RSS_GROWTH_TOLERANCE_BYTES)
        found.append(Target(f"RSS growth {key}", "flat", f"{low / MB:.0f} MB ({name}) at {small.label} -> "
                            f"{high / MB:.0f} MB ({high_name}) at {large.label}", not grew))
    return found


# -- rendering --------------------------------------------------------------------------

HEADERS = ["step", "what", "wall s", "MB/s", "out MB", "CPU s", "PG CPU s", "moto CPU s", "other CPU s",
           "peak RSS MB (program)", "staging peak MB", "disk written MB"]


def _mb(value: int | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value / MB:,.{digits}f}"


def _step_row(step: StepResult) -> list[str]:
    name, peak = step.usage.max_rss
    rate = step.rate_bytes / MB / step.seconds if step.seconds and step.rate_bytes else 0.0
    return [
        step.key, step.label, f"{step.seconds:.2f}", f"{rate:,.0f}" if rate else "-", _mb(step.out_bytes, 1),
        f"{step.cpu_seconds:.1f}", f"{step.server_cpu_seconds:.1f}", f"{step.moto_cpu_seconds:.1f}",
        f"{step.other_cpu_seconds:.1f}", f"{peak / MB:.0f} ({name})", _mb(step.usage.staging_peak),
        _mb(step.usage.disk_written),
    ]


def _total_row(path: PathResult, result: SizeResult, what: str) -> list[str]:
    rate = result.db_bytes / MB / path.seconds if path.seconds else 0.0
    _, name, peak = path.max_rss
    return [
        f"**{path.key} total**", what, f"{path.seconds:.2f}", f"{rate:,.0f}", "",
        f"{sum(s.cpu_seconds for s in path.steps):.1f}", f"{sum(s.server_cpu_seconds for s in path.steps):.1f}",
        f"{sum(s.moto_cpu_seconds for s in path.steps):.1f}", f"{sum(s.other_cpu_seconds for s in path.steps):.1f}",
        f"{peak / MB:.0f} ({name})",
        _mb(path.staging_peak), _mb(sum(s.usage.disk_written for s in path.steps)),
    ]


def step_rows(result: SizeResult) -> list[list[str]]:
    rows = [_step_row(step) for step in result.lower]
    lower_rate = result.db_bytes / MB / result.lower_seconds
    rows.append(["**L (mean)**", "", f"{result.lower_seconds:.2f}", f"{lower_rate:,.0f}"] + [""] * 8)
    whats = {"S": "seed sequence", "P_staged": "ours, staged", "P_stream": "ours, one pass",
             "R_ours": "fetch + pg_restore", "R_seed": "download + decrypt + psql"}
    whats.update({p.key: "NOT the default level" for p in (result.alternative, result.alternative_staged) if p})
    for path in result.paths():
        rows.extend(_step_row(step) for step in path.steps)
        if len(path.steps) > 1:
            rows.append(_total_row(path, result, whats[path.key]))
    return rows


def program_rows(result: SizeResult) -> list[list[str]]:
    """Every program's peak RSS per step, and what the engine's StageStats said for the same stage."""
    rows = []
    for step in [*result.lower, *(s for p in result.paths() for s in p.steps)]:
        peaks = ", ".join(f"{name} {peak / MB:.1f}" for name, peak in sorted(step.usage.peak_rss.items(),
                                                                              key=lambda kv: -kv[1]))
        engine = ", ".join(f"{stage} {peak / MB:.1f}" for stage, peak in step.engine_rss.items()) or "-"
        cpu = ", ".join(f"{stage} {sec:.2f}" for stage, sec in step.engine_cpu.items())
        if cpu:
            own = step.cpu_seconds - step.gpg_agent_cpu_seconds - sum(step.engine_cpu.values())
            cpu += f"; step process itself {max(0.0, own):.2f}"
        if step.gpg_agent_cpu_seconds >= 0.05:
            cpu = (cpu + "; " if cpu else "") + f"gpg-agent {step.gpg_agent_cpu_seconds:.2f}"
        rows.append([step.key, str(step.usage.processes), peaks, engine, cpu or "-"])
    return rows


def _table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    plain = [[cell.replace("**", "") for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in plain)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in plain]
    return "\n".join(lines)


def size_lines(result: SizeResult) -> list[str]:
    art = result.seed_artifacts
    return [
        f"plain SQL {art.plain_bytes / MB:,.1f} MB -> seed gzip -6 {art.gzip_bytes / MB:,.1f} MB "
        f"-> seed .gpg {art.gpg_bytes / MB:,.1f} MB",
        f"-Fc -Z0 archive {result.archive_bytes / MB:,.1f} MB -> ours zstd -{DEFAULT_LEVEL} "
        f"{result.ours_compressed_bytes / MB:,.1f}"
        f" MB -> ours .gpg {result.ours_encrypted_bytes / MB:,.1f} MB (stream path: "
        f"{result.stream_encrypted_bytes / MB:,.1f} MB)",
        f"ours/seed: compressed {_ratio(result.ours_compressed_bytes, art.gzip_bytes):.3f}, "
        f"encrypted {_ratio(result.ours_encrypted_bytes, art.gpg_bytes):.3f}",
    ]


def noise_lines(result: SizeResult) -> list[str]:
    """Other work on the machine during the steps (it shares 2 cores with the benchmark)."""
    steps = [*result.lower, *(s for p in result.paths() for s in p.steps)]
    waited = sum(s.quiet_wait_seconds for s in steps)
    noisy = [f"{s.key} {s.other_cpu_seconds:.1f} CPU s in {s.usage.seconds:.1f} s" for s in steps
             if s.other_cpu_seconds > max(0.3, 0.1 * 2 * s.usage.seconds)]
    return [
        f"waited {waited:.0f} s in all for an idle machine before steps; CPU used by other processes during "
        f"steps: {sum(s.other_cpu_seconds for s in steps):.1f} s in all",
        "steps disturbed by other work (> 10% of 2 cores): " + ("; ".join(noisy) if noisy else "none"),
    ]


def ratio_lines(result: SizeResult) -> list[str]:
    lower = result.lower_seconds
    alternative = []
    level = result.alternative_level
    for path in (result.alternative, result.alternative_staged):
        if path is not None:
            alternative.append(
                f"NOT DEFAULT, for comparison: {path.key} (zstd -{level}): {path.seconds:.2f} s, "
                f"P/L = {_ratio(path.seconds, lower):.2f}, S/P = {_ratio(result.seed.seconds, path.seconds):.2f}"
            )
    if result.alternative is not None:
        alternative.append(
            f"NOT DEFAULT: zstd -{level} artifact / seed .gpg size = "
            f"{_ratio(result.alternative_encrypted_bytes, result.seed_artifacts.gpg_bytes):.3f}"
        )
    return [
        f"L = {lower:.2f} s (runs: {', '.join(f'{s.seconds:.2f}' for s in result.lower)})",
        f"P_stream/L = {_ratio(result.stream.seconds, lower):.2f}   P_staged/L = "
        f"{_ratio(result.staged.seconds, lower):.2f}   S/L = {_ratio(result.seed.seconds, lower):.2f}",
        f"S/P_stream = {_ratio(result.seed.seconds, result.stream.seconds):.2f}   S/P_staged = "
        f"{_ratio(result.seed.seconds, result.staged.seconds):.2f}",
        f"R_ours/R_seed = {_ratio(result.r_ours.seconds, result.r_seed.seconds):.2f}   restore step only: "
        f"pg_restore -j {2} / psql = {_ratio(result.r_ours.steps[-1].seconds, result.r_seed.steps[-1].seconds):.2f}",
        *alternative,
    ]


def render(results: list[SizeResult], machine: dict[str, str], *, markdown: bool) -> str:
    out: list[str] = []
    h2 = "### " if markdown else "== "
    for result in results:
        out.append(f"{h2}{result.label} database (requested {result.requested_mb} MB: {result.rows:,} rows, "
                   f"pg_database_size {result.database_bytes / MB:,.0f} MB; generated in {result.generate_seconds:.0f}"
                   f" s; load average {result.load_avg.get('start', 0):.2f} -> {result.load_avg.get('end', 0):.2f})")
        out.append("")
        out.append(_table(HEADERS, step_rows(result), markdown))
        out.append("")
        bullet = "- " if markdown else "  "
        out += [bullet + line for line in ratio_lines(result) + size_lines(result)]
        out.append("")
        out.append("Peak RSS (MB) of every process each step started, and what `pipeline.StageStats` reported:"
                    if markdown else "Peak RSS (MB) per program, and the engine's StageStats.peak_rss_bytes:")
        out.append("")
        out.append(_table(["step", "processes", f"sampled VmHWM ({PYTHON} = the step process)",
                           "engine StageStats RSS", "CPU s: engine StageStats, step process, gpg-agent"],
                          program_rows(result), markdown))
        out.append("")
        out += [bullet + line for line in noise_lines(result)]
        out.append("")
        out.append(f"{h2}Targets at {result.label}")
        out.append("")
        out.append(_target_table(targets_for(result), markdown))
        out.append("")
    growth = growth_targets(results)
    if growth:
        out.append(f"{h2}Peak RSS vs database size")
        out.append("")
        out.append(_target_table(growth, markdown))
        out.append("")
    return "\n".join(out)


def _target_table(targets: list[Target], markdown: bool) -> str:
    rows = [[t.name, t.goal, t.measured, "PASS" if t.passed else "**FAIL**"] for t in targets]
    return _table(["target", "goal", "measured", "result"], rows, markdown)


def machine_markdown(machine: dict[str, str]) -> str:
    return _table(["", ""], [[k, v] for k, v in machine.items()], True)


def to_json(results: list[SizeResult], machine: dict[str, str]) -> str:
    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(type(value).__name__)

    payload = {
        "machine": machine,
        "sizes": [dataclasses.asdict(r) for r in results],
        "targets": {r.label: [dataclasses.asdict(t) for t in targets_for(r)] for r in results},
        "growth": [dataclasses.asdict(t) for t in growth_targets(results)],
    }
    return json.dumps(payload, indent=2, default=encode)
