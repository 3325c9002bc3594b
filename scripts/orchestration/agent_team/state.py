"""The team state file: locked transactions, atomic saves, and the helpers built on them.

Every orchestrator thread and process coordinates through one JSON file, so every change is a
read-modify-write under a thread lock and a file lock, validated before it is written, and
written through a temporary file and `os.replace` (`fsutil.write_atomic`) so a reader never
sees half a file. A file
that does not parse or validate is never overwritten: it is copied aside and the run stops.

What a valid state is lives in `state_schema.py`, how old versions are read in
`state_migrations.py`, what counts as a secret in `redaction.py`; their public names are
re-exported here, so `from agent_team.state import ...` keeps working.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from jsonschema.exceptions import ValidationError

from . import state_ops
from .errors import StateError, UnknownTaskError
from .fsutil import write_atomic
from .redaction import redact, redact_value, secret_pattern
from .state_journal import (
    CHECKPOINT_SECONDS,
    MIN_COMPACT_BYTES,
    SAVE_TIME_FACTOR,
    IoStats,
    JournalWriter,
    digest,
    journal_path,
    read_entries,
)
from .state_migrations import (
    MIGRATIONS,
    SUPPORTED_VERSIONS,
    migrate_state,
    migration,
    schema_version_of,
)
from .state_schema import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    describe_error,
    encoder,
    load_schema,
    new_state,
    utc_now,
    validate_state,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "STATE_RELATIVE_PATH",
    "SUPPORTED_VERSIONS",
    "TeamState",
    "UnknownTaskError",
    "apply_journal",
    "load_schema",
    "migrate_state",
    "migration",
    "new_state",
    "redact",
    "schema_version_of",
    "utc_now",
    "validate_state",
]

STATE_RELATIVE_PATH = Path(".ai-agents/state/team-communication.json")

T = TypeVar("T")


# --- files --------------------------------------------------------------------------------------


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


def _backup(path: Path, payload: bytes, label: str) -> Path:
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


def _save_error(path: Path, exc: OSError) -> StateError:
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


class TeamState:
    """One team state file, safe to share between the threads and processes of a run.

    Change it only through `transaction()` (or `update()` and the helpers built on it): each
    one reads the file under the locks, lets the caller change the dict, then validates and
    saves it atomically. A transaction opened inside another one on the same file, in the same
    thread, joins the outer one, so the helpers compose.

    The document operations are plain functions in `state_ops.py` (`set_task_in`,
    `append_update_to`, ...) for a transaction the caller holds; `set_task`, `append_update`
    and the other methods here run one as a journaled change of its own.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float | None = 60.0):
        self.path = Path(path).expanduser().resolve()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self.missing_project_name: str | None = None
        self._shared = _shared_for(self.path)
        self._owned = False
        self._written: bytes | None = None
        self.stats = IoStats()
        self._journal = JournalWriter(journal_path(self.path), self.stats)
        self._cache: dict | None = None
        self._snapshot_id: tuple[int, int, int] | None = None
        self._snapshot_size = 0
        self._checkpointed = time.monotonic()
        self._save_seconds = 0.0

    def __repr__(self) -> str:
        return f"TeamState({str(self.path)!r})"

    @classmethod
    def for_project(
        cls,
        project_dir: str | os.PathLike[str],
        *,
        create: bool = True,
        must_exist: bool = True,
        project_name: str | None = None,
        lock_timeout: float | None = 60.0,
    ) -> TeamState:
        """The state of `project_dir`, created fresh now when absent and `create` is true.

        With `create=False, must_exist=False` nothing is written until the first transaction,
        which starts from a fresh state; `read()` returns a fresh state until then.
        """
        project = Path(project_dir).expanduser()
        if not project.is_dir():
            raise StateError(f"Project directory {project} does not exist or is not a directory.")
        state = cls(project / STATE_RELATIVE_PATH, lock_timeout=lock_timeout)
        name = project_name or project.resolve().name
        if not state.path.exists():
            if create:
                state.create(name)
            elif must_exist:
                raise StateError(
                    f"No team state file at {state.path}. Run the init command in {project} "
                    f"first, or pass a project directory that has {STATE_RELATIVE_PATH}."
                )
        if create or not must_exist:
            state.missing_project_name = name
        return state

    def create(self, project_name: str) -> bool:
        """Write a fresh state unless a file is already there; True when this call wrote it."""
        self._make_directory()
        with self._locked():
            if self.path.exists():
                return False
            self._save(new_state(project_name))
            return True

    def read(self) -> dict:
        """A validated private copy of the state as it is now (the file and its journal)."""
        if self._owned and getattr(self._shared.local, "state", None) is None:
            with self._locked():
                state, cached = self._current()
                return copy.deepcopy(state) if cached else state
        return self._load()[0]

    def view(self, pick: Callable[[dict], T]) -> T:
        """A copy of one part of the state, without copying the rest (`read` copies it all)."""
        active = getattr(self._shared.local, "state", None)
        if active is not None:
            return copy.deepcopy(pick(active))
        if self._owned:
            with self._locked():
                return copy.deepcopy(pick(self._current()[0]))
        return pick(self._load()[0])

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Make this object the file's only writer while the body runs (a run, under its lock).

        Nothing else writes the file during a run, so any change found by a later read or
        transaction came from elsewhere (an agent's command can write anywhere): it is refused,
        valid or not, and never overwritten; see `_changed_elsewhere`.
        """
        if self.missing_project_name is not None:
            self._make_directory()
        with self._locked():
            try:
                self._written = self.path.read_bytes()
            except FileNotFoundError:
                self._written = None
            except OSError as exc:
                raise StateError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
            self._owned = True
        unusable = False
        try:
            yield
        except StateError:
            unusable = True  # a file that could not be used is not tried again
            raise
        finally:
            if not unusable:  # the run's end: the file alone shows everything again
                with contextlib.suppress(StateError):
                    self.checkpoint()
            self._owned = False
            self._written = None
            self._cache = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict]:
        """Yield the state for mutation; save it on normal exit, write nothing on an exception."""
        local = self._shared.local
        active = getattr(local, "state", None)
        if active is not None:
            yield active
            return
        if self.missing_project_name is not None:
            self._make_directory()
        with self._locked():
            state, version, raw = self._load()
            local.state = state
            try:
                yield state
            finally:
                local.state = None
            if version != SCHEMA_VERSION:
                try:
                    _backup(self.path, raw, f"v{version}")
                except OSError as exc:
                    raise StateError(
                        f"Not migrating {self.path}: could not keep a copy of the version "
                        f"{version} file first ({exc.strerror or exc}). Nothing was written."
                    ) from exc
            state["last_updated"] = utc_now()
            self._cache = None  # the caller may still hold parts of `state`
            self._save(state)

    def checkpoint(self) -> bool:
        """Fold the journal into the state file now; True when there was something to fold."""
        if getattr(self._shared.local, "state", None) is not None:
            return False
        with self._locked():
            if self._journal.size == 0 and not self._journal.path.exists():
                return False
            state, _ = self._current()
            self._save(state)
            return True

    def record(self, *ops: dict[str, Any], pick: Callable[[dict], Any] | None = None) -> Any:
        """Apply small changes (see `apply_op`) and append them to the journal: O(1) per call.

        Each touched entity is validated on its own; the whole file is rewritten only at
        checkpoints. Inside a transaction the changes join it. Returns a copy of `pick(state)`.
        """
        items = [dict(op) for op in ops]
        try:
            text = json.dumps(items, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"Refusing to save the team state file {self.path}: {exc}. Nothing was written."
            ) from exc
        if secret_pattern(in_json=True).search(text):
            items = [redact_value(op) for op in items]
        if self._owned and getattr(self._shared.local, "state", None) is None:
            done, result = self._record_journaled(items, pick)
            if done:
                return result
        with self.transaction() as state:  # joins an active one, or saves the file whole
            for op in items:  # the whole file is validated when it is saved
                state_ops.apply_op(state, op, check=False)
            return copy.deepcopy(pick(state)) if pick else None

    def _record_journaled(self, items: list[dict[str, Any]],
                          pick: Callable[[dict], Any] | None) -> tuple[bool, Any]:
        """`record` for the run that owns the file: (False, None) when it cannot journal yet."""
        with self._locked():
            state, journaled = self._current()
            if not journaled:  # no file of the current version to journal against
                return False, None
            try:
                for op in items:
                    state_ops.apply_op(state, op)
                now = utc_now()
                state["last_updated"] = now
                result = copy.deepcopy(pick(state)) if pick else None
            except BaseException:
                self._cache = None
                raise
            try:
                self._journal.append({"at": now, "ops": items})
            except OSError as exc:
                self._cache = None
                raise _save_error(self._journal.path, exc) from exc
            if (self._journal.size >= max(MIN_COMPACT_BYTES, self._snapshot_size)
                    or time.monotonic() - self._checkpointed
                    >= max(CHECKPOINT_SECONDS, SAVE_TIME_FACTOR * self._save_seconds)):
                self._save(state)
            return True, result

    def update(self, fn: Callable[[dict], T]) -> T:
        """Run `fn(state)` inside one transaction and return its result."""
        with self.transaction() as state:
            return fn(state)

    # -- helpers the orchestrator calls from many threads --

    def append_update(
        self,
        agent: str,
        task_id: str | None,
        status: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> dict:
        """`append_update_to` as one journaled change; returns the entry as written."""
        entry = state_ops.append_update_to({"agent_updates": []}, agent, task_id, status, message,
                                      details)
        self.record({"op": "update", "entry": entry})
        return copy.deepcopy(entry)

    def set_task(self, task_id: str, **fields: Any) -> dict:
        """`set_task_in` as one journaled change; returns a copy of the task."""
        state_ops._check_fields("task", "task", fields)
        return self.record({"op": "task", "task_id": task_id, "fields": fields},
                           pick=lambda state: state_ops.find_task(state, task_id))

    def set_agent(self, role: str, **fields: Any) -> dict:
        """`set_agent_in` as one journaled change; returns a copy of the agent."""
        state_ops._check_fields("agent", "agent", fields)
        fields = {**fields, "updated_at": fields.get("updated_at") or utc_now()}
        return self.record({"op": "agent", "agent": role, "fields": fields},
                           pick=lambda state: state["agents"][role])

    def add_decisions(
        self, decisions: Iterable[str | Mapping[str, Any]], made_by: str
    ) -> list[dict]:
        """`add_decisions_to` as one journaled change; returns copies of the entries."""
        entries = state_ops.add_decisions_to({"decisions": []}, list(decisions), made_by)
        self.record({"op": "decisions", "entries": entries})
        return copy.deepcopy(entries)

    def add_usage(
        self,
        agent: str,
        usage: Mapping[str, int] | Any,
        api_calls: int = 1,
        cost_usd: float | None = None,
        *,
        task_id: str | None = None,
    ) -> None:
        """`add_usage_to` as one journaled change."""
        self.record(state_ops.usage_op(agent, usage, api_calls, cost_usd, task_id=task_id))

    # -- internals --

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The thread lock first, so only one thread per process ever waits on the file lock."""
        timeout = -1 if self.lock_timeout is None else self.lock_timeout
        if not self._shared.thread_lock.acquire(timeout=timeout):
            raise StateError(
                f"Timed out after {timeout}s waiting for another thread to save {self.path}."
            )
        try:
            lock = self._shared.file_lock
            try:
                lock.acquire(timeout=timeout, poll_interval=0.002)
            except Timeout as exc:
                raise StateError(
                    f"Timed out after {timeout}s waiting for {self.lock_path}: another process "
                    f"keeps {self.path} locked. Stop it, or wait for it to finish."
                ) from exc
            except OSError as exc:
                raise StateError(f"Cannot lock {self.lock_path}: {exc.strerror or exc}.") from exc
            try:
                yield
            finally:
                lock.release()
        finally:
            self._shared.thread_lock.release()

    def _current(self) -> tuple[dict, bool]:
        """The state to change, under the locks: (state, whether it can be journaled).

        The run that owns the file (`exclusive`) keeps it in memory, checks by the file's
        identity that nothing else changed it, and journals its changes. Every other writer
        (the team CLI, tools, tests) reads the file and its journal and saves the file whole.
        """
        if self._owned and self._cache is not None:
            self._check_unchanged()
            return self._cache, True
        state, version, raw = self._load()
        journaled = self._owned and version == SCHEMA_VERSION and bool(raw)
        if journaled:
            self._cache = state
        return state, journaled

    def _check_unchanged(self) -> None:
        """Raise the changed-elsewhere error when the file or its journal is not ours any more."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._keep_cache_as_last_good()
            raise self._changed_elsewhere(None) from None
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self._snapshot_id:
            raw = self.path.read_bytes()
            if raw != self._written:
                self._keep_cache_as_last_good()
                raise self._changed_elsewhere(raw)
            self._snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if not self._journal.intact():
            self._keep_cache_as_last_good()
            raise self._changed_elsewhere(self.path.read_bytes(), what=self._journal.path)

    def _keep_cache_as_last_good(self) -> None:
        """The run's own last version includes its journal: keep that, not the older file."""
        if self._cache is not None:
            with contextlib.suppress(TypeError, ValueError, ValidationError):
                self._written = encoder().encode(self._cache).encode("utf-8")
        self._cache = None

    def _load(self) -> tuple[dict, int, bytes]:
        """The file with its journal's changes applied; never writes to either."""
        data, version, raw = self._load_file()
        if not raw:
            return data, version, raw
        base = digest(raw)
        size = apply_journal(self.path, raw, data, self.stats)
        self._journal.start(base, size)
        return data, version, raw

    def _load_file(self) -> tuple[dict, int, bytes]:
        """Parse, migrate and validate the file; never writes to it."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self._owned and self._written is not None:
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
        if self._owned:
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                self._snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._owned and self._written is not None and raw != self._written:
            raise self._changed_elsewhere(raw)
        if raw == self._shared.known:
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
            self._shared.known = raw
        return data, version, raw

    def _make_directory(self) -> None:
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
            kept = f"a copy is at {_backup(self.path, raw, 'corrupt')}"
        except OSError as exc:
            kept = f"copying it aside failed ({exc.strerror or exc})"
        return StateError(
            f"Cannot use the team state file {self.path}: {reason}. The file was left untouched "
            f"and {kept}. Fix it by hand (schema: {SCHEMA_PATH}) or move it away to start fresh."
        )

    def _changed_elsewhere(self, raw: bytes | None, what: Path | None = None) -> StateError:
        """The error for a file changed or deleted during a run, after keeping both versions."""
        assert self._written is not None
        try:
            self._make_directory()
            good = _backup(self.path, self._written, "last-good")
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
                kept += f" (a copy of the changed file is at {_backup(self.path, raw, 'changed')})"
        return StateError(
            f"The team state file {target} was {what_} by something other than this run "
            "while it was running (agents' commands are not sandboxed and can write anywhere). "
            f"{kept}, and {last}. The run stops here: put back the version you trust{advice} "
            "and continue with --resume."
        )

    def _save(self, state: dict) -> None:
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
            raise _save_error(self.path, exc) from exc
        self._shared.known = payload
        self.stats.snapshot_writes += 1
        self.stats.snapshot_bytes += len(payload)
        # The new file holds every journaled change: the old journal's base no longer matches
        # it, so even if removing it fails here it is never applied twice.
        self._journal.remove()
        self._journal.start(digest(payload))
        self._snapshot_size = len(payload)
        self._checkpointed = time.monotonic()
        self._save_seconds = self._checkpointed - started
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            self._snapshot_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._owned:
            self._written = payload
