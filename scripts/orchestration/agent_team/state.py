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

from .errors import StateError, UnknownTaskError
from .fsutil import write_atomic
from .redaction import redact, redact_value, secret_pattern
from .state_journal import (
    CHECKPOINT_SECONDS,
    MIN_COMPACT_BYTES,
    SAVE_TIME_FACTOR,
    IoStats,
    JournalWriter,
    check_agent_name,
    check_entity,
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
    TOKEN_KEYS,
    describe_error,
    encoder,
    load_schema,
    new_state,
    property_checks,
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


def _check_fields(kind: str, definition: str, fields: Mapping[str, Any]) -> None:
    allowed = property_checks(definition)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        names = ", ".join(allowed)
        raise StateError(f"Unknown {kind} field(s) {', '.join(unknown)}; allowed: {names}.")


def find_task(state: Mapping[str, Any], task_id: str) -> dict:
    """The task entry with `task_id`; UnknownTaskError naming the known ones otherwise."""
    for task in state["tasks"]:
        if task.get("task_id") == task_id:
            return task
    known = ", ".join(t.get("task_id", "?") for t in state["tasks"]) or "none"
    raise UnknownTaskError(f"No task {task_id!r} in the team state (tasks: {known}).")


def _no_check(definition: str, value: Any, where: str) -> None:
    """Entity checks are skipped when the whole state is validated before it is saved."""


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"{name} must be a non-negative integer, got {value!r}.")
    return value


def _token_counts(usage: Mapping[str, int] | Any) -> dict[str, int]:
    if isinstance(usage, Mapping):
        unknown = sorted(set(usage) - set(TOKEN_KEYS))
        if unknown:
            raise StateError(
                f"Unknown usage key(s) {', '.join(unknown)}; use {', '.join(TOKEN_KEYS)}."
            )
        return {k: _count(k, usage.get(k, 0)) for k in TOKEN_KEYS}
    return {k: _count(k, getattr(usage, k, 0)) for k in TOKEN_KEYS}


def _zero_counts() -> dict[str, Any]:
    return {"api_calls": 0, **dict.fromkeys(TOKEN_KEYS, 0), "cost_usd": None, "cost_known": True}


