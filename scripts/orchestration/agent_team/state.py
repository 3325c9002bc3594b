"""The team state file: schema validation, migrations, locked transactions and atomic saves.

Every orchestrator thread and process coordinates through one JSON file, so every change is a
read-modify-write under a thread lock and a file lock, validated before it is written, and
written through a temporary file and `os.replace` so a reader never sees half a file. A file
that does not parse or validate is never overwritten: it is copied aside and the run stops.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import re
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

__all__ = [
    "MIGRATIONS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "STATE_RELATIVE_PATH",
    "SUPPORTED_VERSIONS",
    "TeamState",
    "UnknownTaskError",
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
# Provider key shapes. Every branch starts with one of [sgAx] so `re` can skip ahead fast; the
# look-behind after that first character keeps words like "risk-" or "disk-" out.
_KEY_SHAPES = (
    r"[sgAx](?<![A-Za-z0-9][sgAx])(?:"
    r"k-(?:ant-[A-Za-z0-9_-]{16,}|(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,})"
    r"|h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{20,}"
    r"|KIA[0-9A-Z]{16}|SIA[0-9A-Z]{16}|Iza[0-9A-Za-z_-]{35}|ox[abposr]-[A-Za-z0-9-]{10,})"
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
    plain = re.compile("|".join([*literal, _KEY_SHAPES]))
    in_json = re.compile("|".join([*dict.fromkeys([*literal, *escaped]), _KEY_SHAPES]))
    return plain, in_json


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    secrets = _env_secrets()
    return (*_secret_patterns(tuple(sorted(secrets, key=lambda v: (-len(v), v)))), secrets)


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
_ARRAYS = ("tasks", "decisions", "agent_updates", "runs")
_MEMO_LIMIT = 20_000


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time, without depending on jsonschema's optional format extras."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    datetime(year, month, day, hour, minute, min(second, 59))
    return second <= 60 and int(match.group(7) or 0) < 24 and int(match.group(8) or 0) < 60


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """Replace local `$ref`s by their targets; the schema has no cycles and lookups cost time."""
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


def _ordered(value: Any, schema: Mapping[str, Any]) -> Any:
    """Copy of `value` with object keys in schema order, so diffs of the file stay readable."""
    for branch in schema.get("oneOf", ()):
        if branch.get("type") != "null":
            schema = branch
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {k: _ordered(value[k], props[k]) for k in props if k in value}
        for k, v in value.items():
            if k not in out:
                out[k] = _ordered(v, extra) if isinstance(extra, dict) else v
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_ordered(v, schema["items"]) for v in value]
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def _indent(text: str, prefix: str) -> str:
    """Indent JSON text; only "\n" breaks lines there (U+2028 may sit raw inside strings)."""
    return prefix + text.replace("\n", "\n" + prefix)


def _path_key(error: ValidationError) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path)


class _Encoder:
    """Validate, redact and pretty-print states, checking only array items not seen before.

    A run rewrites the whole file for every small change. Validating and formatting hundreds
    of unchanged tasks and updates each time costs tens of milliseconds, so items are
    remembered by their compact JSON text together with their checked, formatted form.
    """

    def __init__(self, schema: dict) -> None:
        self.schema = _inline_refs(schema, schema["$defs"])
        self.validator = Draft202012Validator(self.schema, format_checker=_FORMATS)
        self.item_schemas = {k: self.schema["properties"][k]["items"] for k in _ARRAYS}
        self.item_validators = {
            k: Draft202012Validator(s, format_checker=_FORMATS)
            for k, s in self.item_schemas.items()
        }
        self._memo: dict[tuple[str, str], str] = {}
        self._memo_pattern: re.Pattern[str] | None = None

    def first_error(self, data: Any) -> ValidationError:
        """The first violation in document order: the same one on every run."""
        errors = list(self.validator.iter_errors(data))
        if not errors:
            return ValidationError("masking a secret-like string made a value invalid")
        first = min(errors, key=_path_key)
        match = best_match(e for e in errors if e.absolute_path == first.absolute_path)
        return match or first

    def encode(self, state: Any) -> str:
        """The file text of `state`: keys in schema order, secrets masked, checked by the schema.

        Raises:
            ValidationError: the first schema violation.
            TypeError, ValueError: a value JSON cannot hold.
        """
        if not isinstance(state, dict) or any(
            not isinstance(state.get(k, []), list) for k in _ARRAYS
        ):
            raise self.first_error(state)
        _, secret, _ = _patterns()
        if secret is not self._memo_pattern or len(self._memo) > _MEMO_LIMIT:
            self._memo, self._memo_pattern = {}, secret
        memo = self._memo
        pieces: dict[str, str] = {}
        for key in _ARRAYS:
            out = []
            for item in state.get(key, ()):
                compact = _compact(item)
                text = memo.get((key, compact))
                if text is None:
                    value = _ordered(item, self.item_schemas[key])
                    if secret.search(compact):
                        value = _redact_value(value)
                    if not self.item_validators[key].is_valid(value):
                        raise self.first_error(state)
                    text = memo[(key, compact)] = _indent(_pretty(value), "    ")
                out.append(text)
            pieces[key] = "[\n" + ",\n".join(out) + "\n  ]" if out else "[]"
        rest = _ordered({k: [] if k in _ARRAYS else v for k, v in state.items()}, self.schema)
        if secret.search(_compact(rest)):
            rest = _redact_value(rest)
        if not self.validator.is_valid(rest):
            raise self.first_error(state)
        fields = (
            f"  {_compact(k)}: " + (pieces[k] if k in pieces else _indent(_pretty(v), "  ")[2:])
            for k, v in rest.items()
        )
        return "{\n" + ",\n".join(fields) + "\n}\n"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The JSON Schema of the state file, read and checked once per process."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _encoder() -> _Encoder:
    return _Encoder(load_schema())


def _describe(error: ValidationError) -> str:
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return f"at {error.json_path}: {message}"


def validate_state(
    data: Any, path: str | os.PathLike[str] | None = None, *, action: str = ""
) -> None:
    """Raise StateError naming the file, JSON path and rule when `data` breaks the schema."""
    try:
        _encoder().encode(data)
    except ValidationError as error:
        where = f"team state file {path}" if path else "team state"
        hint = action or f"Fix that value so it matches the schema in {SCHEMA_PATH}."
        raise StateError(f"Invalid {where}: {_describe(error)}. {hint}") from None
    except (TypeError, ValueError) as exc:
        raise StateError(f"Invalid team state: {exc}.") from None


# --- migrations ---------------------------------------------------------------------------------

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


@lru_cache(maxsize=16)
def _property_checks(definition: str | None) -> dict[str, Draft202012Validator]:
    """One validator per property of a `$defs` entry, or of the top level for None."""
    schema = load_schema()
    part = schema if definition is None else schema["$defs"][definition]
    props = _inline_refs(part, schema["$defs"])["properties"]
    return {k: Draft202012Validator(s, format_checker=_FORMATS) for k, s in props.items()}


def _fit(raw: Mapping[str, Any], definition: str, **fields: Any) -> dict:
    """The fields of `raw`, overridden by `fields`, that the schema knows and that fit it."""
    merged = {**raw, **{k: v for k, v in fields.items() if v is not None}}
    for key in [k for k in merged if k.endswith("_at") or k == "timestamp"]:
        merged[key] = _legacy_time(merged[key])
    checks = _property_checks(definition)
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
            priority={"critical": "high", "urgent": "high"}.get(raw.get("priority")),
            dependencies=[d for d in dict.fromkeys(deps) if d != task_id],
            status=_status(
                raw.get("status"), _property_checks("task")["status"].schema["enum"], "pending"
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
                _property_checks("feature")["status"].schema["enum"],
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
    shapes = {"tasks": (list, dict), "decisions": list, "agent_updates": list}
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
    raise RuntimeError("agent_team.state needs exactly one migration per schema version")


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


def _write_atomic(path: Path, payload: bytes) -> None:
    """Temp file in the same directory, fsync, `os.replace`, fsync the directory: all or nothing."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _save_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                try:
                    mode = stat.S_IMODE(os.stat(path).st_mode)
                except FileNotFoundError:
                    mode = 0o644
                os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _save_error(path, exc) from exc
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable too; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class UnknownTaskError(StateError, KeyError):
    """A helper was asked to change a task the state does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _check_fields(kind: str, definition: str, fields: Mapping[str, Any]) -> None:
    allowed = _property_checks(definition)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        names = ", ".join(allowed)
        raise StateError(f"Unknown {kind} field(s) {', '.join(unknown)}; allowed: {names}.")


def _find_task(state: Mapping[str, Any], task_id: str) -> dict:
    for task in state["tasks"]:
        if task.get("task_id") == task_id:
            return task
    known = ", ".join(t.get("task_id", "?") for t in state["tasks"]) or "none"
    raise UnknownTaskError(f"No task {task_id!r} in the team state (tasks: {known}).")


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
    bucket["cost_usd"] = round((bucket.get("cost_usd") or 0.0) + cost, 10) if known else None
    bucket["cost_known"] = known


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
        """A validated private copy of the state as it is on disk now."""
        return self._load()[0]

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
            self._save(state)

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
            entry["details"] = _redact_value(dict(details))
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
        """`append_update_to` in a transaction of its own; returns the entry as written."""
        entry = self.update(
            lambda state: self.append_update_to(state, agent, task_id, status, message, details)
        )
        return copy.deepcopy(entry)

    @staticmethod
    def set_task_in(state: dict, task_id: str, **fields: Any) -> dict:
        """Change fields of one task; UnknownTaskError when the plan has no such task."""
        _check_fields("task", "task", fields)
        task = _find_task(state, task_id)
        task.update(fields)
        return task

    def set_task(self, task_id: str, **fields: Any) -> dict:
        """`set_task_in` in a transaction of its own; returns a copy of the task."""
        return copy.deepcopy(self.update(lambda state: self.set_task_in(state, task_id, **fields)))

    @staticmethod
    def set_agent_in(state: dict, role: str, **fields: Any) -> dict:
        """Change the live view of one agent, creating it as idle first if needed."""
        _check_fields("agent", "agent", fields)
        agent = state.setdefault("agents", {}).setdefault(role, {"status": "idle"})
        agent.update(fields)
        agent["updated_at"] = fields.get("updated_at") or utc_now()
        return agent

    def set_agent(self, role: str, **fields: Any) -> dict:
        """`set_agent_in` in a transaction of its own; returns a copy of the agent."""
        return copy.deepcopy(self.update(lambda state: self.set_agent_in(state, role, **fields)))

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
        """`add_decisions_to` in a transaction of its own; returns copies of the entries."""
        items = list(decisions)
        return copy.deepcopy(self.update(lambda s: self.add_decisions_to(s, items, made_by)))

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
            buckets.append(_find_task(state, task_id).setdefault("usage", _zero_counts()))
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
        """`add_usage_to` in a transaction of its own."""
        self.update(
            lambda state: self.add_usage_to(
                state, agent, usage, api_calls=api_calls, cost_usd=cost_usd, task_id=task_id
            )
        )

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

    def _load(self) -> tuple[dict, int, bytes]:
        """Parse, migrate and validate the file; never writes to it."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            if self.missing_project_name is not None:
                return new_state(self.missing_project_name), SCHEMA_VERSION, b""
            raise StateError(
                f"No team state file at {self.path}. Run the init command in the project first."
            ) from None
        except OSError as exc:
            raise StateError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
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
            _encoder().encode(data)
        except ValidationError as error:
            raise self._corrupt(raw, _describe(error) + after) from None
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

    def _save(self, state: dict) -> None:
        """Order, redact, validate, then write; a state that fails validation is never written."""
        try:
            text = _encoder().encode(state)
        except ValidationError as error:
            raise StateError(
                f"Refusing to save the team state file {self.path}: {_describe(error)}. Nothing "
                "was written; the file on disk is unchanged. Fix the code that set that value."
            ) from None
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"Refusing to save the team state file {self.path}: {exc}. Nothing was written."
            ) from exc
        payload = text.encode("utf-8")
        _write_atomic(self.path, payload)
        self._shared.known = payload
