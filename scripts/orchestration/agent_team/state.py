"""The team state file: schema validation, migrations, locked transactions and atomic saves.

Every orchestrator thread and process coordinates through one JSON file, so every change is a
read-modify-write under a thread lock and a file lock, validated before it is written, and
written through a temporary file and `os.replace` so a reader never sees half a file. A file
that does not parse or validate is never overwritten: it is copied aside and the run stops.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from .errors import StateError

STATE_RELATIVE_PATH = Path(".ai-agents/state/team-communication.json")
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "team-communication.schema.json"
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

T = TypeVar("T")
Migration = Callable[[dict], dict]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the step from version `len(MIGRATIONS)` to the next one."""
    MIGRATIONS.append(fn)
    return fn


def utc_now() -> str:
    """The one timestamp format of the state file: UTC, milliseconds, 'Z'."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_state(project_name: str) -> dict:
    """A fresh, valid state with nothing planned yet, keys in schema order."""
    return {
        "schema_version": SCHEMA_VERSION,
        "project_name": project_name,
        "last_updated": utc_now(),
        "current_feature": None,
        "agents": {},
        "tasks": [],
        "decisions": [],
        "agent_updates": [],
        "integration": {"status": "not_started", "merges": []},
        "usage": {
            "api_calls": 0,
            **dict.fromkeys(TOKEN_KEYS, 0),
            "cost_usd": None,
            "cost_known": True,
            "by_agent": {},
        },
        "runs": [],
    }


# --- secrets ------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"API_?KEY|(?:^|_)TOKEN(?:_|$)|SECRET|PASSWORD|PASSWD|(?:ACCESS|PRIVATE)_KEY", re.IGNORECASE
)
_KEY_SHAPES = (
    r"sk-ant-[A-Za-z0-9_-]{16,}",
    r"sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}",
    r"gh[pousr]_[A-Za-z0-9]{30,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])",
    r"AIza[0-9A-Za-z_-]{35}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",
)
_MIN_SECRET_LENGTH = 8
_env_cache: tuple[dict, dict[str, str]] = ({}, {})


def _env_secrets() -> dict[str, str]:
    """Secret-looking environment values (value -> name), rescanned only when the env changed."""
    global _env_cache
    raw = getattr(os.environ, "_data", None)
    snapshot = raw if isinstance(raw, dict) else dict(os.environ)
    cached_snapshot, secrets = _env_cache
    if snapshot != cached_snapshot:
        secrets = {
            value: name
            for name, value in os.environ.items()
            if len(value) >= _MIN_SECRET_LENGTH and _SECRET_NAME.search(name)
        }
        _env_cache = (dict(snapshot), secrets)
    return secrets


@lru_cache(maxsize=16)
def _secret_patterns(values: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One pattern for plain strings and one that also finds the values JSON-escaped."""
    literal = [re.escape(v) for v in values]
    escaped = [re.escape(json.dumps(v, ensure_ascii=False)[1:-1]) for v in values]
    shapes = [rf"(?<![A-Za-z0-9]){shape}" for shape in _KEY_SHAPES]
    plain = re.compile("|".join([*literal, *shapes]))
    in_json = re.compile("|".join(dict.fromkeys([*literal, *escaped, *shapes])))
    return plain, in_json


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    secrets = _env_secrets()
    values = tuple(sorted(secrets, key=lambda v: (-len(v), v)))
    return (*_secret_patterns(values), secrets)


def redact(text: str) -> str:
    """Mask secret environment values and API-key-shaped strings, so no file ever holds a key."""
    pattern, _, secrets = _patterns()
    return pattern.sub(lambda m: _mask(m.group(0), secrets), text)


def _mask(found: str, secrets: Mapping[str, str]) -> str:
    name = secrets.get(found)
    return f"[REDACTED:{name}]" if name else "[REDACTED]"


