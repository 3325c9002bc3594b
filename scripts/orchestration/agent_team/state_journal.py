"""The state file's journal: small changes appended next to it, folded in at checkpoints.

Rewriting, re-validating and fsyncing the whole state file for every status change made a run
cost O(tasks) per event and O(tasks^2) in all, because the file grows with the plan. So the
frequent changes (a task's fields, an agent's live entry, an update line, usage, a merge, a
decision) are appended as one JSON line each to `team-communication.json.journal`, validated
one entity at a time. At checkpoints (the journal outgrew the file, a few seconds passed, a
whole-state transaction, the end of a run) the merged state is written to the state file the
usual way (fsynced, then renamed into place) and the journal is removed.

Appends are not fsynced, as SQLite's write-ahead log with `synchronous=NORMAL`: once `write`
returns the line is the kernel's, so a killed or crashed orchestrator loses nothing; a power
loss can lose the changes since the last checkpoint, never the file's consistency. An fsync per
change cost 0.3 ms on an idle machine and 2 ms on a loaded one.

The journal's first line names the SHA-256 of the state file it applies to. A crash between
writing a new state file and removing the old journal therefore leaves a journal whose base no
longer matches: it is ignored, never applied twice. A last line without its newline is a write
the crash cut short: it was never acknowledged, so it is dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from .errors import StateError
from .state_schema import definition_validator, describe_error, encoder, property_checks

JOURNAL_VERSION = 1
#: Fold the journal into the state file when it is this large, or larger than the file.
MIN_COMPACT_BYTES = 64 * 1024
#: ... or when the state file is this many seconds behind the journal.
CHECKPOINT_SECONDS = 5.0
#: ... but never more often than this many times the last whole-file save took: a save
#: validates the whole file (0.33 s at 500 tasks), so a fixed period made its share of the run
#: grow with the plan; this keeps it under 2% at any size.
SAVE_TIME_FACTOR = 50.0


def digest(payload: bytes) -> str:
    """What a journal records as its base: the state file's exact bytes."""
    return hashlib.sha256(payload).hexdigest()


def journal_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".journal")


@dataclass
class IoStats:
    """What one store wrote and read, for benchmarks: whole-file saves and journal appends."""

    snapshot_writes: int = 0
    snapshot_bytes: int = 0
    journal_appends: int = 0
    journal_bytes: int = 0
    reads: int = 0
    bytes_read: int = 0

    @property
    def writes(self) -> int:
        return self.snapshot_writes + self.journal_appends

    @property
    def bytes_written(self) -> int:
        return self.snapshot_bytes + self.journal_bytes

    def as_dict(self) -> dict[str, int]:
        return {"snapshot_writes": self.snapshot_writes, "snapshot_bytes": self.snapshot_bytes,
                "journal_appends": self.journal_appends, "journal_bytes": self.journal_bytes,
                "writes": self.writes, "bytes_written": self.bytes_written,
                "reads": self.reads, "bytes_read": self.bytes_read}


def read_entries(path: Path, base: str,
                 stats: IoStats | None = None) -> tuple[list[dict[str, Any]], int]:
    """The journal entries that apply to the state file whose digest is `base`, in order,
    and the length of the journal up to its last complete line (0: start a new one).

    No journal, or one written against another version of the file (already folded in), gives
    no entries. A line that is not valid JSON, other than a cut-off last one, is an error.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise StateError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if stats is not None:
        stats.reads += 1
        stats.bytes_read += len(raw)
    lines = raw.split(b"\n")
    complete = lines[:-1]  # the part after the last newline was never acknowledged
    if not complete:
        return [], 0
    try:
        header = json.loads(complete[0])
    except ValueError:
        raise StateError(f"The state journal {path} has an unreadable first line. Move it "
                         "away to continue from the state file alone.") from None
    if not isinstance(header, dict) or header.get("journal") != JOURNAL_VERSION:
        raise StateError(f"{path} is not a version {JOURNAL_VERSION} state journal. Move it "
                         "away to continue from the state file alone.")
    if header.get("base") != base:
        return [], 0
    entries = []
    for number, line in enumerate(complete[1:], start=2):
        try:
            entry = json.loads(line)
        except ValueError:
            raise StateError(f"Line {number} of the state journal {path} is not valid JSON. "
                             "Move the file away to continue from the state file alone "
                             "(the changes it holds are then lost).") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("ops"), list):
            raise StateError(f"Line {number} of the state journal {path} is not an entry.")
        entries.append(entry)
    return entries, len(raw) - len(lines[-1])


class JournalWriter:
    """Appends entries to one journal, each fsynced before it counts as written."""

    def __init__(self, path: Path, stats: IoStats) -> None:
        self.path = path
        self.stats = stats
        self.base: str | None = None
        self.size = 0
        self._identity: tuple[int, int] | None = None

    def start(self, base: str, existing: int = 0) -> None:
        """Continue a journal of `existing` bytes on `base`, or (0) start a new one there."""
        self.base, self.size = base, existing
        self._identity = None  # read, not written: the first append checks the length

    def intact(self) -> bool:
        """Whether the journal on disk is still the one this writer appended to."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self.size == 0
        if self._identity is None:  # read at load time, not appended to yet
            return st.st_size >= self.size
        return self._identity == (st.st_ino, st.st_size)

    def append(self, entry: Mapping[str, Any]) -> int:
        """Write one entry (and the header first, on a new journal); bytes written."""
        if self.base is None:
            raise StateError("The state journal was not started.")
        data = b""
        if self.size == 0:
            header = {"journal": JOURNAL_VERSION, "base": self.base}
            data = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        data += json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if self.size == 0 else 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            if self._identity is None and self.size and os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)  # drop a line a crash cut short
            os.write(fd, data)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.size += len(data)
        self._identity = (st.st_ino, st.st_size)
        self.stats.journal_appends += 1
        self.stats.journal_bytes += len(data)
        return len(data)

    def remove(self) -> None:
        """Forget the journal: its entries are in the state file now."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.size, self._identity = 0, None


# -- entity checks -----------------------------------------------------------------------------


@cache
def _check(definition: str) -> Draft202012Validator:
    return definition_validator(definition)


def check_entity(definition: str, value: Any, where: str) -> None:
    """Validate one entity of the state against its schema definition, not the whole file."""
    validator = _check(definition)
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        raise StateError(f"Refusing to record {where}: {describe_error(error)}. Nothing was "
                         "written; the file on disk is unchanged. Fix the code that set that "
                         "value.")


def check_fields(definition: str, fields: Mapping[str, Any], where: str) -> None:
    """Validate the fields an update sets on an entity that was valid before it.

    Equivalent to `check_entity` on the result when the definition has no rule across its
    properties (true of tasks and agents) and the field names were checked: 11 µs instead of
    253 µs for a task's completion when it carries a 30-file result.
    """
    checks = property_checks(definition)
    for key, value in fields.items():
        error = next(iter(sorted(checks[key].iter_errors(value), key=lambda e: list(e.path))),
                     None)
        if error is not None:
            message = describe_error(error).replace("at $", f"at $.{key}", 1)
            raise StateError(f"Refusing to record {where}: {message}. Nothing was written; the "
                             "file on disk is unchanged. Fix the code that set that value.")


def check_agent_name(name: str) -> None:
    pattern = encoder().schema["properties"]["agents"]["propertyNames"]["pattern"]
    if not Draft202012Validator({"pattern": pattern}).is_valid(name):
        raise StateError(f"Refusing to record agent {name!r}: an agent is named `role` or "
                         "`role@task_id`. Nothing was written.")
