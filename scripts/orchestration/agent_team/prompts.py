"""What agents are told: system prompts per role and the prompt of one task.

The facades expose these as the guide's `_get_system_prompt` and `_build_task_prompt` seams;
`system_for` and `task_prompt_for` call the seam when the team has one.
"""

from __future__ import annotations

from .roles import MANAGER, load_prompt, read_context
from .run_context import RunContext
from .task_record import TaskRecord, prompt_notes
from .team import Team


def system_prompt(team: Team, agent_id: str) -> str:
    """A role's own text, the working rules for workers, and the project context."""
    role = team.roles.get(agent_id)
    text = role.system_prompt if role else f"You are the team's {agent_id}."
    if agent_id != MANAGER:
        text += "\n\n" + load_prompt("worker-rules")
    context = read_context(team.project_dir)
    if context:
        text += f"\n\nProject context (from .ai-agents/context/):\n\n{context}"
    return text


def task_prompt(run: RunContext, task: TaskRecord) -> str:
    """What the agent is asked to do, with its dependencies' real results and decisions."""
    wanted = set(task.get("dependencies", []))
    state = run.store.view(lambda s: {  # only what the prompt needs: O(1) copies per task
        "tasks": [t for t in s["tasks"] if t["task_id"] in wanted],
        "current_feature": s["current_feature"], "decisions": s["decisions"]})
    by_id = {t["task_id"]: t for t in state["tasks"]}
    feature = state["current_feature"]
    lines = [
        f"Task: {task['task_id']} - {task['description']}",
        f"Feature: {feature['title']}" if feature else "",
        f"Branch: {task.get('branch') or run.feature_branch}",
    ]
    if task.get("deliverables"):
        lines += ["", "Deliverables:"] + [f"- {d}" for d in task["deliverables"]]
    deps = [by_id[d] for d in task.get("dependencies", []) if d in by_id]
    if deps:
        lines += ["", "Work already done by the tasks you depend on (it is in your tree):"]
        for dep in deps:
            result = dep.get("result") or {}
            files = ", ".join(result.get("files_modified", [])) or "no files"
            summary = result.get("summary") or dep["description"]
            lines.append(f"- {dep['task_id']} ({dep['assigned_to']}): {summary} [{files}]")
    if state["decisions"]:
        lines += ["", "Team decisions to follow:"]
        lines += [f"- {d['decision']} ({d.get('rationale', '')})" for d in state["decisions"]]
    guidance, last_error = prompt_notes(task)
    if guidance:
        lines += ["", f"Guidance: {guidance}"]
    if last_error:
        lines += ["", f"A previous attempt failed: {last_error}"]
    lines += ["", "Make the changes with the tools, check them, then call finish_task."]
    return "\n".join(lines)


def system_for(team: Team, agent_id: str) -> str:
    return team.seams._get_system_prompt(agent_id) if team.seams else system_prompt(team, agent_id)


def task_prompt_for(team: Team, run: RunContext, task: TaskRecord) -> str:
    return team.seams._build_task_prompt(task) if team.seams else task_prompt(run, task)
