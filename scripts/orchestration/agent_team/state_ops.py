"""Changes to a team-communication document, as plain functions over the dict.

The state file (`TeamState`) and a job attempt's store apply them through `record`, and the
journal replays them (`apply_op`); each checks what it changes against the schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from .errors import StateError, UnknownTaskError
from .redaction import redact, redact_value
from .state_journal import check_agent_name, check_entity, check_fields
from .state_schema import TOKEN_KEYS, property_checks, utc_now
from .task_record import TaskRecord, UsageCounts, tasks_of


def _check_fields(kind: str, definition: str, fields: Mapping[str, Any]) -> None:
    allowed = property_checks(definition)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        names = ", ".join(allowed)
        raise StateError(f"Unknown {kind} field(s) {', '.join(unknown)}; allowed: {names}.")


def find_task(state: Mapping[str, Any], task_id: str) -> TaskRecord:
    """The task entry with `task_id`; UnknownTaskError naming the known ones otherwise."""
    tasks = tasks_of(state)
    for task in tasks:
        if task["task_id"] == task_id:
            return task
    known = ", ".join(t["task_id"] for t in tasks) or "none"
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


def _zero_counts() -> UsageCounts:
    return {"api_calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
            "cache_write_tokens": 0, "cost_usd": None, "cost_known": True}


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


def apply_op(state: dict, op: Mapping[str, Any], *, check: bool = True) -> None:
    """One journaled change, applied and checked against its entity's schema.

    Kinds: task (fields of one task), agent (fields of one live entry), turn (an agent's
    turn and tokens), update (an agent_updates line), usage, merge, decisions, feature (fields
    of the current feature), integration (fields of the integration pass, not its merges), run
    (fields of one `runs[]` entry). `check=False` when the whole state is validated anyway.
    """
    entity = check_entity if check else _no_check
    changed = check_fields if check else _no_check  # fields set on a valid task or agent
    kind = op.get("op")
    if kind == "task":
        set_task_in(state, op["task_id"], **op["fields"])
        changed("task", op["fields"], f"task {op['task_id']}")
    elif kind == "agent":
        if check:
            check_agent_name(op["agent"])
        agent = set_agent_in(state, op["agent"], **op["fields"])
        changed("agent", {**op["fields"], "updated_at": agent["updated_at"]},
                f"agent {op['agent']}")
    elif kind == "turn":
        if check:
            check_agent_name(op["agent"])
        entry = state["agents"].get(op["agent"]) or {}
        fields = {"turn": op["turn"], "updated_at": op["updated_at"],
                  "tokens": int(entry.get("tokens") or 0) + int(op["tokens"])}
        set_agent_in(state, op["agent"], **fields)
        changed("agent", fields, f"agent {op['agent']}")
    elif kind == "update":
        entity("agent_update", op["entry"], "an agent update")
        state["agent_updates"].append(op["entry"])
    elif kind == "usage":
        task_id = op.get("task_id")
        if task_id is not None and op.get("if_known") and not any(
                t["task_id"] == task_id for t in state["tasks"]):
            task_id = None
        add_usage_to(state, op["agent"], op["counts"], op.get("api_calls", 1),
                               op.get("cost_usd"), task_id=task_id)
        entity("usage", state["usage"], "usage")
        if task_id is not None:
            entity("task", find_task(state, task_id), f"task {task_id}")
    elif kind == "merge":
        entity("merge", op["entry"], "a merge")
        state["integration"].setdefault("merges", []).append(op["entry"])
    elif kind == "branch":
        claim_branch_in(state, op["name"], exists=bool(op.get("exists")))
    elif kind == "decisions":
        for entry in op["entries"]:
            entity("decision", entry, "a decision")
        state["decisions"].extend(op["entries"])
    elif kind == "feature":
        feature = state["current_feature"]
        if feature is not None:  # no feature: nothing to describe (as before it was planned)
            feature.update(op["fields"])
            entity("feature", feature, "the current feature")
    elif kind == "integration":
        integration = state["integration"]
        integration.update(op["fields"])
        entity("integration", {k: v for k, v in integration.items() if k != "merges"},
               "the integration")
    elif kind == "run":
        for entry in state.get("runs", []):
            if entry["run_id"] == op["run_id"]:
                entry.update(op["fields"])
                entity("run", entry, f"run {op['run_id']}")
    else:
        raise StateError(f"Unknown state change {kind!r}.")


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


def set_task_in(state: dict, task_id: str, **fields: Any) -> TaskRecord:
    """Change fields of one task; UnknownTaskError when the plan has no such task."""
    _check_fields("task", "task", fields)
    task = find_task(state, task_id)
    # The names were just checked against the schema's task properties, the values are
    # checked with the whole entry by the caller (`apply_op`) or when the state is saved.
    task.update(cast(TaskRecord, fields))
    return task


def set_agent_in(state: dict, role: str, **fields: Any) -> dict:
    """Change the live view of one agent, creating it as idle first if needed."""
    _check_fields("agent", "agent", fields)
    agent = state.setdefault("agents", {}).setdefault(role, {"status": "idle"})
    agent.update(fields)
    agent["updated_at"] = fields.get("updated_at") or utc_now()
    return agent


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


def usage_op(agent: str, usage: Mapping[str, int] | Any, api_calls: int = 1,
             cost_usd: float | None = None, *, task_id: str | None = None,
             if_known: bool = False) -> dict[str, Any]:
    """The journaled form of `add_usage_to`, checked now so a bad value is never written.

    `if_known`: count it for the task only when the plan has that task.
    """
    probe = {"usage": _zero_counts()}
    add_usage_to(probe, agent, usage, api_calls, cost_usd)
    op: dict[str, Any] = {"op": "usage", "agent": agent, "counts": _token_counts(usage),
                          "api_calls": api_calls, "cost_usd": cost_usd}
    if task_id is not None:
        op |= {"task_id": task_id, "if_known": if_known}
    return op
