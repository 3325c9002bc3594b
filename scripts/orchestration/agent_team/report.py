"""The run summary: built from the state file (never from what agents claimed), printed, and
written as Markdown and JSON under `.ai-agents/reports/`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from .fsutil import write_atomic
from .sanitize import for_log
from .sanitize import for_markdown_pr as md
from .task_record import TaskRecord, TaskStatus, job_of, tasks_of

RULE = "=" * 80
STATUS_MARK = {
    "completed": "[done]", "failed": "[FAIL]", "blocked": "[blocked]", "skipped": "[skipped]",
    "pending": "[pending]", "in_progress": "[running]",
}


def build_summary(
    state: Mapping[str, Any],
    *,
    run_id: str,
    duration_seconds: float,
    status: str,
    exit_code: int,
    files_changed: list[str] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of the current feature's run; `warnings` are the run's own (e.g.
    that agents' commands ran without the sandbox).

    `files_changed` is the feature branch's diff against its base, from git; without it the
    union of the tasks' git-recorded files is used.
    """
    feature = state.get("current_feature") or {}
    usage = state.get("usage") or {}
    integration = state.get("integration") or {}
    records = tasks_of(state)
    tasks = [task_line(t) for t in records]
    files = sorted(files_changed if files_changed is not None else {
        f for t in tasks for f in t["files_modified"]})
    calls_by_role = {
        role: counts.get("api_calls", 0) for role, counts in (usage.get("by_agent") or {}).items()
    }
    return {
        "run_id": run_id,
        "feature": feature.get("title", ""),
        "feature_branch": feature.get("branch"),
        "base_branch": feature.get("base_branch"),
        "status": status,
        "exit_code": exit_code,
        "stop_reason": feature.get("stop_reason"),
        "duration_seconds": round(duration_seconds, 2),
        "api_calls": usage.get("api_calls", 0),
        "api_calls_by_role": calls_by_role,
        "tokens": {
            "input": usage.get("input_tokens", 0),
            "output": usage.get("output_tokens", 0),
            "cache_read": usage.get("cache_read_tokens", 0),
            "cache_write": usage.get("cache_write_tokens", 0),
        },
        "cost_usd": usage.get("cost_usd"),
        "cost_known": usage.get("cost_known", usage.get("cost_usd") is not None),
        "tasks": tasks,
        "files_changed": files,
        "schedule": schedule_figures(records),
        "merges": integration.get("merges", []),
        "test_results": integration.get("test_results"),
        "integration_summary": integration.get("summary", ""),
        "merged_into_base": integration.get("merged_into_base", False),
        "warnings": list(warnings or []),
    }


class TaskLine(TypedDict):
    """A task as the report shows it: its row in the table and its line in the JSON."""

    task_id: str
    assigned_to: str
    description: str
    status: TaskStatus
    commit: str | None
    files_modified: list[str]
    error: str | None
    api_calls: int


def task_line(task: TaskRecord) -> TaskLine:
    """The report's data of one task, from the record the run kept (not the agent's claims)."""
    result, usage = task.get("result"), task.get("usage")
    return {
        "task_id": task["task_id"],
        "assigned_to": task["assigned_to"],
        "description": task["description"],
        "status": task["status"],
        "commit": task.get("commit"),
        "files_modified": list(result.get("files_modified", [])) if result else [],
        "error": task.get("error"),
        "api_calls": usage.get("api_calls", 0) if usage else 0,
    }


