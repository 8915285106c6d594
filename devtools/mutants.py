"""``make mutants``: break one safety promise at a time and check that a test notices.

Each entry of :data:`MUTATIONS` is a small change a careless edit could make (file,
exact old snippet, replacement), the promise it breaks and the tests that must catch it.
Every mutation is applied ALONE in a private copy of the tree (never in the working tree:
others may be editing it), its tests run there with this checkout's virtualenv, and the
mutation is "killed" when they fail. The run exits non-zero when any mutation survives,
when a snippet no longer matches the source exactly (a stale list must fail loudly, naming
the entry), or when an entry's tests do not pass on the unmutated copy (then a "kill" would
prove nothing).

    python -m devtools.mutants                  # every mutation; writes docs/reliability-mutants.md
    python -m devtools.mutants --only listing   # entries whose name contains "listing"
    python -m devtools.mutants --check          # only check that every snippet still matches
    python -m devtools.mutants --head           # mutate a copy of HEAD instead of the working tree
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "reliability-mutants.md"
PYTHON = ROOT / ".venv" / "bin" / "python"
TEST_TIMEOUT_SECONDS = 1200  # a mutation that hangs its tests counts as caught, but must not hang the run


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str  # what the mutation breaks
    path: str  # relative to the repository root
    old: str  # exact snippet, found exactly ``count`` times
    new: str
    tests: tuple[str, ...]  # pytest arguments selecting the tests that must catch it
    count: int = 1


MUTATIONS: tuple[Mutation, ...] = (
    # -- the five the first mutation run found unguarded (issue 7, item 14) ----------------
    Mutation(
        name="manifest-before-upload",
        promise="the manifest is written last: a failed upload leaves no manifest at that destination",
        path="include/pgbackup/backup.py",
        old="        uploaded = storage.put_file(manifest.object_key, artifact)\n",
        new=(
            "        storage.put_bytes(manifest_key(manifest.object_key), manifest.to_json())\n"
            "        uploaded = storage.put_file(manifest.object_key, artifact)\n"
        ),
        tests=("tests/pgbackup/test_publish_order.py",),
    ),
    Mutation(
        name="listing-ends-after-page-one",
        promise="a listing that fails after its first page raises; nothing acts on a partial listing",
        path="include/pgbackup/storage/base.py",
        old="            items = self._list(prefix)\n",
        new=(
            "            pages = self._list(prefix)\n"
            "\n"
            "            def until_a_later_page_fails(source=pages):  # keep what the first pages gave\n"
            "                first = True\n"
            "                while True:\n"
            "                    try:\n"
            "                        item = next(source)\n"
            "                    except StopIteration:\n"
            "                        return\n"
            "                    except Exception:\n"
            "                        if first:\n"
            "                            raise\n"
            "                        return\n"
            "                    first = False\n"
            "                    yield item\n"
            "\n"
            "            items = until_a_later_page_fails()\n"
        ),
        tests=("tests/pgbackup/storage/test_listing_pages.py",),
    ),
    Mutation(
        name="password-in-restore-argv",
        promise="no secret in argv: pg_restore and psql get the password outside their command line",
        path="include/pgbackup/restore.py",
        old='f"--dbname={into.conninfo()}"',
        new='f"--dbname={into.conninfo()} password={into.password}"',
        count=2,
        tests=("tests/pgbackup/test_restore_argv.py",),
    ),
    Mutation(
        name="dump-ignores-snapshot",
        promise="pg_dump reads the exported snapshot, so the manifest's row counts describe the dump",
        path="include/pgbackup/dump.py",
        old='argv += [f"--snapshot={self.snapshot}"]',
        new="pass  # the snapshot is exported anyway",
        tests=("tests/pgbackup/test_snapshot_consistency.py",),
    ),
    Mutation(
        name="compression-level-dropped",
        promise="the configured compression level reaches the compressor",
        path="include/pgbackup/compress.py",
        old='"-c", f"-{self.level}", f"-T{threads}"]',
        new='"-c", f"-T{threads}"]',
        tests=("tests/pgbackup/test_compression_level.py",),
    ),
    Mutation(
        name="staging-partial-kept",
        promise="a step that fails (a full staging disk) leaves no partial file in the staging folder",
        path="include/pgbackup/pipeline.py",
        old="self.partial.unlink(missing_ok=True)",
        new="pass  # the retry overwrites it anyway",
        tests=("tests/pgbackup/faults/test_fault_full_disk.py",),
    ),
    # -- the ones the suite already caught, kept so they stay caught ----------------------
    Mutation(
        name="checksum-read-back-ignored",
        promise="an upload is verified by reading the service's checksum back; a corrupted upload is refused",
        path="include/pgbackup/storage/s3.py",
        old="if value not in (sent.composite, full_sha) or (count and int(count) != sent.parts):",
        new="if count and int(count) != sent.parts:  # the part count is enough",
        tests=("tests/pgbackup/storage/test_storage_contract.py", "-k", "corrupted_in_transit and ChecksumSHA256"),
    ),
    Mutation(
        name="row-counts-not-compared",
        promise="validation fails when restored row counts differ from the snapshot's",
        path="include/pgbackup/restore.py",
        old="ok = got is not None and got == want",
        new="ok = got is not None  # the table is there",
        tests=("tests/pgbackup/test_faults.py", "-k", "restored_rows_differing"),
    ),
    Mutation(
        name="min-keep-ignored",
        promise="the newest min_keep verified backups are kept however old",
        path="include/pgbackup/retention.py",
        old="floor = {m.backup_id for m in verified[: policy.min_keep]}",
        new="floor: set[str] = set()",
        tests=("tests/pgbackup/test_retention.py", "-k", "newest_verified or min_keep"),
    ),
    Mutation(
        name="unverified-backup-allows-deletion",
        promise="only verified backups count: never as one of the newest kept, nor as the newer backup",
        path="include/pgbackup/retention.py",
        old="verified = [m for m in backups if m.verified]",
        new="verified = list(backups)  # a pending backup will verify soon enough",
        tests=("tests/pgbackup/test_retention.py",),
    ),
    Mutation(
        name="listing-error-is-empty",
        promise="a listing that fails raises, so nothing is deleted on its strength",
        path="include/pgbackup/storage/base.py",
        old="                info = next(items, None)\n",
        new=(
            "                try:\n"
            "                    info = next(items, None)\n"
            "                except Exception:  # an unreadable bucket holds nothing\n"
            "                    info = None\n"
        ),
        tests=(
            "tests/pgbackup/storage/test_storage_contract.py",
            "tests/pgbackup/test_retention.py",
            "-k",
            "missing_bucket or failed_listing",
        ),
    ),
    Mutation(
        name="expired-key-accepted",
        promise="an expired recipient key fails the backup before anything is dumped",
        path="include/pgbackup/gpg.py",
        old='key["validity"] == "e" or (key["expires"] and int(key["expires"]) <= now)',
        new="False",  # as if gpg's own refusal at encryption time were enough
        tests=("tests/pgbackup/test_faults.py", "-k", "expired_recipient"),
    ),
    Mutation(
        name="partial-object-kept",
        promise="a stream backup that fails after its upload started removes its own object",
        path="include/pgbackup/backup.py",
        old="        if stored:\n            _remove_own_object(primary, stored[0])\n        raise\n",
        new="        raise\n",
        tests=("tests/pgbackup/test_faults.py", "-k", "fails_mid_dump"),
    ),
    Mutation(
        name="post-data-not-restored",
        promise="a schema + data pair restores post-data (constraints, indexes) after the data",
        path="include/pgbackup/restore.py",
        old='restore_archive(schema_archive, db, "custom", jobs=jobs, sections=("post-data",))',
        new="pass  # constraints and indexes come back with the next full backup",
        tests=("tests/pgbackup/test_backup_roundtrip.py", "-k", "schema_then_data"),
    ),
    Mutation(
        name="prune-after-failure",
        promise="prune never runs after a failed step (a failed backup or validation prunes nothing)",
        path="plugins/pgbackup_airflow/dag_factory.py",
        old='prune = PruneBackupsOperator(task_id="prune", trigger_rule=TriggerRule.NONE_FAILED, **common)',
        new='prune = PruneBackupsOperator(task_id="prune", trigger_rule=TriggerRule.ALL_DONE, **common)',
        # The e2e run (a real scheduler) shows it too, but takes minutes and is load-sensitive.
        tests=("tests/pgbackup_airflow/test_prune_guard.py",),
    ),
)


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | SURVIVED | STALE | ERROR
    seconds: float
    detail: str = ""


def stale_entries(mutations: tuple[Mutation, ...], root: Path) -> list[str]:
    """One line per entry whose file or snippet no longer matches the source."""
    problems: list[str] = []
    for mutation in mutations:
        source = root / mutation.path
        if not source.is_file():
            problems.append(f"{mutation.name}: {mutation.path} does not exist")
            continue
        text = source.read_text()
        found = text.count(mutation.old)
        if found != mutation.count:
            problems.append(
                f"{mutation.name}: its snippet occurs {found} times in {mutation.path}, expected {mutation.count} "
                "(the code changed: update the entry in devtools/mutants.py)"
            )
        else:
            try:
                compile(text.replace(mutation.old, mutation.new), mutation.path, "exec")
            except SyntaxError as exc:
                problems.append(f"{mutation.name}: the mutated {mutation.path} does not compile: {exc}")
        for test in mutation.tests:
            test_file = test.split("::")[0]
            if test_file.startswith("tests/") and not (root / test_file).exists():
                problems.append(f"{mutation.name}: its test {test_file} does not exist")
    return problems


def committed_copy(destination: Path) -> Path:
    """Export HEAD (``git archive``): the committed tree, without anyone's work in progress."""
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
    return destination


