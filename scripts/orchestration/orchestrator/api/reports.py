"""Hierarchical reports of a job tree: worker directories, one report per job, one per depth,
and FINAL_RESULT.md with every level and which worker created which file."""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from agent_team.fsutil import write_atomic
from agent_team.models import Message
from agent_team.redaction import redact

from .layout import JobLayout
from .records import ServiceJob
from .timeline import analyse, analytics_markdown, bars, svg


def transcript_markdown(task: Mapping[str, Any], messages: Sequence[Message]) -> str:
    lines = [f"# Transcript of {task['worker_id']} ({task['task_id']}, {task['role']})", ""]
    for message in messages:
        if message.role == "tool":
            mark = " (error)" if message.is_error else ""
            lines += [f"### tool result: {message.name}{mark}", "", "```", message.content,
                      "```", ""]
            continue
        lines += [f"### {message.role}", "", message.content or "", ""]
        for call in message.tool_calls:
            lines += [f"- call `{call.name}` {json.dumps(call.arguments)[:4000]}"]
        if message.tool_calls:
            lines.append("")
    return redact("\n".join(lines))


def write_worker_dirs(layout: JobLayout, record: ServiceJob, tasks: Sequence[Mapping[str, Any]],
                      transcripts: Mapping[str, Sequence[Message]],
                      diffs: Mapping[str, str]) -> None:
    """depth_<d>/worker_<n>[_recursive]/ with transcript.md, diff.patch and worker.log."""
    for task in tasks:
        label = str(task["worker_id"]).removeprefix("worker_")
        directory = layout.worker_dir(record.depth, label,
                                      recursive=bool(task.get("child_job_id")))
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "transcript.md",
                     transcript_markdown(task, transcripts.get(str(task["task_id"]), [])))
        write_atomic(directory / "diff.patch", redact(diffs.get(str(task["task_id"]), "")))
        live = layout.worker_log(record.depth, label)
        if live.exists():
            shutil.copyfile(live, directory / "worker.log")
        else:
            write_atomic(directory / "worker.log", "")
        write_atomic(directory / "result.json", json.dumps(
            {k: v for k, v in task.items() if k != "child_results"}, indent=2, default=str))


def job_report(layout: JobLayout, record: ServiceJob, tasks: Sequence[Mapping[str, Any]],
               summary_text: str = "") -> str:
    """reports/job_<id>.md (+ .svg chart, .html with the chart inline, .json); returns Markdown."""
    layout.reports.mkdir(parents=True, exist_ok=True)
    analytics = analyse(tasks, record.settings.max_workers)
    chart = svg(bars(record.job_id, tasks), title=f"Job {record.job_id}: tasks per worker")
    svg_name = f"job_{record.job_id}_timeline.svg"
    write_atomic(layout.reports / svg_name, chart)
    first_line = (record.request.strip().splitlines() or [""])[0][:300]
    head = [f"# Job {record.job_id} (depth {record.depth}): {record.status}", "",
            f"Request: {first_line}", ""]
    if record.parent_job_id:
        head += [f"Delegated by job {record.parent_job_id}, task {record.parent_task_id}.", ""]
    if record.branch:
        head += [f"Branch: `{record.branch}` in `{record.repository}`", ""]
    if record.error:
        head += [f"Problem: {record.error}", ""]
    body = ["## Tasks", "", "| Worker | Task | Role | Status | Files created | Child job |",
            "|---|---|---|---|---|---|"]
    for t in tasks:
        body.append(f"| {t['worker_id']} | {t['task_id']} | {t['role']} | {t['status']} | "
                    f"{', '.join(t['files_created']) or '-'} | {t.get('child_job_id') or '-'} |")
    body.append("")
    for t in tasks:
        if t.get("output"):
            body += [f"- **{t['worker_id']}** ({t['task_id']}): {t['output'][:1000]}"]
    if summary_text:
        body += ["", "## Manager's summary", "", summary_text.strip()]
    markdown = "\n".join(head + body) + "\n\n" + analytics_markdown(tasks, analytics, svg_name)
    markdown = redact(markdown)
    write_atomic(layout.reports / f"job_{record.job_id}.md", markdown)
    write_atomic(layout.reports / f"job_{record.job_id}.html",
                 "<!doctype html><meta charset='utf-8'><title>Job report</title>"
                 f"<body>{chart}<pre>{html.escape(markdown)}</pre></body>")
    write_atomic(layout.reports / f"job_{record.job_id}.json", json.dumps({
        "job": record.to_json(),
        "analytics": {"makespan_s": analytics.makespan_s, "busy_s": analytics.busy_s,
                      "lanes": analytics.lanes, "efficiency": analytics.efficiency,
                      "critical_path": analytics.critical_path,
                      "critical_path_s": analytics.critical_path_s,
                      "bottlenecks": analytics.bottlenecks, "tokens": analytics.tokens,
                      "cost_usd": analytics.cost_usd},
    }, indent=2, default=str))
    return markdown