def _accumulate(bucket: dict, counts: Mapping[str, int], calls: int, cost: float | None) -> None:
    """Sum into `bucket`; one call of unknown cost makes the whole bucket's cost unknown."""
    was_known = bucket.get(
        "cost_known", bucket.get("cost_usd") is not None or not bucket.get("api_calls")
    )
    bucket["api_calls"] = bucket.get("api_calls", 0) + calls
    for key in TOKEN_KEYS:
        bucket[key] = bucket.get(key, 0) + counts[key]
    known = bool(was_known) and cost is not None
    bucket["cost_usd"] = (round((bucket.get("cost_usd") or 0.0) + cost, 10)
                          if known and cost is not None else None)
    bucket["cost_known"] = known


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
                TeamState.apply_op(data, op)
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

    The helpers come in pairs: `append_update_to(state, ...)` and friends change a state dict
    inside a transaction the caller already holds; `append_update(...)` runs the same change
    in a transaction of its own.
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

    def task(self, task_id: str) -> dict:
        """A copy of one task; UnknownTaskError when the plan has no such task."""
        return self.view(lambda state: find_task(state, task_id))

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
                self.apply_op(state, op, check=False)
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
                    self.apply_op(state, op)
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

    @staticmethod
    def apply_op(state: dict, op: Mapping[str, Any], *, check: bool = True) -> None:
        """One journaled change, applied and checked against its entity's schema.

        Kinds: task (fields of one task), agent (fields of one live entry), turn (an agent's
        turn and tokens), update (an agent_updates line), usage, merge, decisions. `check=False`
        when the whole state is validated anyway.
        """
        entity = check_entity if check else _no_check
        kind = op.get("op")
        if kind == "task":
            task = TeamState.set_task_in(state, op["task_id"], **op["fields"])
            entity("task", task, f"task {op['task_id']}")
        elif kind == "agent":
            if check:
                check_agent_name(op["agent"])
            agent = TeamState.set_agent_in(state, op["agent"], **op["fields"])
            entity("agent", agent, f"agent {op['agent']}")
        elif kind == "turn":
            if check:
                check_agent_name(op["agent"])
            entry = state["agents"].get(op["agent"]) or {}
            agent = TeamState.set_agent_in(
                state, op["agent"], turn=op["turn"], updated_at=op["updated_at"],
                tokens=int(entry.get("tokens") or 0) + int(op["tokens"]))
            entity("agent", agent, f"agent {op['agent']}")
        elif kind == "update":
            entity("agent_update", op["entry"], "an agent update")
            state["agent_updates"].append(op["entry"])
        elif kind == "usage":
            task_id = op.get("task_id")
            if task_id is not None and op.get("if_known") and not any(
                    t["task_id"] == task_id for t in state["tasks"]):
                task_id = None
            TeamState.add_usage_to(state, op["agent"], op["counts"], op.get("api_calls", 1),
                                   op.get("cost_usd"), task_id=task_id)
            entity("usage", state["usage"], "usage")
            if task_id is not None:
                entity("task", find_task(state, task_id), f"task {task_id}")
        elif kind == "merge":
            entity("merge", op["entry"], "a merge")
            state["integration"].setdefault("merges", []).append(op["entry"])
        elif kind == "branch":
            TeamState.claim_branch_in(state, op["name"], exists=bool(op.get("exists")))
        elif kind == "decisions":
            for entry in op["entries"]:
                entity("decision", entry, "a decision")
            state["decisions"].extend(op["entries"])
        else:
            raise StateError(f"Unknown state change {kind!r}.")

    def update(self, fn: Callable[[dict], T]) -> T:
        """Run `fn(state)` inside one transaction and return its result."""
        with self.transaction() as state:
            return fn(state)

    # -- helpers the orchestrator calls from many threads --

    @staticmethod
    def append_update_to(
        state: dict,
        agent: str,
        task_id: str | None,
        status: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> dict:
        """Append one agent update with secrets masked; returns the entry."""
        entry: dict[str, Any] = {
            "timestamp": utc_now(),
            "agent": agent,
            "task_id": task_id,
            "status": status,
            "message": redact(message) if isinstance(message, str) else message,
        }
        if details is not None:
            entry["details"] = redact_value(dict(details))
        state["agent_updates"].append(entry)
        return entry

    def append_update(
        self,
        agent: str,
        task_id: str | None,
        status: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> dict:
        """`append_update_to` as one journaled change; returns the entry as written."""
        entry = self.append_update_to({"agent_updates": []}, agent, task_id, status, message,
                                      details)
        self.record({"op": "update", "entry": entry})
        return copy.deepcopy(entry)

    @staticmethod
    def set_task_in(state: dict, task_id: str, **fields: Any) -> dict:
        """Change fields of one task; UnknownTaskError when the plan has no such task."""
        _check_fields("task", "task", fields)
        task = find_task(state, task_id)
        task.update(fields)
        return task

    def set_task(self, task_id: str, **fields: Any) -> dict:
        """`set_task_in` as one journaled change; returns a copy of the task."""
        _check_fields("task", "task", fields)
        return self.record({"op": "task", "task_id": task_id, "fields": fields},
                           pick=lambda state: find_task(state, task_id))

    @staticmethod
    def set_agent_in(state: dict, role: str, **fields: Any) -> dict:
        """Change the live view of one agent, creating it as idle first if needed."""
        _check_fields("agent", "agent", fields)
        agent = state.setdefault("agents", {}).setdefault(role, {"status": "idle"})
        agent.update(fields)
        agent["updated_at"] = fields.get("updated_at") or utc_now()
        return agent

    def set_agent(self, role: str, **fields: Any) -> dict:
        """`set_agent_in` as one journaled change; returns a copy of the agent."""
        _check_fields("agent", "agent", fields)
        fields = {**fields, "updated_at": fields.get("updated_at") or utc_now()}
        return self.record({"op": "agent", "agent": role, "fields": fields},
                           pick=lambda state: state["agents"][role])

    def agent_turn(self, role: str, turn: int, tokens: int) -> None:
        """An agent's live entry after one model turn: its turn number and tokens so far."""
        self.record({"op": "turn", "agent": role, "turn": turn, "tokens": tokens,
                     "updated_at": utc_now()})

    @staticmethod
    def claim_branch_in(state: dict, branch: str, *, exists: bool) -> None:
        """Add `branch` to the feature's own branches; StateError when it is the user's.

        A branch that `exists` already and is not in the list was not made by this run.
        A feature recorded before branches were owned (no list) trusts every name.
        """
        if not isinstance(branch, str) or not branch:
            raise StateError(f"Refusing to record branch {branch!r}: not a branch name.")
        feature = state.get("current_feature")
        owned = feature.get("branches") if feature is not None else None
        if owned is None or branch in owned:
            return
        if exists:
            raise StateError(
                f"Branch {branch} already exists and this run did not create it; it is left "
                "alone. Rename it (git branch -m) and resume.")
        owned.append(branch)

    def claim_branch(self, branch: str, *, exists: bool) -> None:
        """`claim_branch_in` as one journaled change: O(1), never a rewrite of the file."""
        owned = self.view(lambda state: (state.get("current_feature") or {}).get("branches"))
        if owned is None or branch in owned:
            return
        self.record({"op": "branch", "name": branch, "exists": exists})

    def add_merge(self, entry: Mapping[str, Any]) -> None:
        """Append one merge to the integration's merge log."""
        self.record({"op": "merge", "entry": dict(entry)})

    @staticmethod
    def add_decisions_to(
        state: dict, decisions: Iterable[str | Mapping[str, Any]], made_by: str
    ) -> list[dict]:
        """Record decisions (text or {decision, rationale, affected_agents}) by one agent."""
        entries = []
        for item in decisions:
            raw = {"decision": item} if isinstance(item, str) else dict(item)
            entry = {"decision": raw.get("decision")}
            entry |= {k: raw[k] for k in ("rationale", "affected_agents") if raw.get(k) is not None}
            entries.append({**entry, "made_by": made_by, "timestamp": utc_now()})
        state["decisions"].extend(entries)
        return entries

    def add_decisions(
        self, decisions: Iterable[str | Mapping[str, Any]], made_by: str
    ) -> list[dict]:
        """`add_decisions_to` as one journaled change; returns copies of the entries."""
        entries = self.add_decisions_to({"decisions": []}, list(decisions), made_by)
        self.record({"op": "decisions", "entries": entries})
        return copy.deepcopy(entries)

    @staticmethod
    def add_usage_to(
        state: dict,
        agent: str,
        usage: Mapping[str, int] | Any,
        api_calls: int = 1,
        cost_usd: float | None = None,
        *,
        task_id: str | None = None,
    ) -> None:
        """Add real API usage to the totals, to `by_agent[agent]` and optionally to one task.

        `cost_usd=None` means the price is unknown: the cost then stays None with `cost_known`
        false for good, because an unknown price counted as zero would understate the bill.
        """
        counts = _token_counts(usage)
        calls = _count("api_calls", api_calls)
        if cost_usd is not None and (
            isinstance(cost_usd, bool)
            or not isinstance(cost_usd, (int, float))
            or not 0 <= cost_usd < float("inf")
        ):
            raise StateError(f"cost_usd must be a non-negative number or None, got {cost_usd!r}.")
        buckets = [state["usage"]]
        buckets.append(state["usage"].setdefault("by_agent", {}).setdefault(agent, _zero_counts()))
        if task_id is not None:
            buckets.append(find_task(state, task_id).setdefault("usage", _zero_counts()))
        for bucket in buckets:
            _accumulate(bucket, counts, calls, cost_usd)

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
        self.record(self.usage_op(agent, usage, api_calls, cost_usd, task_id=task_id))

    @staticmethod
    def usage_op(agent: str, usage: Mapping[str, int] | Any, api_calls: int = 1,
                 cost_usd: float | None = None, *, task_id: str | None = None,
                 if_known: bool = False) -> dict[str, Any]:
        """The journaled form of `add_usage_to`, checked now so a bad value is never written.

        `if_known`: count it for the task only when the plan has that task.
        """
        probe = {"usage": _zero_counts()}
        TeamState.add_usage_to(probe, agent, usage, api_calls, cost_usd)
        op: dict[str, Any] = {"op": "usage", "agent": agent, "counts": _token_counts(usage),
                              "api_calls": api_calls, "cost_usd": cost_usd}
        if task_id is not None:
            op |= {"task_id": task_id, "if_known": if_known}
        return op

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