def private_copy(destination: Path) -> Path:
    """Copy the working tree's tracked and untracked-but-not-ignored files (what ``make test`` sees)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        relative = raw.decode()
        source = ROOT / relative
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ)
    env.update(
        PYTHONDONTWRITEBYTECODE="1",  # a restored file must never be shadowed by a mutated .pyc
        PGBACKUP_NO_RELIABILITY_REPORT="1",  # the fault report describes real runs, not mutants
        COLUMNS="400",  # room for the failure reason in the summary line
    )
    argv = [str(PYTHON), "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f}s"
    lines = [line for line in (done.stdout + done.stderr).strip().splitlines() if line.strip()]
    # The first failure's one-line summary says WHY the mutation was caught; else pytest's tally.
    failures = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return done.returncode, (failures[0][:300] if failures else lines[-1] if lines else "")


def run_one(tree: Path, mutation: Mutation, timeout: float, *, baseline: bool = True) -> Outcome:
    source = tree / mutation.path
    original = source.read_text()
    if original.count(mutation.old) != mutation.count:
        return Outcome(mutation, "STALE", 0.0, f"snippet occurs {original.count(mutation.old)} times")
    started = time.monotonic()
    mutated = original.replace(mutation.old, mutation.new)
    try:
        compile(mutated, str(source), "exec")  # a mutant that cannot even import proves nothing
    except SyntaxError as exc:
        return Outcome(mutation, "ERROR", 0.0, f"the mutated file does not compile: {exc}")
    if baseline:
        # A test that fails anyway would "kill" every mutation: it must pass on the unmutated tree.
        code, last_line = run_tests(tree, mutation.tests, timeout)
        if code != 0 or " passed" not in last_line:
            return Outcome(mutation, "ERROR", time.monotonic() - started, f"unmutated: {last_line}")
    source.write_text(mutated)
    try:
        code, last_line = run_tests(tree, mutation.tests, timeout)
    finally:
        source.write_text(original)
    seconds = time.monotonic() - started
    if code in (1, -1):  # tests failed (or hung): the mutation was noticed
        return Outcome(mutation, "killed", seconds, last_line)
    if code == 0 and " passed" not in last_line:
        return Outcome(mutation, "ERROR", seconds, f"every selected test was skipped: {last_line}")
    if code == 0:
        return Outcome(mutation, "SURVIVED", seconds, last_line)
    # 2-5: interrupted, internal/usage error, or no tests collected: the entry itself is broken.
    return Outcome(mutation, "ERROR", seconds, f"pytest exit {code}: {last_line}")


def render(outcomes: list[Outcome], baseline: str) -> str:
    killed = sum(o.status == "killed" for o in outcomes)
    lines = [
        "# Mutation score",
        "",
        "Generated by `make mutants` (`devtools/mutants.py`): each mutation breaks one safety promise the way a",
        "careless change would, is applied alone in a private copy of the tree, and its selected tests run there",
        "(after they passed on the unmutated copy). A mutation is killed when those tests fail; the reason shown is",
        "the first failure. The first five are the ones issue 7 found surviving the whole suite; staging-partial-kept",
        "guards the full-disk fault case; the rest were already caught and stay in the list so they stay caught.",
        "",
        f"**Score: {killed}/{len(outcomes)} killed** (last run {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; "
        f"baseline: {baseline}).",
        "",
        "| Mutation | Promise it breaks | Tests (pytest arguments) | Result | Seconds |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        tests = shlex.join(o.mutation.tests)
        detail = o.detail if len(o.detail) <= 220 else o.detail[:217] + "..."
        result = o.status + (f": {detail}" if detail else "")
        lines.append(
            f"| {o.mutation.name} | {o.mutation.promise} | `{tests}` | {result.replace('|', '/')} | {o.seconds:.0f} |"
        )
    lines += ["", "## The mutations", ""]
    for o in outcomes:
        lines += [f"### {o.mutation.name} (`{o.mutation.path}`)", "", "```diff"]
        lines += [f"-{line}" for line in o.mutation.old.rstrip("\n").splitlines()]
        lines += [f"+{line}" for line in o.mutation.new.rstrip("\n").splitlines()]
        lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="run entries whose name contains this")
    parser.add_argument("--check", action="store_true", help="only check that every snippet still matches")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests on the unmutated copy")
    parser.add_argument("--timeout", type=float, default=TEST_TIMEOUT_SECONDS, help="seconds per mutation")
    parser.add_argument("--keep", action="store_true", help="keep the private copy (its path is printed)")
    parser.add_argument("--head", action="store_true", help="mutate the committed tree (HEAD), not the working tree")
    args = parser.parse_args(argv)

    chosen = tuple(m for m in MUTATIONS if not args.only or any(part in m.name for part in args.only))
    if not chosen:
        print(f"no mutation matches {args.only}; names: {', '.join(m.name for m in MUTATIONS)}", file=sys.stderr)
        return 2
    stale = stale_entries(chosen, ROOT)  # against the working tree: that is where the list is maintained
    for problem in stale:
        print(f"STALE {problem}", file=sys.stderr)
    if args.check:
        print(f"{len(chosen) - len({p.split(':')[0] for p in stale})}/{len(chosen)} entries match the source")
        return 1 if stale else 0

    workspace = Path(tempfile.mkdtemp(prefix="pgbackup-mutants-"))
    try:
        tree = committed_copy(workspace / "tree") if args.head else private_copy(workspace / "tree")
        print(f"private copy: {tree}", flush=True)
        baseline = "skipped (--no-baseline)" if args.no_baseline else "each selection passes unmutated first"
        outcomes: list[Outcome] = []
        for mutation in chosen:
            outcome = run_one(tree, mutation, args.timeout, baseline=not args.no_baseline)
            outcomes.append(outcome)
            print(f"{outcome.status:9} {mutation.name:32} {outcome.seconds:6.0f}s  {outcome.detail}", flush=True)
    finally:
        if args.keep:
            print(f"kept {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)

    killed = sum(o.status == "killed" for o in outcomes)
    print(f"mutation score: {killed}/{len(outcomes)} killed")
    for o in outcomes:
        if o.status != "killed":
            print(f"  {o.status}: {o.mutation.name} ({o.mutation.promise})")
    if not args.only:
        REPORT.write_text(render(outcomes, baseline))
        print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0 if killed == len(outcomes) and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
