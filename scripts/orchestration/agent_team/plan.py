"""The manager's plan: parsing, validation by schema and by meaning, and dependency order.

A plan that fails here goes back to the manager with the exact error list, so every message
must name the task and the problem in words a model (and a person) can act on.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from .errors import PlanError
from .priority import parse_priority, priority_word
from .redaction import redact
from .scheduler import find_cycle
from .scheduler import topological_order as schedule_order
from .task_record import TaskRecord, job_of, new_task

SCHEMA_PATH = Path(__file__).parent / "schemas" / "plan.schema.json"
DEFAULT_MAX_TASKS = 100
MAX_ERROR_MESSAGES = 25
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Decision:
    decision: str
    rationale: str = ""
    affected_agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The manager's tasks, each a fresh `TaskRecord` (status pending), and its decisions."""

    tasks: tuple[TaskRecord, ...]
    decisions: tuple[Decision, ...] = field(default_factory=tuple)

    def by_id(self) -> dict[str, TaskRecord]:
        return {task["task_id"]: task for task in self.tasks}

    def order(self) -> list[TaskRecord]:
        """Tasks in dependency order; among ready tasks, higher priority then plan order."""
        tasks = self.by_id()
        return [tasks[task_id] for task_id in topological_order(self.tasks)]


@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def plan_output_schema(roles: Sequence[str]) -> dict[str, Any]:
    """The schema sent to the model: every field required, `assigned_to` limited to the team.

    Validation of what comes back uses the lenient file schema, so a plan that omits empty
    lists (as people write them) is still accepted.
    """
    schema = json.loads(json.dumps(plan_schema()))
    schema.pop("$id", None)
    schema["required"] = ["tasks", "decisions"]
    for key in ("tasks", "decisions"):
        item = schema["properties"][key]["items"]
        item["required"] = list(item["properties"])
    schema["properties"]["tasks"]["items"]["properties"]["assigned_to"] = {
        "type": "string",
        "enum": list(roles),
    }
    return schema


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)


def _top_level_objects(text: str) -> Iterator[str]:
    """Balanced `{...}` spans of `text` that are not nested in another span, in order."""
    depth, start, in_string, escaped = 0, 0, False, False
    for index, char in enumerate(text):
        if depth == 0:
            if char == "{":
                depth, start = 1, index
            continue
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                yield text[start : index + 1]


def extract_json(text: str) -> Any:
    """Parse a JSON object from a model reply: bare, inside a code fence, or amid prose.

    Amid prose, the first complete top-level `{...}` that parses wins; an object nested in
    a broken one is never taken for the answer.
    """
    stripped = text.strip()
    fenced = [m.group(1).strip() for m in _FENCE.finditer(text)]
    first, last = stripped.find("{"), stripped.rfind("}")
    outer = [stripped[first : last + 1]] if 0 <= first < last else []
    reported: json.JSONDecodeError | None = None
    for candidate in itertools.chain([stripped], fenced, _top_level_objects(stripped), outer):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError as exc:
            if reported is None or (fenced and candidate == fenced[0]):
                reported = exc
    where = f" (line {reported.lineno}, column {reported.colno}: {reported.msg})" if (
        reported
    ) else ""
    raise PlanError(
        "The plan is not valid JSON" + where + ".",
        ["The reply must be one JSON object with \"tasks\" and \"decisions\"" + where + "."],
    )


