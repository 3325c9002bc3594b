"""What `co status` and `co tasks show` print: the live parts of a state file as
data (for --json) and as text for a person.

Pure functions of a state that was already read and validated; nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .state_file import STATE_RELATIVE_PATH
from .task_record import TaskRecord


def _ago(timestamp: str | None) -> str:
    """The timestamp and how long ago it was, so a stalled run stands out."""
    if not timestamp:
        return "never"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if seconds < 120:
        span = f"{seconds} s"
    elif seconds < 7200:
        span = f"{seconds // 60} min"
    else:
        span = f"{seconds // 3600} h"
    return f"{timestamp} ({span} ago)"


def usage_line(usage: Mapping[str, Any]) -> str:
    """Calls, tokens by kind and the cost estimate, saying so when a price was unknown."""
    tokens = [usage.get(k, 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                        "cache_write_tokens")]
    if not usage.get("cost_known", True) or (usage.get("cost_usd") is None
                                             and usage.get("api_calls")):
        cost = "unknown (a model without a price was used)"
    else:
        cost = f"~${usage.get('cost_usd') or 0.0:.4f} (estimate)"
    return (
        f"{usage.get('api_calls', 0)} API calls, {sum(tokens):,} tokens (input {tokens[0]:,}, "
        f"output {tokens[1]:,}, cache read {tokens[2]:,}, cache write {tokens[3]:,}), cost {cost}"
    )


def tests_line(results: Mapping[str, Any] | None) -> str:
    """The verdict of the orchestrator's own test run, with the counts it parsed."""
    if not results:
        return "not run yet"
    counts = ", ".join(f"{results[k]} {k}" for k in ("passed", "failed", "skipped", "errors")
                       if results.get(k))
    verdict = "PASS" if results.get("success") else "FAIL"
    return (f"{verdict} ({counts or 'no counts parsed'}; exit code {results.get('exit_code')}, "
            f"`{results.get('command')}`)")


def status_data(project: Path, state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The machine-readable status: the live parts of the state, without the logs."""
    state = state or {}
    integration = state.get("integration") or {}
    return {
        "project": str(project),
        "state_file": str(project / STATE_RELATIVE_PATH),
        "exists": bool(state),
        "last_updated": state.get("last_updated"),
        "feature": state.get("current_feature"),
        "tasks": [
            {
                "task_id": t["task_id"],
                "description": t["description"],
                "assigned_to": t["assigned_to"],
                "status": t["status"],
                "progress": t.get("progress", 0),
                "branch": t.get("branch"),
                "dependencies": t.get("dependencies", []),
                "error": t.get("error"),
            }
            for t in state.get("tasks", [])
        ],
        "agents": state.get("agents", {}),
        "usage": {k: v for k, v in (state.get("usage") or {}).items() if k != "by_agent"},
        "usage_by_agent": (state.get("usage") or {}).get("by_agent", {}),
        "integration": {
            "status": integration.get("status"),
            "merges": len(integration.get("merges", [])),
            "test_results": integration.get("test_results"),
        } if integration else None,
    }


def render_status(data: Mapping[str, Any]) -> str:
    """`status_data` as text: feature, one line per task and agent, usage, integration."""
    lines = [f"Project: {data['project']}"]
    if not data["exists"]:
        lines.append(f"No team state yet ({data['state_file']} is missing): nothing has run here.")
        return "\n".join(lines)
    lines.append(f"State updated: {_ago(data['last_updated'])}")
    feature = data["feature"]
    if feature is None:
        lines.append("Feature: none yet")
    else:
        lines.append(f"Feature: {feature['title']} [{feature['status']}]")
        lines.append(f"  branch {feature.get('branch')} from {feature.get('base_branch')}, "
                     f"run {feature.get('run_id')}, started {feature.get('started_at')}")
    tasks = data["tasks"]
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines.append(f"Tasks: {len(tasks)}" + (f" ({summary})" if summary else ""))
    for t in tasks:
        line = (f"  {t['task_id']:<10} {t['status']:<11} {t['assigned_to']:<14} "
                f"{t['progress']:>3}%  {t['branch'] or '-'}")
        if t.get("error"):
            line += f"\n{'':14}error: {t['error']}"
        lines.append(line)
    lines.append(f"Agents: {len(data['agents'])}")
    for name, agent in data["agents"].items():
        lines.append(
            f"  {name:<24} {agent['status']:<8} task {agent.get('current_task') or '-'}, "
            f"turn {agent.get('turn', 0)}, last tool {agent.get('last_tool') or '-'}, "
            f"tokens {agent.get('tokens', 0):,}, updated {agent.get('updated_at') or '-'}"
        )
    lines.append(f"Usage: {usage_line(data['usage'])}")
    integration = data["integration"]
    if integration and integration["status"] != "not_started":
        lines.append(f"Integration: {integration['status']}, {integration['merges']} merge(s), "
                     f"tests {tests_line(integration['test_results'])}")
    return "\n".join(lines)


def render_task(task: TaskRecord) -> str:
    """Every recorded field of one task, its result and its usage; empty fields left out."""
    lines = [f"{task['task_id']}: {task['description']}"]
    fields = ("assigned_to", "status", "progress", "priority", "dependencies", "attempts",
              "branch", "worktree", "commit", "merge_commit", "started_at", "completed_at",
              "error")
    for key in fields:
        value = task.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"  {key}: {value}")
    for item in task.get("deliverables", []):
        lines.append(f"  deliverable: {item}")
    result = task.get("result")
    if result:
        lines.append("  result:")
        lines.append(f"    summary: {result.get('summary', '')}")
        for items, label in ((result.get("files_modified"), "file"),
                             (result.get("completed_items"), "done"),
                             (result.get("blockers"), "blocker")):
            for item in items or []:
                lines.append(f"    {label}: {item}")
        if result.get("notes"):
            lines.append(f"    notes: {result['notes']}")
    if task.get("usage"):
        lines.append(f"  usage: {usage_line(task['usage'])}")
    return "\n".join(lines)
