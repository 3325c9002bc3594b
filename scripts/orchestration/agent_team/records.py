"""Writing a run's records to its store: tasks, agents' live entries, notes, the feature.

Each function is one journaled change (O(1), see `state_journal.py`) or one transaction.
The event log gets the same facts, so a reader of either
sees the run; the state file holds the current view, the log the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .run_context import RunContext
from .state_ops import append_update_to, find_task
from .state_schema import utc_now
from .task_record import TaskRecord


def set_task(run: RunContext, task_id: str, *, agent: tuple[str, Mapping[str, Any]] | None = None,
             **fields: Any) -> None:
    """Update one task (and, with `agent=(id, fields)`, its agent's live entry in the same
    change); a status change is also an event."""
    ops: list[dict[str, Any]] = [{"op": "task", "task_id": task_id, "fields": fields}]
    if agent is not None:
        ops.append(_agent_op(agent[0], dict(agent[1])))
    task = run.store.record(*ops, pick=lambda state: find_task(state, task_id))
    if "status" in fields:
        run.events.emit("task_status", task_id=task_id, status=fields["status"],
                        error=fields.get("error"), role=(task or {}).get("assigned_to"))


def set_agent(run: RunContext, agent_id: str, **fields: Any) -> None:
    run.store.record(_agent_op(agent_id, fields))


def _agent_op(agent_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    fields.setdefault("updated_at", utc_now())
    return {"op": "agent", "agent": agent_id, "fields": fields}


def note(run: RunContext, agent: str, task_id: str | None, status: str, message: str,
         details: Mapping[str, Any] | None = None) -> None:
    """Append a line to the state file's updates (what the team said and did)."""
    entry = append_update_to({"agent_updates": []}, agent, task_id, status, message,
                                       dict(details or {}))
    run.store.record({"op": "update", "entry": entry})


def set_feature_status(run: RunContext, status: str, **fields: Any) -> None:
    run.store.record({"op": "feature",
                      "fields": {"status": status, "updated_at": utc_now(), **fields}})


def task_record(run: RunContext, task_id: str) -> TaskRecord:
    """The task as the store has it now."""
    return run.store.view(lambda state: find_task(state, task_id))
