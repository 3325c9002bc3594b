"""Migrations of the team state file: each one brings a state up by one schema version.

Like llm's `migrations.py`, the steps live in one list in order, appended by the `@migration`
decorator; a file declares its version and runs every step after it. Version 0 is the
hand-written template of the guides, read liberally: values that fit are kept, the rest is
kept aside in one agent update, and `TeamState` backs the original file up before saving.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .errors import StateError
from .state_schema import SCHEMA_VERSION, new_state, property_checks, utc_now

__all__ = [
    "MIGRATIONS",
    "SUPPORTED_VERSIONS",
    "migrate_state",
    "migration",
    "schema_version_of",
]

Migration = Callable[[dict], dict]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the step from version `len(MIGRATIONS)` to the next one."""
    MIGRATIONS.append(fn)
    return fn


SUPPORTED_VERSIONS: tuple[int, ...] = ()  # set below, once every migration is registered


def schema_version_of(data: Mapping[str, Any]) -> int:
    """The version a file declares; a file without `schema_version` is the legacy version 0."""
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise StateError(
            f"schema_version {version!r} is not one this agent_team can read (supported: "
            f"{supported}). Upgrade agent_team, or move the file away to start a fresh state."
        )
    return int(version)


def migrate_state(data: dict) -> dict:
    """Bring `data` up to SCHEMA_VERSION by running every migration after its declared version."""
    for step in MIGRATIONS[schema_version_of(data) :]:
        data = step(data)
    return data


_TASK_STATUS = {
    **dict.fromkeys(("in-progress", "working", "started", "active", "running"), "in_progress"),
    **dict.fromkeys(("done", "complete", "finished", "success", "succeeded"), "completed"),
    **dict.fromkeys(("error", "errored", "failure"), "failed"),
}


def _legacy_time(value: Any) -> str | None:
    """Legacy timestamps came naive, with 'Z' or as epoch numbers; all become UTC with 'Z'."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value, timezone.utc)
        elif isinstance(value, str) and value.strip():
            moment = datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", value.strip()))
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    stamp = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


_V1_ONLY = ("agents", "integration", "usage", "runs")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _first(raw: Mapping[str, Any], *keys: str) -> Any:
    return next((raw[k] for k in keys if raw.get(k) not in (None, "", [], {})), None)


def _slug(text: Any, drop: str = r"[^A-Za-z0-9._-]+", limit: int = 64) -> str:
    return re.sub(drop, "-", str(text or "")).strip("-._")[:limit]


def _status(value: Any, allowed: Iterable[str], default: str) -> str:
    status = str(value or "").strip().lower().replace(" ", "_")
    status = _TASK_STATUS.get(status, status)
    return status if status in allowed else default


def _enum(schema: object) -> list[Any]:
    """The `enum` of a property's schema (empty when it has none)."""
    return list(schema.get("enum", [])) if isinstance(schema, Mapping) else []


def _fit(raw: Mapping[str, Any], definition: str | None, **fields: Any) -> dict:
    """The fields of `raw`, overridden by `fields`, that the schema knows and that fit it."""
    merged = {**raw, **{k: v for k, v in fields.items() if v is not None}}
    for key in [k for k in merged if k.endswith("_at") or k == "timestamp"]:
        merged[key] = _legacy_time(merged[key])
    checks = property_checks(definition)
    return {
        k: merged[k] for k, check in checks.items() if k in merged and check.is_valid(merged[k])
    }


def _legacy_tasks(raw_tasks: list[dict]) -> list[dict]:
    ids: dict[str, str] = {}
    for index, raw in enumerate(raw_tasks):
        new = _slug(_first(raw, "task_id", "id")) or f"TASK-{index + 1:03d}"
        while new in ids.values():
            new = f"{new[:58]}-{index + 1}"
        ids[str(_first(raw, "task_id", "id") or index)] = new
    tasks = []
    for task_id, raw in zip(ids.values(), raw_tasks, strict=True):
        role = _slug(_first(raw, "assigned_to", "agent", "role")).lower()
        role = re.sub(r"[^a-z0-9_-]", "-", re.sub(r"^[^a-z]+", "", role))[:40]
        deps = raw.get("dependencies", raw.get("depends_on"))
        deps = [ids[str(d)] for d in deps if str(d) in ids] if isinstance(deps, list) else []
        progress = raw.get("progress")
        task = _fit(
            raw,
            "task",
            task_id=task_id,
            description=str(_first(raw, "description", "title", "name") or task_id),
            assigned_to=role or "unassigned",
            priority={"critical": "high", "urgent": "high"}.get(str(raw.get("priority"))),
            dependencies=[d for d in dict.fromkeys(deps) if d != task_id],
            status=_status(
                raw.get("status"), _enum(property_checks("task")["status"].schema), "pending"
            ),
            progress=max(0, min(100, int(progress)))
            if isinstance(progress, (int, float))
            else None,
            result=None,
        )
        claims = {k: raw[k] for k in ("files_modified", "test_results") if raw.get(k)}
        if claims or any(raw.get(k) for k in ("completed_items", "blockers", "notes", "summary")):
            notes = f"Reported by the agent, not verified: {json.dumps(claims)}" if claims else ""
            task["result"] = _fit(
                raw,
                "task_result",
                completed_items=[str(v) for v in raw.get("completed_items") or []],
                files_modified=[],
                blockers=[str(v) for v in raw.get("blockers") or []],
                notes="\n".join(n for n in (str(raw.get("notes") or ""), notes) if n) or None,
                test_results=None,
            )
        tasks.append(task)
    return tasks


