"""The manager's plan: parsing, every validation error, dependency order, the output schema."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import jsonschema
import pytest
from agent_team.errors import PlanError
from agent_team.plan import (
    MAX_ERROR_MESSAGES,
    Plan,
    extract_json,
    find_cycle,
    parse_plan,
    plan_output_schema,
    topological_order,
    validate_plan_data,
)
from agent_team.state_schema import definition_validator
from agent_team.task_record import new_task

ROLES = ("backend-dev", "frontend-dev", "qa-tester")

# The "Phase 1" reply of the usage guide, verbatim: TASK-001 has no dependencies, TASK-003 no
# deliverables, and no task has a priority.
GUIDE_PLAN = """{
  "tasks": [
    {
      "task_id": "TASK-001",
      "description": "Implement JWT service and auth API endpoints",
      "assigned_to": "backend-dev",
      "deliverables": [
        "JWT token generation and verification (src/services/jwt.ts)",
        "Auth controller with login/register (src/controllers/auth.ts)",
        "POST /api/auth/login endpoint",
        "POST /api/auth/register endpoint",
        "Auth middleware (src/middleware/auth.ts)"
      ]
    },
    {
      "task_id": "TASK-002",
      "description": "Build login and registration UI components",
      "assigned_to": "frontend-dev",
      "dependencies": ["TASK-001"],
      "deliverables": [
        "Login form component",
        "Registration form component",
        "Auth context for state management",
        "Protected route wrapper"
      ]
    },
    {
      "task_id": "TASK-003",
      "description": "Write comprehensive tests for auth flow",
      "assigned_to": "qa-tester",
      "dependencies": ["TASK-001", "TASK-002"]
    }
  ],
  "decisions": [
    {
      "decision": "Use JWT with 1-hour expiration",
      "rationale": "Security best practice for access tokens",
      "affected_agents": ["backend-dev", "frontend-dev"]
    }
  ]
}"""


def task(task_id: str, *deps: str, role: str = "backend-dev", **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "description": f"do {task_id}",
        "assigned_to": role,
        "dependencies": list(deps),
        **extra,
    }


def plan_errors(data: Any, roles: tuple[str, ...] = ROLES, **kwargs: Any) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(data, roles, **kwargs)
    assert info.value.errors, "a rejected plan must carry at least one message"
    return info.value.errors


# -- parsing -------------------------------------------------------------------------------


def test_guide_plan_is_accepted_with_defaults_for_missing_fields() -> None:
    plan = parse_plan(GUIDE_PLAN, ROLES)

    assert [t["task_id"] for t in plan.tasks] == ["TASK-001", "TASK-002", "TASK-003"]
    first, second, third = plan.tasks
    assert first["dependencies"] == []
    assert len(first["deliverables"]) == 5
    assert first["deliverables"][1] == (
        "Auth controller with login/register (src/controllers/auth.ts)")
    assert second["dependencies"] == ["TASK-001"]
    assert third["dependencies"] == ["TASK-001", "TASK-002"]
    assert third["deliverables"] == []
    assert {t["priority"] for t in plan.tasks} == {"medium"}
    assert third["assigned_to"] == "qa-tester"
    assert plan.decisions[0].decision == "Use JWT with 1-hour expiration"
    assert plan.decisions[0].rationale == "Security best practice for access tokens"
    assert plan.decisions[0].affected_agents == ("backend-dev", "frontend-dev")
    assert [t["task_id"] for t in plan.order()] == ["TASK-001", "TASK-002", "TASK-003"]


def test_plan_without_decisions_and_parsed_from_a_mapping() -> None:
    plan = parse_plan({"tasks": [task("A")]}, ROLES)
    assert plan.decisions == ()
    assert plan.tasks == (new_task("A", "do A", "backend-dev"),)


def test_description_is_stripped() -> None:
    plan = parse_plan({"tasks": [{**task("A"), "description": "  build it \n"}]}, ROLES)
    assert plan.tasks[0]["description"] == "build it"


def test_a_parsed_task_is_a_fresh_state_entry() -> None:
    entry = parse_plan(GUIDE_PLAN, ROLES).tasks[2]
    assert entry["status"] == "pending"
    assert entry["dependencies"] == ["TASK-001", "TASK-002"]
    assert entry["deliverables"] == []
    assert (entry["progress"], entry["attempts"], entry["result"]) == (0, 0, None)
    assert definition_validator("task").is_valid(entry)


def test_not_json_is_rejected_with_position() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan("I would start with the backend, then the frontend.", ROLES)
    assert "not valid JSON" in str(info.value)
    assert "line 1, column 1" in str(info.value)
    assert '"tasks"' in info.value.errors[0]


def test_truncated_json_is_rejected() -> None:
    with pytest.raises(PlanError, match="not valid JSON"):
        parse_plan(GUIDE_PLAN[: len(GUIDE_PLAN) // 2], ROLES)


def test_json_in_a_code_fence() -> None:
    reply = f"Here is the plan:\n\n```json\n{GUIDE_PLAN}\n```\n\nLet me know if it works."
    assert len(parse_plan(reply, ROLES).tasks) == 3


def test_json_in_a_fence_after_prose_with_a_stray_brace() -> None:
    reply = f"Objects open with {{ in JSON.\n\n```json\n{GUIDE_PLAN}\n```\n"
    assert len(parse_plan(reply, ROLES).tasks) == 3


def test_json_in_a_plain_fence() -> None:
    reply = f"```\n{GUIDE_PLAN}\n```"
    assert len(parse_plan(reply, ROLES).tasks) == 3


def test_json_amid_prose() -> None:
    reply = f"Sure! The breakdown follows. {GUIDE_PLAN} That is three tasks."
    assert len(parse_plan(reply, ROLES).tasks) == 3


def test_json_amid_prose_that_has_braces_of_its_own() -> None:
    reply = (
        "I use {curly} notes sometimes. Plan: "
        + json.dumps({"tasks": [task("A")]})
        + " Placeholders like {name} are filled later."
    )
    assert extract_json(reply) == {"tasks": [task("A")]}
    assert parse_plan(reply, ROLES).tasks[0]["task_id"] == "A"


def test_json_that_is_not_an_object_is_a_schema_error() -> None:
    errors = plan_errors("[1, 2, 3]")
    assert errors[0].startswith("$: ")
    assert "object" in errors[0]


def test_missing_required_field_names_the_json_path() -> None:
    data = {"tasks": [{"task_id": "A", "description": "x"}]}
    errors = plan_errors(data)
    assert errors == ["$.tasks[0]: 'assigned_to' is a required property"]


def test_unknown_field_is_rejected() -> None:
    errors = plan_errors({"tasks": [task("A", estimate="2h")]})
    assert errors[0].startswith("$.tasks[0]: ")
    assert "'estimate'" in errors[0]


def test_bad_priority_is_rejected() -> None:
    errors = plan_errors({"tasks": [task("A", priority="urgent")]})
    assert errors[0].startswith("$.tasks[0].priority: ")


# -- validation by meaning -----------------------------------------------------------------


def test_cycle_names_the_path() -> None:
    errors = plan_errors({"tasks": [task("A", "B"), task("B", "A")]})
    assert errors == ["Dependency cycle: A -> B -> A. Remove one dependency."]


def test_longer_cycle_names_only_the_cycle() -> None:
    data = {"tasks": [task("START"), task("A", "START", "C"), task("B", "A"), task("C", "B")]}
    errors = plan_errors(data)
    assert len(errors) == 1
    assert "A -> C -> B -> A" in errors[0]
    assert "START" not in errors[0]


def test_self_dependency() -> None:
    errors = plan_errors({"tasks": [task("A", "A")]})
    assert errors == ["Task A depends on itself."]


def test_unknown_role_lists_available_roles() -> None:
    errors = plan_errors({"tasks": [task("A", role="devops")]})
    assert errors == [
        "Task A is assigned to unknown role 'devops'; "
        "available roles: backend-dev, frontend-dev, qa-tester."
    ]


def test_manager_is_not_a_worker_role_unless_given() -> None:
    errors = plan_errors({"tasks": [task("A", role="manager")]})
    assert "unknown role 'manager'" in errors[0]


def test_duplicate_ids_reported_once() -> None:
    errors = plan_errors({"tasks": [task("A"), task("A"), task("A"), task("B")]})
    assert errors == ["Task id A is used more than once; task ids must be unique."]


def test_dangling_dependency() -> None:
    errors = plan_errors({"tasks": [task("A"), task("B", "A", "TASK-404")]})
    assert errors == ["Task B depends on TASK-404, which is not in the plan."]


def test_dependency_on_a_later_task_is_fine() -> None:
    plan = parse_plan({"tasks": [task("B", "A"), task("A")]}, ROLES)
    assert [t["task_id"] for t in plan.order()] == ["A", "B"]


def test_empty_plan() -> None:
    errors = plan_errors({"tasks": []})
    assert errors == ["The plan has no tasks: plan at least one task for the feature."]


def test_too_many_tasks_with_a_bounded_error_list() -> None:
    data = {"tasks": [task(f"T{i}", role="nobody") for i in range(500)]}
    errors = plan_errors(data, max_tasks=100)
    assert errors[0] == (
        "The plan has 500 tasks; at most 100 are allowed. Merge small steps into larger tasks."
    )
    assert len(errors) == MAX_ERROR_MESSAGES
    left_out = 500 - (MAX_ERROR_MESSAGES - 2)
    assert errors[-1] == f"... and {left_out} more problem(s) of the same kinds."


def test_max_tasks_boundary() -> None:
    data = {"tasks": [task(f"T{i}") for i in range(5)]}
    assert len(parse_plan(data, ROLES, max_tasks=5).tasks) == 5
    assert "at most 4" in plan_errors(data, max_tasks=4)[0]


@pytest.mark.parametrize("description", ["", "   ", "\n\t "])
def test_empty_or_whitespace_description(description: str) -> None:
    errors = plan_errors({"tasks": [{**task("A"), "description": description}]})
    assert errors == ["Task A has an empty description."]


@pytest.mark.parametrize("task_id", ["TASK 1", "-lead", ".hidden", "a/b", "ü1", "x" * 65, ""])
def test_task_id_outside_the_schema_pattern(task_id: str) -> None:
    errors = plan_errors({"tasks": [task(task_id)]})
    assert errors[0].startswith("$.tasks[0].task_id: ")
    assert "does not match" in errors[0]


@pytest.mark.parametrize("task_id", ["TASK-1\n", "A..B", "v1.", "deploy.lock"])
def test_task_id_that_git_cannot_use_in_a_branch_name(task_id: str) -> None:
    errors = plan_errors({"tasks": [task(task_id)]})
    assert errors[0].startswith(f"Task id {task_id!r} is not valid: ")


@pytest.mark.parametrize("task_id", ["TASK-001", "a", "v1.2_fix-3", "9", "x" * 64])
def test_good_task_ids(task_id: str) -> None:
    assert parse_plan({"tasks": [task(task_id)]}, ROLES).tasks[0]["task_id"] == task_id


def test_every_problem_is_reported_together() -> None:
    data = {
        "tasks": [
            task("A", "A", role="designer"),
            {**task("B", "missing"), "description": " "},
            task("B"),
        ]
    }
    errors = validate_plan_data(data, ROLES)
    assert len(errors) == 5
    assert any("unknown role 'designer'" in e for e in errors)
    assert any("empty description" in e for e in errors)
    assert any("used more than once" in e for e in errors)
    assert any("depends on itself" in e for e in errors)
    assert any("depends on missing" in e for e in errors)


def test_plan_error_message_counts_problems() -> None:
    with pytest.raises(PlanError, match=r"\(2 problem\(s\)\)"):
        parse_plan({"tasks": [task("A", "X", role="nobody")]}, ROLES)


# -- order -----------------------------------------------------------------------------------


def test_order_prefers_priority_among_ready_tasks() -> None:
    data = {
        "tasks": [
            task("LOW", priority="low"),
            task("HIGH", priority="high"),
            task("MID", "HIGH", priority="medium"),
            task("PLAIN"),
        ]
    }
    order = [t["task_id"] for t in parse_plan(data, ROLES).order()]
    assert order == ["HIGH", "MID", "PLAIN", "LOW"]


def test_priority_never_overrides_a_dependency() -> None:
    data = {"tasks": [task("BASE", priority="low"), task("TOP", "BASE", priority="high")]}
    assert [t["task_id"] for t in parse_plan(data, ROLES).order()] == ["BASE", "TOP"]


def test_plan_order_ties_keep_plan_order() -> None:
    data = {"tasks": [task(name) for name in ("C", "A", "B")]}
    assert [t["task_id"] for t in parse_plan(data, ROLES).order()] == ["C", "A", "B"]


def test_random_graphs_are_ordered_topologically() -> None:
    rng = random.Random(7)
    for _ in range(30):
        size = rng.randint(2, 40)
        ids = [f"T{i}" for i in range(size)]
        tasks = [
            task(
                ids[i],
                *rng.sample(ids[:i], k=min(i, rng.randint(0, 3))),
                priority=rng.choice(["high", "medium", "low"]),
            )
            for i in range(size)
        ]
        rng.shuffle(tasks)
        order = [t["task_id"] for t in parse_plan({"tasks": tasks}, ROLES).order()]
        assert sorted(order) == sorted(ids)
        done: set[str] = set()
        for task_id in order:
            entry = next(t for t in tasks if t["task_id"] == task_id)
            assert set(entry["dependencies"]) <= done, f"{task_id} ran before a dependency"
            done.add(task_id)


def test_topological_order_refuses_a_cycle_built_without_validation() -> None:
    plan = Plan(tasks=(new_task("A", "a", "x", ("B",)), new_task("B", "b", "x", ("A",))))
    with pytest.raises(PlanError) as info:
        plan.order()
    assert info.value.errors == ["Dependency cycle: A -> B -> A."]


def test_topological_order_ignores_ids_outside_the_plan() -> None:
    tasks = (new_task("B", "b", "x", ("A", "GONE")), new_task("A", "a", "x"))
    assert topological_order(tasks) == ["A", "B"]


def test_long_chain_is_validated_and_ordered() -> None:
    count = 1000
    chain = [task(f"T{i}", *([f"T{i + 1}"] if i < count - 1 else [])) for i in range(count)]
    data = {"tasks": chain}
    plan = parse_plan(data, ROLES, max_tasks=count)
    assert [t["task_id"] for t in plan.order()] == [f"T{i}" for i in reversed(range(count))]
    assert topological_order(plan.tasks)[0] == f"T{count - 1}"


# -- find_cycle ------------------------------------------------------------------------------


def test_find_cycle_none_on_a_dag() -> None:
    graph = {"a": [], "b": ["a"], "c": ["a", "b"], "d": ["c", "b"]}
    assert find_cycle(graph) is None


def test_find_cycle_ignores_unknown_nodes() -> None:
    assert find_cycle({"a": ["zzz"], "b": ["a", "yyy"]}) is None


def test_find_cycle_self_loop() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_find_cycle_is_a_closed_path_of_real_edges() -> None:
    rng = random.Random(11)
    for _ in range(50):
        nodes = [f"n{i}" for i in range(rng.randint(3, 60))]
        graph = {n: rng.sample(nodes[:i], k=min(i, rng.randint(0, 3))) for i, n in enumerate(nodes)}
        assert find_cycle(graph) is None
        back_from, back_to = sorted(rng.sample(range(len(nodes)), 2))
        chain = nodes[back_from : back_to + 1]
        for low, high in zip(chain, chain[1:], strict=False):
            if low not in graph[high]:
                graph[high].append(low)
        graph[nodes[back_from]].append(nodes[back_to])
        keys = list(graph)
        rng.shuffle(keys)
        graph = {key: graph[key] for key in keys}
        cycle = find_cycle(graph)
        assert cycle is not None
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1
        for node, dep in zip(cycle, cycle[1:], strict=False):
            assert dep in graph[node]


def test_find_cycle_on_a_deep_chain_does_not_exhaust_the_stack() -> None:
    size = 5000
    graph = {f"n{i}": [f"n{i + 1}"] for i in range(size - 1)}
    graph[f"n{size - 1}"] = []
    assert find_cycle(graph) is None
    graph[f"n{size - 1}"] = ["n0"]
    cycle = find_cycle(graph)
    assert cycle is not None
    assert len(cycle) == size + 1
    assert cycle[0] == cycle[-1] == "n0"


def test_find_cycle_leaves_out_the_path_that_led_to_it() -> None:
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_cycle_reached_from_outside_names_only_the_cycle() -> None:
    errors = plan_errors({"tasks": [task("ENTRY", "A"), task("A", "B"), task("B", "A")]})
    assert errors == ["Dependency cycle: A -> B -> A. Remove one dependency."]


def test_find_cycle_in_a_second_component() -> None:
    graph = {"a": ["b"], "b": [], "x": ["y"], "y": ["z"], "z": ["x"]}
    assert find_cycle(graph) == ["x", "y", "z", "x"]


# -- output schema -------------------------------------------------------------------------


def test_output_schema_requires_every_field_and_enumerates_roles() -> None:
    schema = plan_output_schema(["backend-dev", "data-engineer"])
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == {"tasks", "decisions"}
    task_schema = schema["properties"]["tasks"]["items"]
    assert set(task_schema["required"]) == set(task_schema["properties"]) == {
        "task_id", "description", "assigned_to", "dependencies", "deliverables", "priority",
    }
    decision_schema = schema["properties"]["decisions"]["items"]
    assert set(decision_schema["required"]) == {"decision", "rationale", "affected_agents"}
    assert task_schema["properties"]["assigned_to"]["enum"] == ["backend-dev", "data-engineer"]
    assert "$id" not in schema
    assert schema["additionalProperties"] is False
    assert task_schema["additionalProperties"] is False


def test_output_schema_validates_complete_plans_only() -> None:
    schema = plan_output_schema(list(ROLES))
    validator = jsonschema.Draft202012Validator(schema)
    guide = json.loads(GUIDE_PLAN)
    assert not validator.is_valid(guide), "the guide omits fields the output schema requires"
    complete = copy.deepcopy(guide)
    for item in complete["tasks"]:
        item.setdefault("dependencies", [])
        item.setdefault("deliverables", [])
        item.setdefault("priority", "medium")
    assert validator.is_valid(complete)
    complete["tasks"][0]["assigned_to"] = "devops"
    assert not validator.is_valid(complete)


def test_output_schema_does_not_alter_the_file_schema() -> None:
    plan_output_schema(["only-role"])
    assert len(parse_plan(GUIDE_PLAN, ROLES).tasks) == 3
