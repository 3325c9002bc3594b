"""Step one of a run: the manager's plan, checked, sent back with the exact errors, recorded."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .agent_calls import ModelRequest, ask
from .errors import PlanError
from .models import MAX_TOKENS, Message
from .plan import Plan, parse_plan, plan_output_schema
from .prompts import system_for
from .records import note
from .roles import MANAGER, read_context
from .run_context import RunContext
from .state_checks import task_branch_of
from .state_schema import utc_now
from .task_record import TaskRecord
from .team import Team

#: A front door's own rules for a plan: returns the plan (maybe amended) or raises PlanError,
#: whose errors go back to the manager like a schema error.
PlanCheck = Callable[[Plan], Plan]


def plan_prompt(team: Team, feature: str) -> str:
    workers = {name: role for name, role in team.roles.items() if name != MANAGER}
    roster = "\n".join(
        f"- {name}: {', '.join(role.specialties) or 'general development'}"
        for name, role in workers.items()
    )
    files = team.git.history.tracked_files(limit=200)
    context = read_context(team.project_dir)
    return (
        f"Feature to build:\n{feature}\n\n"
        f"Your team (assign each task to one of these roles):\n{roster}\n\n"
        f"Files in the repository ({len(files)} shown):\n"
        + "\n".join(f"- {f}" for f in files)
        + (f"\n\nProject context:\n{context}" if context else "")
        + "\n\nReturn the plan as one JSON object: {\"tasks\": [{\"task_id\", \"description\", "
        "\"assigned_to\", \"dependencies\", \"deliverables\", \"priority\"}], \"decisions\": "
        "[{\"decision\", \"rationale\", \"affected_agents\"}]}."
    )


def plan_feature(team: Team, run: RunContext, feature: str, *,
                 prompt: str | None = None, check: PlanCheck | None = None) -> Plan:
    """Ask the manager for a plan; send invalid plans back with the exact errors.

    `check` adds a caller's rules (`co`: task ids must name backlog tasks); what it rejects
    goes back to the manager within the same attempts.
    """
    workers = [name for name in team.roles if name != MANAGER]
    attempts = team.settings.coordination.max_plan_attempts
    base_prompt = prompt = prompt or plan_prompt(team, feature)
    system = system_for(team, MANAGER)
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        run.log(f"Calling manager for a plan (attempt {attempt}/{attempts})...")
        run.events.emit("plan_requested", attempt=attempt, max_attempts=attempts)
        reply = ask(team, run, ModelRequest(
            role=MANAGER, conversation="plan", system=system,
            messages=[Message.user(prompt)], output_schema=plan_output_schema(workers)))
        try:
            plan = parse_plan(reply.text, workers,
                              max_tasks=team.settings.coordination.max_tasks)
            return check(plan) if check is not None else plan
        except PlanError as exc:
            errors = exc.errors
            if reply.stop_reason == MAX_TOKENS:
                errors = [
                    "Your answer was cut off at the output token limit before the plan was "
                    "complete: return a shorter plan (fewer, larger tasks and one-sentence "
                    "descriptions).", *errors]
            run.events.emit("plan_rejected", attempt=attempt, errors=errors)
            run.log(f"Plan rejected: {'; '.join(errors)}")
            note(run, MANAGER, None, "plan_rejected", "Plan rejected", {"errors": errors})
            prompt = (
                f"{base_prompt}\n\nYour previous answer was:\n{reply.text[:8000]}\n\n"
                "It cannot be used because:\n" + "\n".join(f"- {e}" for e in errors)
                + "\n\nReturn a corrected plan as one JSON object."
            )
    raise PlanError(
        f"The manager's plan was still invalid after {attempts} attempt(s): "
        + "; ".join(errors),
        errors,
    )


def record_plan(run: RunContext, plan: Plan,
                branch_of: Callable[[TaskRecord], str]) -> list[TaskRecord]:
    """Write the plan's tasks (with their branches) and decisions to the store."""
    tasks = []
    for task in plan.order():
        entry = copy.deepcopy(task)  # the plan stays as parsed; the store owns its entries
        entry["branch"] = branch_of(entry)
        tasks.append(entry)

    def apply(state: dict[str, Any]) -> None:
        state["tasks"] = tasks
        now = utc_now()
        state["decisions"].extend(
            {"decision": d.decision, "rationale": d.rationale,
             "affected_agents": list(d.affected_agents), "made_by": MANAGER, "timestamp": now}
            for d in plan.decisions
        )

    run.store.update(apply)
    run.events.emit("plan_accepted", tasks=len(tasks), task_ids=[t["task_id"] for t in tasks],
                    roles=sorted({t["assigned_to"] for t in tasks}))
    run.log(f"{len(tasks)} tasks created: " + ", ".join(
        f"{t['task_id']} ({t['assigned_to']})" for t in tasks))
    return tasks


def task_branch(run: RunContext, task: TaskRecord) -> str:
    """The run's branch for a task that records none (see `state_checks.task_branch_of`)."""
    return task_branch_of(run.feature_branch, task)
