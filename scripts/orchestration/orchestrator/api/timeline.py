"""Performance analytics of a job: timeline bars, an SVG chart, efficiency, critical path.

The chart is plain SVG written here (one row per worker lane, one bar per task), so reports
and the dashboard need no plotting library and no build step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from agent_team.scheduler import Job, critical_path_length

from .results import seconds

COLOURS = {"success": "#2e7d32", "recursive_success": "#6a1b9a", "failed": "#c62828",
           "running": "#1565c0", "cancelled": "#757575", "pending": "#9e9e9e"}


@dataclass(frozen=True)
class Bar:
    job_id: str
    task_id: str
    worker_id: str
    lane: str
    start_s: float
    end_s: float | None
    status: str


@dataclass(frozen=True)
class Analytics:
    makespan_s: float
    busy_s: float
    lanes: int
    efficiency: float | None
    critical_path: list[str]
    critical_path_s: float
    bottlenecks: list[tuple[str, float]]
    tokens: int
    cost_usd: float | None


def bars(job_id: str, tasks: Sequence[Mapping[str, Any]], *, now: float | None = None,
         origin: float | None = None) -> list[Bar]:
    """Bars of tasks that started, seconds after `origin` (the first start by default)."""
    starts = [seconds(t.get("started_at")) for t in tasks]
    known = [s for s in starts if s is not None]
    if not known:
        return []
    zero = origin if origin is not None else min(known)
    out = []
    lane_names: dict[str, str] = {}
    for task, start in zip(tasks, starts, strict=False):
        if start is None:
            continue
        end = seconds(task.get("finished_at"))
        if end is None and now is not None:
            end = now
        raw_lane = str(task.get("lane") or task.get("worker_id"))
        lane = lane_names.setdefault(raw_lane, f"lane {len(lane_names) + 1}")
        out.append(Bar(job_id, str(task.get("task_id")), str(task.get("worker_id")), lane,
                       round(start - zero, 3), None if end is None else round(end - zero, 3),
                       str(task.get("status"))))
    return out


def analyse(tasks: Sequence[Mapping[str, Any]], max_workers: int) -> Analytics:
    """Efficiency = busy time / (makespan x lanes that could run); the critical path by the
    measured durations; bottlenecks = the longest tasks on it."""
    timed = [b for b in bars("", tasks) if b.end_s is not None]
    makespan = max((b.end_s or 0.0 for b in timed), default=0.0) - min(
        (b.start_s for b in timed), default=0.0)
    busy = sum((b.end_s or 0.0) - b.start_s for b in timed)
    lanes = max(1, min(max_workers, len(tasks)))
    efficiency = busy / (makespan * lanes) if makespan > 0 else None
    durations = {str(t["task_id"]): float(t.get("duration_s") or 0.0) for t in tasks}
    ids = set(durations)
    jobs = [Job(str(t["task_id"]), tuple(d for d in t.get("dependencies", []) if d in ids))
            for t in tasks]
    length, path = critical_path_length(jobs, durations) if jobs else (0.0, [])
    bottlenecks = sorted(((tid, durations[tid]) for tid in path), key=lambda x: -x[1])[:3]
    costs = [t.get("cost_usd") for t in tasks]
    cost = None if any(c is None for c in costs) else sum(float(c or 0) for c in costs)
    return Analytics(round(makespan, 3), round(busy, 3), lanes,
                     None if efficiency is None else round(min(efficiency, 1.0), 3),
                     path, round(length, 3), bottlenecks,
                     sum(int(t.get("tokens") or 0) for t in tasks), cost)


def svg(chart_bars: Sequence[Bar], *, title: str = "Execution timeline") -> str:
    """Tasks per worker lane over time, as a self-contained SVG document."""
    lanes = sorted({b.lane for b in chart_bars}, key=lambda name: int(name.split()[-1]))
    end = max([b.end_s or b.start_s for b in chart_bars] + [1.0])
    left, top, row, width = 70, 30, 26, 640
    height = top + row * max(len(lanes), 1) + 30
    scale = width / end
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
        f'height="{height}" viewBox="0 0 {left + width + 20} {height}" '
        'font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-size="13">{escape(title)}</text>',
    ]
    for index, lane in enumerate(lanes):
        y = top + index * row
        parts.append(f'<text x="4" y="{y + 16}">{escape(lane)}</text>')
        parts.append(f'<line x1="{left}" y1="{y + row - 2}" x2="{left + width}" '
                     f'y2="{y + row - 2}" stroke="#eee"/>')
    for bar in chart_bars:
        y = top + lanes.index(bar.lane) * row
        x = left + bar.start_s * scale
        w = max(((bar.end_s if bar.end_s is not None else end) - bar.start_s) * scale, 2)
        colour = COLOURS.get(bar.status, "#9e9e9e")
        label = f"{bar.task_id} {bar.worker_id}"
        parts.append(
            f'<g class="bar" data-task="{escape(bar.task_id)}" data-job="{escape(bar.job_id)}">'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="3" '
            f'fill="{colour}"><title>{escape(label)}: {bar.start_s:.2f}-'
            f'{"…" if bar.end_s is None else f"{bar.end_s:.2f}"} s ({escape(bar.status)})'
            f'</title></rect><text x="{x + 3:.1f}" y="{y + 17}" fill="#fff">'
            f"{escape(bar.task_id)}</text></g>"
        )
    axis_y = top + row * max(len(lanes), 1) + 4
    for step in range(5):
        t = end * step / 4
        x = left + t * scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 12}" text-anchor="middle">{t:.1f}s'
                     "</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def analytics_markdown(tasks: Sequence[Mapping[str, Any]], analytics: Analytics,
                       svg_name: str | None) -> str:
    """The analytics section of a report, with the chart embedded (as an image link)."""
    eff = "n/a" if analytics.efficiency is None else f"{analytics.efficiency:.0%}"
    cost = "unknown" if analytics.cost_usd is None else f"${analytics.cost_usd:.4f}"
    lines = ["## Performance analytics", ""]
    if svg_name:
        lines += [f"![Execution timeline]({svg_name})", ""]
    lines += [
        f"- Makespan: {analytics.makespan_s:.2f} s; worker time: {analytics.busy_s:.2f} s on "
        f"{analytics.lanes} lane(s)",
        f"- Parallelization efficiency: {eff} (worker time / (makespan x lanes))",
        f"- Critical path: {' -> '.join(analytics.critical_path) or 'none'} "
        f"({analytics.critical_path_s:.2f} s)",
        "- Bottleneck tasks: " + (", ".join(f"{tid} ({d:.2f} s)" for tid, d in
                                            analytics.bottlenecks) or "none"),
        f"- Tokens: {analytics.tokens:,}; cost: {cost}",
        "",
        "| Worker | Task | Status | Duration (s) | Tokens | Cost (USD) |",
        "|---|---|---|---|---|---|",
    ]
    for t in tasks:
        duration = "" if t.get("duration_s") is None else f"{t['duration_s']:.2f}"
        c = t.get("cost_usd")
        lines.append(f"| {t['worker_id']} | {t['task_id']} | {t['status']} | {duration} | "
                     f"{t.get('tokens', 0)} | {'unknown' if c is None else f'{c:.4f}'} |")
    return "\n".join(lines) + "\n"