def level_reports(layout: JobLayout, tree: Sequence[ServiceJob]) -> None:
    """LEVEL_<d>_REPORT.md: every job of the tree at depth d, with its tasks and analytics."""
    depths = sorted({r.depth for r in tree})
    for depth in depths:
        jobs = [r for r in tree if r.depth == depth]
        lines = [f"# Level {depth} report", "", f"{len(jobs)} job(s) at depth {depth}.", ""]
        for record in jobs:
            source = layout.reports / f"job_{record.job_id}.md"
            lines += [f"## Job {record.job_id}: {record.status}", ""]
            if record.parent_job_id:
                lines += [f"Child of job {record.parent_job_id} (task {record.parent_task_id}).",
                          ""]
            lines += [f"Full report: [reports/job_{record.job_id}.md](../reports/"
                      f"job_{record.job_id}.md)", ""]
            if source.exists():
                text = source.read_text(encoding="utf-8").split("\n", 1)[-1]
                lines.append(text.replace(f"](job_{record.job_id}_timeline.svg)",
                                          f"](../reports/job_{record.job_id}_timeline.svg)"))
        layout.depth_dir(depth).mkdir(parents=True, exist_ok=True)
        write_atomic(layout.level_report(depth), "\n".join(lines) + "\n")


def _flatten(tasks: Sequence[Mapping[str, Any]], depth: int) -> list[tuple[int, Mapping[str, Any]]]:
    out: list[tuple[int, Mapping[str, Any]]] = []
    for task in tasks:
        out.append((depth, task))
        out += _flatten(task.get("child_results") or [], depth + 1)
    return out


def final_result(layout: JobLayout, root: ServiceJob, tree: Sequence[ServiceJob]) -> str:
    """FINAL_RESULT.md: the outcome, every level, and the authorship of every file."""
    every = _flatten(root.tasks, root.depth)
    lines = [
        f"# Final result of job {root.job_id}: {root.status}", "",
        f"Request: {root.request.strip()[:2000]}", "",
        f"Jobs in the tree: {len(tree)} (depths {min(r.depth for r in tree)}-"
        f"{max(r.depth for r in tree)}); tasks: {len(every)}.",
    ]
    if root.branch:
        lines += ["", f"Result branch: `{root.branch}` in `{root.repository}`"]
    if root.error:
        lines += ["", f"Problem: {root.error}"]
    usage = root.usage
    cost = usage.get("cost_usd")
    lines += ["", f"Usage of the whole tree: {sum(r.usage.get('api_calls', 0) for r in tree)} "
              f"API calls, {sum(r.usage.get('tokens', 0) for r in tree):,} tokens, cost "
              + ("unknown" if cost is None else
                 f"${sum(float(r.usage.get('cost_usd') or 0) for r in tree):.4f}"), ""]
    lines += ["## Levels", ""]
    for depth in sorted({r.depth for r in tree}):
        lines.append(f"- Depth {depth}: [LEVEL_{depth}_REPORT.md](depth_{depth}/"
                     f"LEVEL_{depth}_REPORT.md), "
                     f"{sum(1 for r in tree if r.depth == depth)} job(s)")
    lines += ["", "## Which worker created which file", "",
              "| File | Created by | Depth | Task | Task status |", "|---|---|---|---|---|"]
    for depth, task in every:
        for path in task.get("files_created") or []:
            lines.append(f"| `{path}` | {task['worker_id']} | {depth} | {task['task_id']} | "
                         f"{task['status']} |")
    lines += ["", "## Files changed (not created) per worker", ""]
    for depth, task in every:
        changed = [f for f in task.get("files_modified") or []
                   if f not in (task.get("files_created") or [])]
        if changed:
            lines.append(f"- {task['worker_id']} (depth {depth}): {', '.join(changed)}")
    lines += ["", "## Tasks", ""]
    for depth, task in every:
        indent = "  " * (depth - root.depth)
        child = f" -> child job {task['child_job_id']}" if task.get("child_job_id") else ""
        lines.append(f"{indent}- {task['worker_id']} {task['task_id']} ({task['role']}): "
                     f"{task['status']}{child}: {str(task.get('output', ''))[:300]}")
    lines += ["", "## Logs", "", "- `logs/orchestrator.log`: every event of the tree",
              "- `logs/depth_<d>_worker_<n>.log`: one worker", "- `reports/`: one report per job",
              ""]
    text = redact("\n".join(lines))
    write_atomic(layout.final_result, text)
    return text
