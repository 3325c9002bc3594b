"""The team state file on disk: reading it with its journal, saving it whole, and refusing
a file that is corrupt or was changed by something other than the run that owns it.

`StateFile` is `TeamState.file`. It never locks: every method runs under the locks
`TeamState` takes (`shared` holds them, one set per file and process). A file that does not
parse or validate is never overwritten: it is copied aside (`backup`) and the error says where.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from jsonschema.exceptions import ValidationError

from . import state_ops
from .errors import StateError
from .fsutil import write_atomic
from .state_journal import IoStats, JournalWriter, digest, journal_path, read_entries
from .state_migrations import migrate_state, schema_version_of
from .state_schema import SCHEMA_PATH, SCHEMA_VERSION, describe_error, encoder, new_state

__all__ = ["STATE_RELATIVE_PATH", "StateFile", "apply_journal", "backup", "save_error"]

STATE_RELATIVE_PATH = Path(".ai-agents/state/team-communication.json")


@dataclass
class _Shared:
    """What every TeamState of one file shares inside a process: locks and the last valid bytes."""

    file_lock: FileLock
    thread_lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)
    known: bytes | None = None


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


def _shared_for(path: Path) -> _Shared:
    key = os.path.normcase(str(path))
    with _REGISTRY_LOCK:
        if key not in _REGISTRY:
            lock = FileLock(str(path) + ".lock", thread_local=False)
            _REGISTRY[key] = _Shared(file_lock=lock)
        return _REGISTRY[key]


def backup(path: Path, payload: bytes, label: str) -> Path:
    """Keep `payload` (the bytes read from `path`) next to it; reuse an identical earlier copy."""
    for existing in sorted(path.parent.glob(f"{glob.escape(path.name)}.{label}-*")):
        with contextlib.suppress(OSError):
            if existing.read_bytes() == payload:
                return existing
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    with open(target, "xb") as fh:
        fh.write(payload)
    return target


def save_error(path: Path, exc: OSError) -> StateError:
    reason = exc.strerror or str(exc)
    return StateError(
        f"Could not save the team state file {path}: {reason}. The previous file was left as it "
        "was; free some disk space or fix the permissions and run again."
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def apply_journal(path: Path, raw: bytes, data: dict, stats: IoStats | None = None) -> int:
    """Apply to `data` (the state file `path` parsed from `raw`) what its journal adds.

    Every reader goes through here (`TeamState.read`, `team.py status`), so a run's newest
    changes are seen before they are folded into the file. Returns the journal's usable length.
    """
    journal = journal_path(path)
    entries, size = read_entries(journal, digest(raw), stats)
    for number, entry in enumerate(entries, start=1):
        try:
            for op in entry["ops"]:
                state_ops.apply_op(data, op)
            data["last_updated"] = entry.get("at") or data["last_updated"]
        except (StateError, KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"Entry {number} of the state journal {journal} does not apply to {path} "
                f"({exc}). Both were left untouched; move the journal away to continue from "
                "the state file alone.") from None
    return size


class StateFile:
    """One state file and its journal as one `TeamState` sees them.

    Holds what the owning run knows of the file: the bytes it last wrote (`written`), the
    file's identity when last read (`snapshot_id`), its in-memory copy (`cache`), and when the
    journal was last folded in (`checkpointed`), so a change made elsewhere is caught.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.missing_project_name: str | None = None
        self.shared = _shared_for(self.path)
        self.owned = False
        self.written: bytes | None = None
        self.stats = IoStats()
        self.journal = JournalWriter(journal_path(self.path), self.stats)
        self.cache: dict | None = None
        self.snapshot_id: tuple[int, int, int] | None = None
        self.snapshot_size = 0
        self.checkpointed = time.monotonic()
        self.save_seconds = 0.0

    def check_unchanged(self) -> None:
        """Raise the changed-elsewhere error when the file or its journal is not ours any more."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._keep_cache_as_last_good()
            raise self._changed_elsewhere(None) from None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self.snapshot_id:
            raw = self.path.read_bytes()
            if raw != self.written:
                self._keep_cache_as_last_good()
                raise self._changed_elsewhere(raw)
            self.snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if not self.journal.intact():
            self._keep_cache_as_last_good()
            raise self._changed_elsewhere(self.path.read_bytes(), what=self.journal.path)

    def _keep_cache_as_last_good(self) -> None:
        """The run's own last version includes its journal: keep that, not the older file."""
        if self.cache is not None:
            with contextlib.suppress(TypeError, ValueError, ValidationError):
                self.written = encoder().encode(self.cache).encode("utf-8")
        self.cache = None

    def load(self) -> tuple[dict, int, bytes]:
        """The file with its journal's changes applied; never writes to either."""
        data, version, raw = self._load_file()
        if not raw:
            return data, version, raw
        base = digest(raw)
        size = apply_journal(self.path, raw, data, self.stats)
        self.journal.start(base, size)
        return data, version, raw

    def _load_file(self) -> tuple[dict, int, bytes]:
        """Parse, migrate and validate the file; never writes to it."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self.owned and self.written is not None:
                raise self._changed_elsewhere(None) from None
            if self.missing_project_name is not None:
                return new_state(self.missing_project_name), SCHEMA_VERSION, b""
            raise StateError(
                f"No team state file at {self.path}. Run the init command in the project first."
            ) from None
        except OSError as exc:
            raise StateError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
        self.stats.reads += 1
        self.stats.bytes_read += len(raw)
        if self.owned:
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                self.snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self.owned and self.written is not None and raw != self.written:
            raise self._changed_elsewhere(raw)
        if raw == self.shared.known:
            return json.loads(raw), SCHEMA_VERSION, raw
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            raise self._corrupt(raw, f"it is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise self._corrupt(raw, f"it holds a JSON {type(data).__name__}, not an object")
        try:
            version = schema_version_of(data)
        except StateError as exc:
            raise StateError(f"Cannot read the team state file {self.path}: {exc}") from None
        after = ""
        if version != SCHEMA_VERSION:
            after = f" (after migrating it from schema version {version})"
            try:
                data = migrate_state(data)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                reason = f"migrating it from version {version} failed ({exc!r})"
                raise self._corrupt(raw, reason) from exc
            data["project_name"] = data["project_name"] or self._project_dir().name
        try:
            encoder().encode(data)
        except ValidationError as error:
            raise self._corrupt(raw, describe_error(error) + after) from None
        if version == SCHEMA_VERSION:
            self.shared.known = raw
        return data, version, raw

    def make_directory(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"Cannot create {self.path.parent}: {exc.strerror or exc}.") from exc

    def _project_dir(self) -> Path:
        parts = STATE_RELATIVE_PATH.parts
        if self.path.parts[-len(parts) :] == parts:
            return self.path.parents[len(parts) - 1]
        return self.path.parent

    def _corrupt(self, raw: bytes, reason: str) -> StateError:
        """The error for a file we refuse to use, after copying it aside for the user."""
        try:
            kept = f"a copy is at {backup(self.path, raw, 'corrupt')}"
        except OSError as exc:
            kept = f"copying it aside failed ({exc.strerror or exc})"
        return StateError(
            f"Cannot use the team state file {self.path}: {reason}. The file was left untouched "
            f"and {kept}. Fix it by hand (schema: {SCHEMA_PATH}) or move it away to start fresh."
        )

    def _changed_elsewhere(self, raw: bytes | None, what: Path | None = None) -> StateError:
        """The error for a file changed or deleted during a run, after keeping both versions."""
        assert self.written is not None
        try:
            self.make_directory()
            good = backup(self.path, self.written, "last-good")
        except (OSError, StateError) as exc:
            last, advice = f"saving this run's last version failed ({exc})", ""
        else:
            last = f"this run's last version is saved at {good}"
            advice = f" (`cp {good} {self.path}`)"
        target = what or self.path
        if raw is None:
            what_, kept = "deleted", "It was not re-created"
        else:
            what_, kept = "changed", "It was not overwritten"
            with contextlib.suppress(OSError):
                kept += f" (a copy of the changed file is at {backup(self.path, raw, 'changed')})"
        return StateError(
            f"The team state file {target} was {what_} by something other than this run "
            "while it was running (agents' commands are not sandboxed and can write anywhere). "
            f"{kept}, and {last}. The run stops here: put back the version you trust{advice} "
            "and continue with --resume."
        )

    def save(self, state: dict) -> None:
        """Order, redact, validate, then write; a state that fails validation is never written."""
        started = time.monotonic()
        try:
            text = encoder().encode(state)
        except ValidationError as error:
            raise StateError(
                f"Refusing to save the team state file {self.path}: {describe_error(error)}. "
                "Nothing was written; the file on disk is unchanged. Fix the code that set that "
                "value."
            ) from None
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"Refusing to save the team state file {self.path}: {exc}. Nothing was written."
            ) from exc
        payload = text.encode("utf-8")
        try:
            write_atomic(self.path, payload, keep_mode=True, sync_directory=True)
        except OSError as exc:
            raise save_error(self.path, exc) from exc
        self.shared.known = payload
        self.stats.snapshot_writes += 1
        self.stats.snapshot_bytes += len(payload)
        # The new file holds every journaled change: the old journal's base no longer matches
        # it, so even if removing it fails here it is never applied twice.
        self.journal.remove()
        self.journal.start(digest(payload))
        self.snapshot_size = len(payload)
        self.checkpointed = time.monotonic()
        self.save_seconds = self.checkpointed - started
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            self.snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self.owned:
            self.written = payload
