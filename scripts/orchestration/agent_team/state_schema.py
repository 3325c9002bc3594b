"""The team state document: its schema, a fresh state, validation and the file encoder.

`state.py` owns the file (locks, transactions, atomic saves) and `state_migrations.py` brings
old versions up to date; this module only knows what a valid state of the current version is
and how it is written: keys in schema order, secrets masked, checked against the JSON Schema.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from .errors import StateError
from .redaction import redact_value, secret_pattern

__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "TOKEN_KEYS",
    "describe_error",
    "encoder",
    "load_schema",
    "new_state",
    "property_checks",
    "utc_now",
    "validate_state",
]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "team-communication.schema.json"
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


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


_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))\Z"
)
_FORMATS = FormatChecker(formats=())
_ARRAYS = ("tasks", "decisions", "agent_updates", "runs")
#: Containers below or beside the arrays whose entries are also checked one by one: the live
#: view of the agents (one entry per agent of the run, one rewritten every turn) and the merge
#: log (one entry per task). Validating them whole made every write cost O(tasks).
_NESTED: tuple[tuple[str, ...], ...] = (("agents",), ("integration", "merges"))
_PLAIN_ARRAY_KEYS = frozenset({"type", "items", "description", "title", "$comment"})
_PLAIN_MAP_KEYS = frozenset({"type", "additionalProperties", "propertyNames", "description",
                             "title", "$comment"})
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


#: Built once: `json.dumps` with options builds a new encoder per call, and every write
#: compacts every item of the state to find it in the memo.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_PRETTY = json.JSONEncoder(indent=2, ensure_ascii=False, allow_nan=False).encode


def _compact(value: Any) -> str:
    return _COMPACT(value)


def _pretty(value: Any) -> str:
    return _PRETTY(value)


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
        self.nested = {
            path: spec for path in _NESTED if (spec := _nested_spec(self.schema, path))
        }
        self._memo: dict[tuple[Any, str], str] = {}
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
        secret = secret_pattern(in_json=True)
        if secret is not self._memo_pattern or len(self._memo) > _MEMO_LIMIT:
            self._memo, self._memo_pattern = {}, secret
        memo = self._memo
        pieces: dict[tuple[Any, ...], str] = {}
        for key in _ARRAYS:
            out = []
            for item in state.get(key, ()):
                compact = _compact(item)
                text = memo.get((key, compact))
                if text is None:
                    value = _ordered(item, self.item_schemas[key])
                    if secret.search(compact):
                        value = redact_value(value)
                    if not self.item_validators[key].is_valid(value):
                        raise self.first_error(state)
                    text = memo[(key, compact)] = _indent(_pretty(value), "    ")
                out.append(text)
            pieces[(key,)] = "[\n" + ",\n".join(out) + "\n  ]" if out else "[]"
        shell = {k: [] if k in _ARRAYS else v for k, v in state.items()}
        for path, spec in self.nested.items():
            container = _lookup(shell, path)
            if not isinstance(container, spec.kind):
                continue  # left in place: the whole-document check reports it
            if spec.kind is dict and any(
                    secret.search(_compact(k)) for k in cast(Iterable[str], container)):
                continue
            if spec.keys is not None and not spec.keys.is_valid(
                    dict.fromkeys(cast(Iterable[str], container))):
                raise self.first_error(state)
            pieces[path] = self._nested_piece(path, spec, container, secret, state)
            shell = _replaced(shell, path, spec.kind())
        rest = _ordered(shell, self.schema)
        if secret.search(_compact(rest)):
            rest = redact_value(rest)
        if not self.validator.is_valid(rest):
            raise self.first_error(state)
        return _format(rest, (), pieces) + "\n"

    def _nested_piece(self, path: tuple[str, ...], spec: _Nested, container: Any,
                      secret: re.Pattern[str], state: Any) -> str:
        """One container's text, each entry checked and formatted once per distinct value."""
        prefix = "  " * (len(path) + 1)
        entries = container.items() if spec.kind is dict else ((None, v) for v in container)
        out = []
        for key, item in entries:
            compact = _compact(item)
            text = self._memo.get((path, compact))
            if text is None:
                value = _ordered(item, spec.schema)
                if secret.search(compact):
                    value = redact_value(value)
                if not spec.validator.is_valid(value):
                    raise self.first_error(state)
                text = self._memo[(path, compact)] = _indent(_pretty(value), prefix)
            out.append(text if key is None else f"{prefix}{_compact(key)}: {text[len(prefix):]}")
        if not out:
            return "{}" if spec.kind is dict else "[]"
        close = "}" if spec.kind is dict else "]"
        return ("{" if spec.kind is dict else "[") + "\n" + ",\n".join(out) + "\n" \
            + "  " * len(path) + close