def _redact_value(value: Any) -> Any:
    """Redact every string (and dict key) inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


# --- schema -------------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))\Z"
)
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time without depending on optional jsonschema extras."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    datetime(year, month, day, hour, minute, min(second, 59))
    return second <= 60 and int(match.group(7) or 0) < 24 and int(match.group(8) or 0) < 60


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """Replace local `$ref`s by their targets: the schema has no cycles, and this halves the cost."""
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("$ref", "$defs")}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {**out, "allOf": [target]} if out else target
    if ref is not None:
        out["$ref"] = ref
    return out


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The JSON Schema of the state file, read once per process."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = load_schema()
    return Draft202012Validator(_inline_refs(schema, schema["$defs"]), format_checker=_FORMATS)


def _path_key(error: ValidationError) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path)


def first_error(data: Any) -> ValidationError | None:
    """The first schema violation in document order, the same one on every run."""
    errors = list(_validator().iter_errors(data))
    if not errors:
        return None
    first = min(errors, key=_path_key)
    return best_match(e for e in errors if e.absolute_path == first.absolute_path)


def validate_state(data: Any, path: str | os.PathLike[str] | None = None, *, action: str = "") -> None:
    """Raise StateError naming the file, the JSON path and the rule when `data` breaks the schema."""
    error = first_error(data)
    if error is None:
        return
    where = f"team state file {path}" if path else "team state"
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    hint = action or f"Fix that value so it matches the schema in {SCHEMA_PATH}."
    raise StateError(f"Invalid {where}: at {error.json_path}: {message}. {hint}")


def _ordered(value: Any, schema: Mapping[str, Any]) -> Any:
    """Copy of `value` with object keys in schema order, so diffs of the file stay readable."""
    for branch in schema.get("oneOf", ()):
        if branch.get("type") != "null":
            schema = branch
    for part in schema.get("allOf", ()):
        schema = {**part, **schema}
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        out = {k: _ordered(value[k], props[k]) for k in props if k in value}
        for k, v in value.items():
            if k not in out:
                out[k] = _ordered(v, extra) if extra else v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_ordered(v, schema["items"]) for v in value]
    return value


# --- migrations ---------------------------------------------------------------------------------

SUPPORTED_VERSIONS: tuple[int, ...] = ()  # filled in below, once every migration is registered


def schema_version_of(data: Mapping[str, Any]) -> int:
    """The version a file declares; a file without `schema_version` is the legacy version 0."""
    version = data.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise StateError(
            f"schema_version {version!r} is not one this agent_team can read (supported: "
            f"{supported}). Upgrade agent_team, or move the file away to start a fresh state."
        )
    return version


def migrate_state(data: dict) -> dict:
    """Bring `data` up to SCHEMA_VERSION by running each migration after its declared version."""
    for step in MIGRATIONS[schema_version_of(data) :]:
        data = step(data)
    return data


_TASK_STATUS = {
    **{s: s for s in ("pending", "in_progress", "completed", "failed", "blocked", "skipped")},
    **dict.fromkeys(("in-progress", "working", "started", "active", "running"), "in_progress"),
    **dict.fromkeys(("done", "complete", "finished", "success", "succeeded"), "completed"),
    **dict.fromkeys(("error", "errored", "failure"), "failed"),
}
_FEATURE_STATUS = {
    **{s: s for s in ("planning", "in_progress", "integrating", "completed", "failed", "stopped")},
    **{k: v for k, v in _TASK_STATUS.items() if v in ("in_progress", "completed", "failed")},
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
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _slug(text: str, pattern: str, fallback: str, limit: int) -> str:
    cleaned = re.sub(pattern, "-", text.strip()).strip("-._")[:limit]
    return cleaned or fallback


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [] if value in (None, "") else [value]
    return [v if isinstance(v, str) else json.dumps(v) for v in items]


def _text(*candidates: Any) -> str:
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _legacy_feature(raw: Any, when: str) -> dict | None:
    if isinstance(raw, str) and raw.strip():
        raw = {"title": raw}
    if not isinstance(raw, dict) or not raw:
        return None
    title = _text(raw.get("title"), raw.get("name"), raw.get("description"), raw.get("id"))
    ident = _text(raw.get("id"), raw.get("feature_id")) or _slug(
        title.lower(), r"[^a-z0-9]+", "feature", 40
    )
    status = _FEATURE_STATUS.get(str(raw.get("status", "")).lower(), "in_progress")
    feature = {
        "id": ident,
        "title": title or ident,
        "description": _text(raw.get("description")),
        "branch": _text(raw.get("branch")) or f"feature/{_slug(ident.lower(), r'[^a-z0-9]+', 'x', 40)}",
        "base_branch": _text(raw.get("base_branch")) or "main",
        "status": status,
        "started_at": _legacy_time(raw.get("started_at")) or when,
        "completed_at": _legacy_time(raw.get("completed_at")),
    }
    return {k: v for k, v in feature.items() if v != ""}


def _legacy_tasks(raw_tasks: Any) -> list[dict]:
    raw_tasks = [t for t in (raw_tasks if isinstance(raw_tasks, list) else []) if isinstance(t, dict)]
    ids: dict[str, str] = {}
    for index, raw in enumerate(raw_tasks):
        old = str(raw.get("task_id") or raw.get("id") or "")
        new = _slug(old, r"[^A-Za-z0-9._-]+", f"TASK-{index + 1:03d}", 64)
        while new in ids.values():
            new = f"{new[:60]}-{index + 1}"
        ids[old or f"#{index}"] = new
    tasks = []
    for index, raw in enumerate(raw_tasks):
        task_id = ids[str(raw.get("task_id") or raw.get("id") or "") or f"#{index}"]
        deps = raw.get("dependencies", raw.get("depends_on"))
        role = _text(raw.get("assigned_to"), raw.get("agent"), raw.get("role"))
        task: dict[str, Any] = {
            "task_id": task_id,
            "description": _text(raw.get("description"), raw.get("title"), raw.get("name")) or task_id,
            "assigned_to": _slug(role.lower(), r"[^a-z0-9_-]+", "unassigned", 40).lstrip("0123456789_-")
            or "unassigned",
            "dependencies": list(dict.fromkeys(ids[d] for d in _strings(deps) if d in ids)),
            "deliverables": _strings(raw.get("deliverables")),
            "status": _TASK_STATUS.get(str(raw.get("status", "")).lower(), "pending"),
        }
        priority = {"critical": "high", "urgent": "high"}.get(raw.get("priority"), raw.get("priority"))
        if priority in ("high", "medium", "low"):
            task["priority"] = priority
        progress = raw.get("progress")
        if isinstance(progress, (int, float)) and not isinstance(progress, bool):
            task["progress"] = max(0, min(100, int(progress)))
        for key in ("branch", "commit", "error"):
            if isinstance(raw.get(key), str):
                task[key] = raw[key]
        for key in ("started_at", "completed_at"):
            if _legacy_time(raw.get(key)):
                task[key] = _legacy_time(raw.get(key))
        claims = {k: raw[k] for k in ("files_modified", "test_results") if raw.get(k)}
        notes = _text(raw.get("notes"))
        if claims:
            notes = f"{notes}\nReported by the agent, not verified: {json.dumps(claims)}".strip()
        if claims or notes or any(k in raw for k in ("completed_items", "blockers", "summary")):
            result = {"summary": _text(raw.get("summary")), "notes": notes}
            task["result"] = {
                **{k: v for k, v in result.items() if v},
                "completed_items": _strings(raw.get("completed_items")),
                "files_modified": [],
                "blockers": _strings(raw.get("blockers")),
            }
        task["dependencies"] = [d for d in task["dependencies"] if d != task_id]
        tasks.append(task)
    return tasks


def _legacy_update(raw: Any, when: str) -> dict:
    if not isinstance(raw, dict):
        raw = {"message": raw if isinstance(raw, str) else json.dumps(raw)}
    used = {"timestamp", "agent", "agent_id", "agent_name", "task_id", "status", "message"}
    used |= {"summary", "action"}
    message = _text(raw.get("message"), raw.get("summary"), raw.get("action"))
    update: dict[str, Any] = {
        "timestamp": _legacy_time(raw.get("timestamp")) or when,
        "agent": _text(raw.get("agent"), raw.get("agent_id"), raw.get("agent_name")) or "unknown",
        "task_id": raw["task_id"] if isinstance(raw.get("task_id"), str) else None,
        "status": _text(raw.get("status")) or "info",
        "message": message,
    }
    details = {k: v for k, v in raw.items() if k not in used}
    if details:
        update["details"] = details
    return update


def _legacy_decision(raw: Any, when: str) -> dict | None:
    if isinstance(raw, str):
        raw = {"decision": raw}
    if not isinstance(raw, dict) or not _text(raw.get("decision"), raw.get("title")):
        return None
    decision = {
        "decision": _text(raw.get("decision"), raw.get("title")),
        "rationale": _text(raw.get("rationale"), raw.get("reason")),
        "affected_agents": _strings(raw.get("affected_agents")),
        "made_by": _text(raw.get("made_by"), raw.get("agent"), raw.get("by")) or "unknown",
        "timestamp": _legacy_time(raw.get("timestamp")) or when,
    }
    return {k: v for k, v in decision.items() if v != ""}


@migration
def m001_legacy_template(data: dict) -> dict:
    """Version 0 -> 1: the hand-written template of the guides, read liberally.

    Fields without a place in version 1 are kept in one agent update from "migration", and the
    original file is backed up by `TeamState` before the first migrated save.
    """
    manager = data.get("manager_instructions")
    manager = manager if isinstance(manager, dict) else {}
    when = _legacy_time(data.get("last_updated") or data.get("updated_at")) or utc_now()
    state = new_state(_text(data.get("project_name"), data.get("project"), manager.get("project")))
    state["last_updated"] = when
    state["current_feature"] = _legacy_feature(
        data.get("current_feature") or manager.get("current_focus"), when
    )
    state["tasks"] = _legacy_tasks(
        data.get("tasks") or manager.get("tasks") or manager.get("active_tasks")
    )
    decisions = data.get("decisions") if isinstance(data.get("decisions"), list) else []
    state["decisions"] = [d for d in (_legacy_decision(r, when) for r in decisions) if d]
    updates = data.get("agent_updates") if isinstance(data.get("agent_updates"), list) else []
    state["agent_updates"] = [_legacy_update(raw, when) for raw in updates]
    known = {"project_name", "project", "last_updated", "updated_at", "current_feature", "tasks"}
    known |= {"decisions", "agent_updates", "schema_version"}
    leftovers = {k: v for k, v in data.items() if k not in known}
    if isinstance(leftovers.get("manager_instructions"), dict):
        leftovers["manager_instructions"] = {
            k: v
            for k, v in manager.items()
            if k not in ("project", "current_focus", "tasks", "active_tasks")
        } or None
    leftovers = {k: v for k, v in leftovers.items() if v not in (None, {}, [], "")}
    if leftovers:
        state["agent_updates"].append({
            "timestamp": when,
            "agent": "migration",
            "task_id": None,
            "status": "info",
            "message": "Fields of the legacy file that have no place in schema version 1.",
            "details": leftovers,
        })
    return state


SUPPORTED_VERSIONS = tuple(range(len(MIGRATIONS) + 1))
if SUPPORTED_VERSIONS[-1] != SCHEMA_VERSION:
    raise RuntimeError("agent_team.state needs exactly one migration per schema version")