def _seconds(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def schedule_figures(tasks: list[TaskRecord]) -> dict[str, Any] | None:
    """Makespan of the tasks against the critical path of their measured durations.

    The critical path is the longest dependency chain when each task takes as long as it
    really took: no schedule can finish sooner, so the ratio shows how close the run came.
    """
    from .scheduler import critical_path_length

    timed = {}
    for task in tasks:
        start, end = _seconds(task.get("started_at")), _seconds(task.get("completed_at"))
        if start is not None and end is not None and end >= start:
            timed[task["task_id"]] = (start, end)
    if not timed:
        return None
    jobs = [job_of(t, timed) for t in tasks if t["task_id"] in timed]
    length, path = critical_path_length(jobs, {k: e - s for k, (s, e) in timed.items()})
    makespan = max(e for _, e in timed.values()) - min(s for s, _ in timed.values())
    return {
        "makespan_seconds": round(makespan, 2),
        "critical_path_seconds": round(length, 2),
        "critical_path": path,
        "ratio": round(makespan / length, 2) if length > 0 else None,
    }


def compact(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the summary kept in the state file's run history."""
    keys = ("status", "exit_code", "duration_seconds", "api_calls", "tokens", "cost_usd")
    out = {key: summary[key] for key in keys}
    out["tasks"] = {t["task_id"]: t["status"] for t in summary["tasks"]}
    return out


def _tokens_line(summary: Mapping[str, Any]) -> str:
    tokens = summary["tokens"]
    total = sum(tokens.values())
    return (
        f"{total:,} (input {tokens['input']:,}, output {tokens['output']:,}, "
        f"cache read {tokens['cache_read']:,}, cache write {tokens['cache_write']:,})"
    )


def _cost_line(summary: Mapping[str, Any]) -> str:
    if not summary["cost_known"] or (summary["cost_usd"] is None and summary["api_calls"]):
        return "unknown (a model without a price in the table was used)"
    if not summary["cost_usd"] and not any(summary["tokens"].values()):
        return "$0.00 (no tokens were billed)"
    return f"~${summary['cost_usd'] or 0.0:.4f} (estimate from list prices)"


def _merges_line(merges: list[Mapping[str, Any]]) -> str:
    conflicts = sum(1 for m in merges if str(m.get("status", "")).startswith("conflict"))
    unresolved = sum(1 for m in merges if m.get("status") in ("conflict_unresolved", "failed"))
    detail = [f"{conflicts} with conflicts"] if conflicts else []
    detail += [f"{unresolved} not merged"] if unresolved else []
    return f"{len(merges)}" + (f" ({', '.join(detail)})" if detail else "")


def _tests_line(results: Mapping[str, Any] | None) -> str:
    if not results:
        return "not run"
    counts = ", ".join(
        f"{results[k]} {k}" for k in ("passed", "failed", "skipped", "errors")
        if results.get(k) is not None and (results.get(k) or k == "passed")
    )
    verdict = "PASS" if results.get("success") else "FAIL"
    return f"{verdict}: {counts or 'no counts parsed'} (exit code {results.get('exit_code')}, " \
        f"`{results.get('command')}`)"


def render_console(summary: Mapping[str, Any]) -> str:
    """The printed summary, in the layout people know from the usage guide."""
    calls = ", ".join(f"{role} x{n}" for role, n in summary["api_calls_by_role"].items())
    lines = [
        RULE,
        "ORCHESTRATION SUMMARY",
        RULE,
        f"Feature: {for_log(summary['feature'])}",
        f"Branch: {summary['feature_branch']} (from {summary['base_branch']})",
        f"Duration: {summary['duration_seconds']:.1f} s",
        f"API Calls: {summary['api_calls']}" + (f" ({calls})" if calls else ""),
        f"Tokens Used: {_tokens_line(summary)}",
        f"Estimated Cost: {_cost_line(summary)}",
        "",
        "Tasks:",
    ]
    for task in summary["tasks"]:
        mark = STATUS_MARK.get(task["status"], task["status"])
        line = f"  {mark} {task['task_id']} ({task['assigned_to']}): {task['description'][:60]}"
        if task.get("error"):
            line += f" - {task['error'][:120]}"
        lines.append(for_log(line))  # descriptions and errors carry the models' text
    lines += [
        "",
        "Results:",
        f"  Files changed: {len(summary['files_changed'])}",
        f"  Merges: {_merges_line(summary['merges'])}",
        f"  Tests: {_tests_line(summary['test_results'])}",
    ]
    schedule = summary.get("schedule")
    if schedule and schedule.get("ratio"):
        lines.append(
            f"  Schedule: tasks took {schedule['makespan_seconds']:.1f} s; critical path "
            f"{' -> '.join(schedule['critical_path'])} {schedule['critical_path_seconds']:.1f} s"
            f" (x{schedule['ratio']:.2f})"
        )
    if summary.get("stop_reason"):
        lines.append(f"  Stopped: {for_log(summary['stop_reason'])}")
    lines += [f"  Warning: {warning}" for warning in summary.get("warnings", [])]
    verdict = "SUCCESS - ready to review" if summary["exit_code"] == 0 else "FAILED"
    if summary["exit_code"] == 3:
        verdict = "STOPPED - budget reached; resume with --resume"
    elif summary["exit_code"] == 130:
        verdict = "STOPPED - interrupted; resume with --resume"
    lines += ["", f"Status: {verdict}", RULE]
    return "\n".join(lines)


def _code(text: str) -> str:
    """A code span, in which Markdown, HTML, mentions and closing keywords are inert."""
    return "`" + for_log(text).replace("`", "'") + "`"


def render_markdown(summary: Mapping[str, Any]) -> str:
    lines = [
        f"# Run {summary['run_id']}: {md(for_log(summary['feature']))}",
        "",
        f"- Status: **{summary['status']}** (exit code {summary['exit_code']})",
        *(f"- **Warning**: {md(warning)}" for warning in summary.get("warnings", [])),
        f"- Branch: `{summary['feature_branch']}` from `{summary['base_branch']}`",
        f"- Duration: {summary['duration_seconds']:.1f} s",
        f"- API calls: {summary['api_calls']}",
        f"- Tokens: {_tokens_line(summary)}",
        f"- Estimated cost: {_cost_line(summary)}",
        f"- Tests: {_tests_line(summary['test_results'])}",
        f"- Files changed (git): {len(summary['files_changed'])}",
        "",
        "## Tasks",
        "",
        "| Task | Role | Status | Commit | Files | Calls |",
        "|---|---|---|---|---|---|",
    ]
    for t in summary["tasks"]:
        commit = (t["commit"] or "")[:10]
        files = "<br>".join(_code(f) for f in t["files_modified"]) or "-"
        lines.append(
            f"| {md(t['task_id'])} | {md(t['assigned_to'])} | {t['status']} | {commit} | "
            f"{files} | {t['api_calls']} |"
        )
    problems = [t for t in summary["tasks"] if t.get("error")]
    if problems:
        lines += ["", "## Why tasks did not complete", ""]
        lines += [md(f"- {t['task_id']} ({t['status']}): {t['error']}") for t in problems]
    if summary["merges"]:
        lines += ["", "## Merges", ""]
        for m in summary["merges"]:
            conflicts = f" (conflicts: {', '.join(m['conflicts'])})" if m.get("conflicts") else ""
            lines.append(md(f"- {m['task_id']}: {m['status']}{conflicts}"))
    if summary["integration_summary"]:
        lines += ["", "## Integration summary", "", md(summary["integration_summary"])]
    return "\n".join(lines) + "\n"


def write_reports(project_dir: Path, run_id: str, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write `<run>.md` and `<run>.json` under .ai-agents/reports/ and return their paths."""
    directory = project_dir / ".ai-agents" / "reports"
    paths = {"markdown": directory / f"{run_id}.md", "json": directory / f"{run_id}.json"}
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(paths["json"], json.dumps(summary, indent=2) + "\n")
    write_atomic(paths["markdown"], render_markdown(summary))
    return paths