@dataclass(frozen=True)
class _Nested:
    """How to check the entries of one container: a map of entries or an array of items."""

    kind: type
    schema: dict
    validator: Draft202012Validator
    keys: Draft202012Validator | None


def _nested_spec(schema: Mapping[str, Any], path: tuple[str, ...]) -> _Nested | None:
    """The container's entry schema, when checking entries alone is the same as the whole.

    Only plain containers qualify (an array with nothing but `items`, an object with nothing
    but `additionalProperties` and `propertyNames`); any other shape is left to the
    whole-document check, so a schema change can never weaken validation.
    """
    node: Any = schema
    for key in path:
        if not isinstance(node, dict) or set(node) & {"oneOf", "anyOf", "allOf", "$ref"}:
            return None
        node = node.get("properties", {}).get(key)
    if not isinstance(node, dict):
        return None
    if isinstance(node.get("items"), dict) and set(node) <= _PLAIN_ARRAY_KEYS:
        item = node["items"]
        return _Nested(list, item, Draft202012Validator(item, format_checker=_FORMATS), None)
    entry = node.get("additionalProperties")
    if isinstance(entry, dict) and set(node) <= _PLAIN_MAP_KEYS:
        shell = {k: v for k, v in node.items() if k != "additionalProperties"}
        return _Nested(dict, entry, Draft202012Validator(entry, format_checker=_FORMATS),
                       Draft202012Validator(shell, format_checker=_FORMATS))
    return None


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _replaced(value: dict, path: tuple[str, ...], new: Any) -> dict:
    """A copy of `value` with the container at `path` replaced, parents copied, not changed."""
    head, *tail = path
    return {**value, head: _replaced(value[head], tuple(tail), new) if tail else new}


def _format(value: Any, path: tuple[str, ...], pieces: Mapping[tuple[Any, ...], str]) -> str:
    """`json.dumps(value, indent=2)` at the depth of `path`, with pre-formatted containers."""
    if path in pieces:
        return pieces[path]
    depth = len(path)
    inside = [p for p in pieces if len(p) > depth and p[:depth] == path]
    if not isinstance(value, dict) or not value or not inside:
        text = _indent(_pretty(value), "  " * depth)
        return text[2 * depth:]
    prefix = "  " * (depth + 1)
    fields = (f"{prefix}{_compact(k)}: {_format(v, (*path, k), pieces)}" for k, v in value.items())
    return "{\n" + ",\n".join(fields) + "\n" + "  " * depth + "}"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The JSON Schema of the state file, read and checked once per process."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def encoder() -> _Encoder:
    """The one encoder of this process, so its memo of checked items is shared."""
    return _Encoder(load_schema())


def describe_error(error: ValidationError) -> str:
    """Where and what, short enough for one line of an error message."""
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return f"at {error.json_path}: {message}"


def validate_state(
    data: Any, path: str | os.PathLike[str] | None = None, *, action: str = ""
) -> None:
    """Raise StateError naming the file, JSON path and rule when `data` breaks the schema."""
    try:
        encoder().encode(data)
    except ValidationError as error:
        where = f"team state file {path}" if path else "team state"
        hint = action or f"Fix that value so it matches the schema in {SCHEMA_PATH}."
        raise StateError(f"Invalid {where}: {describe_error(error)}. {hint}") from None
    except (TypeError, ValueError) as exc:
        raise StateError(f"Invalid team state: {exc}.") from None


@lru_cache(maxsize=16)
def property_checks(definition: str | None) -> dict[str, Draft202012Validator]:
    """One validator per property of a `$defs` entry, or of the top level for None.

    The migrations use them to keep only legacy values that fit; `TeamState` to name the
    fields a helper may set.
    """
    schema = load_schema()
    part = schema if definition is None else schema["$defs"][definition]
    props = _inline_refs(part, schema["$defs"])["properties"]
    return {k: Draft202012Validator(s, format_checker=_FORMATS) for k, s in props.items()}


def definition_validator(definition: str) -> Draft202012Validator:
    """A validator for one `$defs` entry (a task, an agent, a merge): checks of one entity."""
    schema = load_schema()
    part = _inline_refs(schema["$defs"][definition], schema["$defs"])
    return Draft202012Validator(part, format_checker=_FORMATS)