@migration
def m001_legacy_template(data: dict) -> dict:
    """Version 0 -> 1: the hand-written template of the guides, read liberally.

    Values that fit version 1 are kept, statuses it does not know become "pending", and
    top-level fields without a place in it are kept in one agent update from "migration".
    `TeamState` backs the original file up before the first migrated save.
    """
    manager = data.get("manager_instructions")
    manager = manager if isinstance(manager, dict) else {}
    when = _legacy_time(_first(data, "last_updated", "updated_at")) or utc_now()
    name = _first(data, "project_name", "project") or manager.get("project")
    state = new_state(name if isinstance(name, str) else "")
    state["last_updated"] = when
    feature = _first(data, "current_feature") or manager.get("current_focus")
    feature = {"title": feature} if isinstance(feature, str) else feature
    if isinstance(feature, dict):
        title = str(_first(feature, "title", "name", "description", "id") or "feature")
        ident = str(_first(feature, "id", "feature_id") or _slug(title.lower(), r"[^a-z0-9]+", 40))
        state["current_feature"] = _fit(
            feature,
            "feature",
            id=ident,
            title=title,
            branch=feature.get("branch") or f"feature/{_slug(ident.lower(), r'[^a-z0-9]+', 40)}",
            base_branch=feature.get("base_branch") or "main",
            status=_status(
                feature.get("status"),
                _enum(property_checks("feature")["status"].schema),
                "in_progress",
            ),
            started_at=_legacy_time(feature.get("started_at")) or when,
        )
    tasks = _first(data, "tasks") or manager.get("tasks") or manager.get("active_tasks") or []
    if isinstance(tasks, dict):
        tasks = [{"task_id": k, **v} for k, v in tasks.items() if isinstance(v, dict)]
    state["tasks"] = _legacy_tasks([t for t in tasks if isinstance(t, dict)])
    state.update(_fit({k: data[k] for k in _V1_ONLY if k in data}, None))
    for raw in _list(data.get("decisions")):
        raw = {"decision": raw} if isinstance(raw, str) else raw
        if isinstance(raw, dict) and _first(raw, "decision", "title"):
            made_by = _first(raw, "made_by", "agent", "by")
            state["decisions"].append(
                _fit(
                    raw,
                    "decision",
                    decision=str(_first(raw, "decision", "title")),
                    made_by=str(made_by or "unknown"),
                    timestamp=_legacy_time(raw.get("timestamp")) or when,
                )
            )
    for raw in _list(data.get("agent_updates")):
        raw = raw if isinstance(raw, dict) else {"message": raw}
        message = _first(raw, "message", "summary", "action")
        used = {"timestamp", "agent", "agent_id", "agent_name", "task_id", "status", "message"}
        details = {k: v for k, v in raw.items() if k not in used}
        state["agent_updates"].append(
            _fit(
                raw,
                "agent_update",
                timestamp=_legacy_time(raw.get("timestamp")) or when,
                agent=str(_first(raw, "agent", "agent_id", "agent_name") or "unknown"),
                task_id=None if raw.get("task_id") is None else str(raw["task_id"]),
                status=str(raw.get("status") or "info"),
                message=message if isinstance(message, str) else json.dumps(message or ""),
                details=details or None,
            )
        )
    shapes: dict[str, type | tuple[type, ...]] = {
        "tasks": (list, dict), "decisions": list, "agent_updates": list}
    shapes |= {"current_feature": (str, dict), "project_name": str, "project": str}
    known = {k for k, kind in shapes.items() if isinstance(data.get(k), kind)}
    known |= {"last_updated", "updated_at", "schema_version"}
    known |= {k for k in _V1_ONLY if state.get(k) == data.get(k)}
    leftovers = {k: v for k, v in data.items() if k not in known and v not in (None, "", [], {})}
    if leftovers:
        state["agent_updates"].append(
            {
                "timestamp": when,
                "agent": "migration",
                "task_id": None,
                "status": "info",
                "message": "Fields of the legacy file that have no place in schema version 1.",
                "details": leftovers,
            }
        )
    return state


SUPPORTED_VERSIONS = tuple(range(len(MIGRATIONS) + 1))
if SUPPORTED_VERSIONS[-1] != SCHEMA_VERSION:
    raise RuntimeError("agent_team.state_migrations needs exactly one migration per schema version")