def _json_path(path: Iterable[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def topological_order(tasks: Sequence[TaskRecord]) -> list[str]:
    """Dependencies first; among ready tasks, higher priority, then their order in the plan.

    Dependencies on ids that are not in `tasks` are ignored here; `validate_plan_data`
    reports them. A cycle is a PlanError naming it.
    """
    ids = {task["task_id"] for task in tasks}
    graph = {task["task_id"]: [d for d in task["dependencies"] if d in ids] for task in tasks}
    cycle = find_cycle(graph)
    if cycle:
        raise PlanError("The plan has a dependency cycle.",
                        ["Dependency cycle: " + " -> ".join(cycle) + "."])
    return schedule_order(job_of(task, ids) for task in tasks)


def _task_id_problem(task_id: str) -> str | None:
    """Why a task id cannot become part of a git branch name, or None when it can."""
    if not _TASK_ID.fullmatch(task_id):
        return "use letters, digits, '.', '_' or '-', starting with a letter or digit"
    if ".." in task_id or task_id.endswith((".", ".lock")):
        return "git branch names cannot contain '..' or end with '.' or '.lock'"
    if redact(task_id) != task_id:
        # Ids become branch names and state keys, which can be neither masked nor leaked.
        return "it contains a secret (an API key or token); use an id such as TASK-001"
    return None


def validate_plan_data(
    data: Any, roles: Collection[str], *, max_tasks: int = DEFAULT_MAX_TASKS
) -> list[str]:
    """Every problem with a parsed plan, as messages; an empty list means valid.

    At most MAX_ERROR_MESSAGES messages are returned (the last one says how many were left
    out), so a huge broken plan does not turn into a huge correction prompt.
    """
    validator = jsonschema.Draft202012Validator(plan_schema())
    errors = [
        f"{_json_path(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    ]
    if errors or not isinstance(data, dict):
        return _capped(errors)
    tasks = data["tasks"]
    if not tasks:
        return ["The plan has no tasks: plan at least one task for the feature."]
    if len(tasks) > max_tasks:
        errors.append(
            f"The plan has {len(tasks)} tasks; at most {max_tasks} are allowed. "
            "Merge small steps into larger tasks."
        )
    seen: set[str] = set()
    duplicates: set[str] = set()
    for task in tasks:
        task_id = task["task_id"]
        problem = _task_id_problem(task_id)
        if problem:
            errors.append(f"Task id {task_id!r} is not valid: {problem}.")
        if task_id in seen and task_id not in duplicates:
            duplicates.add(task_id)
            errors.append(f"Task id {task_id} is used more than once; task ids must be unique.")
        seen.add(task_id)
        if task["assigned_to"] not in roles:
            errors.append(
                f"Task {task_id} is assigned to unknown role {task['assigned_to']!r}; "
                f"available roles: {', '.join(sorted(roles))}."
            )
        if not task["description"].strip():
            errors.append(f"Task {task_id} has an empty description.")
    for task in tasks:
        for dep in task.get("dependencies", []):
            if dep == task["task_id"]:
                errors.append(f"Task {dep} depends on itself.")
            elif dep not in seen:
                errors.append(f"Task {task['task_id']} depends on {dep}, which is not in the plan.")
    graph: dict[str, list[str]] = {}
    for t in tasks:
        graph.setdefault(t["task_id"], []).extend(
            d for d in t.get("dependencies", []) if d != t["task_id"]
        )
    cycle = find_cycle(graph)
    if cycle:
        errors.append("Dependency cycle: " + " -> ".join(cycle) + ". Remove one dependency.")
    return _capped(errors)


def _capped(errors: list[str]) -> list[str]:
    """At most MAX_ERROR_MESSAGES messages, secrets masked: they quote the model's values."""
    errors = [redact(error) for error in errors]
    if len(errors) <= MAX_ERROR_MESSAGES:
        return errors
    kept = errors[: MAX_ERROR_MESSAGES - 1]
    return kept + [f"... and {len(errors) - len(kept)} more problem(s) of the same kinds."]


def parse_plan(
    text_or_data: str | Mapping[str, Any],
    roles: Collection[str],
    *,
    max_tasks: int = DEFAULT_MAX_TASKS,
) -> Plan:
    """Parse and validate a plan; raise PlanError with every problem found.

    A secret the model wrote into a description, deliverable or decision is masked here, so
    no prompt, commit message or file the plan reaches carries it; a task id holding one is
    an error, because ids become branch names.
    """
    data = extract_json(text_or_data) if isinstance(text_or_data, str) else text_or_data
    errors = validate_plan_data(data, roles, max_tasks=max_tasks)
    if errors:
        raise PlanError(f"The plan is invalid ({len(errors)} problem(s)).", errors)
    tasks = tuple(
        new_task(
            task_id=t["task_id"],
            description=redact(t["description"].strip()),
            assigned_to=t["assigned_to"],
            dependencies=t.get("dependencies", []),
            deliverables=[redact(d) for d in t.get("deliverables", [])],
            # One reading of priorities everywhere: 1-10 or words, stored here as a word.
            priority=priority_word(parse_priority(t.get("priority", "medium"))),
        )
        for t in data["tasks"]
    )
    decisions = tuple(
        Decision(
            decision=redact(d["decision"]),
            rationale=redact(d.get("rationale", "")),
            affected_agents=tuple(d.get("affected_agents", [])),
        )
        for d in data.get("decisions", [])
    )
    return Plan(tasks=tasks, decisions=decisions)
