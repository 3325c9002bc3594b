"""The team state: locked transactions over one JSON file, and the helpers built on them.

Every orchestrator thread and process coordinates through one JSON file, so every change is a
read-modify-write under a thread lock and a file lock, validated before it is written, and
written through a temporary file and `os.replace` (`fsutil.write_atomic`) so a reader never
sees half a file. Reading, saving and refusing the file live in `state_file.py` (`StateFile`,
`TeamState.file`): a file that does not parse or validate is never overwritten; it is copied
aside and the run stops.

What a valid state is lives in `state_schema.py`, how old versions are read in
`state_migrations.py`, what counts as a secret in `redaction.py`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from filelock import Timeout

from . import state_ops
from .errors import StateError
from .redaction import redact_value, secret_pattern
from .state_file import STATE_RELATIVE_PATH, StateFile, backup, save_error
from .state_journal import CHECKPOINT_SECONDS, MIN_COMPACT_BYTES, SAVE_TIME_FACTOR
from .state_schema import (
    SCHEMA_VERSION,
    new_state,
    utc_now,
)

__all__ = ["TeamState"]

T = TypeVar("T")


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
        #: The file on disk, its journal and what this object last read and wrote of them.
        self.file = StateFile(self.path)
        self.stats = self.file.stats

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
            state.file.missing_project_name = name
        return state

    def create(self, project_name: str) -> bool:
        """Write a fresh state unless a file is already there; True when this call wrote it."""
        self.file.make_directory()
        with self._locked():
            if self.path.exists():
                return False
            self.file.save(new_state(project_name))
            return True

    def read(self) -> dict:
        """A validated private copy of the state as it is now (the file and its journal)."""
        if self.file.owned and getattr(self.file.shared.local, "state", None) is None:
            with self._locked():
                state, cached = self._current()
                return copy.deepcopy(state) if cached else state
        return self.file.load()[0]

    def view(self, pick: Callable[[dict], T]) -> T:
        """A copy of one part of the state, without copying the rest (`read` copies it all)."""
        active = getattr(self.file.shared.local, "state", None)
        if active is not None:
            return copy.deepcopy(pick(active))
        if self.file.owned:
            with self._locked():
                return copy.deepcopy(pick(self._current()[0]))
        return pick(self.file.load()[0])

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Make this object the file's only writer while the body runs (a run, under its lock).

        Nothing else writes the file during a run, so any change found by a later read or
        transaction came from elsewhere (an agent's command can write anywhere): it is refused,
        valid or not, and never overwritten; see `StateFile.check_unchanged`.
        """
        if self.file.missing_project_name is not None:
            self.file.make_directory()
        with self._locked():
            try:
                self.file.written = self.path.read_bytes()
            except FileNotFoundError:
                self.file.written = None
            except OSError as exc:
                raise StateError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
            self.file.owned = True
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
            self.file.owned = False
            self.file.written = None
            self.file.cache = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict]:
        """Yield the state for mutation; save it on normal exit, write nothing on an exception."""
        local = self.file.shared.local
        active = getattr(local, "state", None)
        if active is not None:
            yield active
            return
        if self.file.missing_project_name is not None:
            self.file.make_directory()
        with self._locked():
            state, version, raw = self.file.load()
            local.state = state
            try:
                yield state
            finally:
                local.state = None
            if version != SCHEMA_VERSION:
                try:
                    backup(self.path, raw, f"v{version}")
                except OSError as exc:
                    raise StateError(
                        f"Not migrating {self.path}: could not keep a copy of the version "
                        f"{version} file first ({exc.strerror or exc}). Nothing was written."
                    ) from exc
            state["last_updated"] = utc_now()
            self.file.cache = None  # the caller may still hold parts of `state`
            self.file.save(state)

    def checkpoint(self) -> bool:
        """Fold the journal into the state file now; True when there was something to fold."""
        if getattr(self.file.shared.local, "state", None) is not None:
            return False
        with self._locked():
            if self.file.journal.size == 0 and not self.file.journal.path.exists():
                return False
            state, _ = self._current()
            self.file.save(state)
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
        if self.file.owned and getattr(self.file.shared.local, "state", None) is None:
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
                self.file.cache = None
                raise
            try:
                self.file.journal.append({"at": now, "ops": items})
            except OSError as exc:
                self.file.cache = None
                raise save_error(self.file.journal.path, exc) from exc
            if (self.file.journal.size >= max(MIN_COMPACT_BYTES, self.file.snapshot_size)
                    or time.monotonic() - self.file.checkpointed
                    >= max(CHECKPOINT_SECONDS, SAVE_TIME_FACTOR * self.file.save_seconds)):
                self.file.save(state)
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
        if not self.file.shared.thread_lock.acquire(timeout=timeout):
            raise StateError(
                f"Timed out after {timeout}s waiting for another thread to save {self.path}."
            )
        try:
            lock = self.file.shared.file_lock
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
            self.file.shared.thread_lock.release()

    def _current(self) -> tuple[dict, bool]:
        """The state to change, under the locks: (state, whether it can be journaled).

        The run that owns the file (`exclusive`) keeps it in memory, checks by the file's
        identity that nothing else changed it, and journals its changes. Every other writer
        (the team CLI, tools, tests) reads the file and its journal and saves the file whole.
        """
        if self.file.owned and self.file.cache is not None:
            self.file.check_unchanged()
            return self.file.cache, True
        state, version, raw = self.file.load()
        journaled = self.file.owned and version == SCHEMA_VERSION and bool(raw)
        if journaled:
            self.file.cache = state
        return state, journaled

