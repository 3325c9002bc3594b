"""What every benchmark shares: the import path, machine facts, tables, JSON output, repos."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT / "scripts" / "orchestration", ROOT):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

PASSING_TESTS = f"{sys.executable} -c \"print('1 passed, 0 failed')\""


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --json FILE, --seed N."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a result")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    return ap


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        git_version = subprocess.run(
            ["git", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        git_version = "git not found"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "git": git_version,
        "platform": platform.platform(),
    }


def machine_line() -> str:
    info = machine()
    return (
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"{info['git']}, {info['platform']}"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else 0.0


def write_json(path: str | None, name: str, args: argparse.Namespace,
               results: Mapping[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "quick": bool(args.quick), "seed": args.seed,
               "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": machine(), **results}
    target.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"JSON written to {target}")


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in a benchmark's own temporary repository."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout


def make_repo(path: Path, files: Mapping[str, str]) -> Path:
    """A repository with one commit holding `files`, packed the way a clone would be.

    Left loose, thousands of new objects make git's automatic gc start in the middle of the
    measured run, and every checkout read one file per object.
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.invalid"),
                       ("commit.gpgsign", "false")):
        git(path, "config", key, value)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    git(path, "add", "--all")
    git(path, "-c", "gc.auto=0", "commit", "-q", "-m", "initial commit")
    git(path, "gc", "-q")
    return path


# -- scripted sessions ----------------------------------------------------------------------------

ROLES = ("backend-dev", "frontend-dev", "qa-tester")


def plan_task(task_id: str, role: str, dependencies: Sequence[str] = ()) -> dict[str, Any]:
    """One task of a manager plan, in the shape the plan schema asks for."""
    return {
        "task_id": task_id,
        "description": f"Benchmark work item {task_id}",
        "assigned_to": role,
        "dependencies": list(dependencies),
        "deliverables": [f"bench/{task_id.lower()}.txt"],
        "priority": "medium",
    }


def agent_turns(task_id: str, *, delay: float = 0.0) -> list[dict[str, Any]]:
    """An agent that writes one small file and finishes, in one reply after `delay` seconds."""
    path = f"bench/{task_id.lower()}.txt"
    turn: dict[str, Any] = {
        "text": "",
        "tool_calls": [
            {"name": "write_file", "arguments": {"path": path, "content": f"{task_id} done\n"}},
            {"name": "finish_task", "arguments": {
                "status": "completed", "summary": f"Wrote {path}.", "completed_items": [path],
                "blockers": [], "notes": ""}},
        ],
    }
    if delay:
        turn["delay"] = delay
    return [turn]


def team_session(tasks: Sequence[Mapping[str, Any]],
                 delays: Mapping[str, float] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Queues for ScriptedModel: the plan, one agent per task, the integration summary."""
    delays = delays or {}
    agents: dict[str, list[dict[str, Any]]] = {
        "manager:plan": [{"text": json.dumps({"tasks": list(tasks), "decisions": []})}],
        "manager:integration": [{"text": json.dumps({"summary": "Merged.", "decisions": []})}],
    }
    for item in tasks:
        key = f"{item['assigned_to']}:{item['task_id']}"
        agents[key] = agent_turns(item["task_id"], delay=delays.get(item["task_id"], 0.0))
    return agents


def failure_cause(state: dict[str, Any]) -> str:
    """Why a run did not complete, from its state: a benchmark must never say only "failed"."""
    lines = [f"{t['task_id']} {t['status']}: {t.get('error') or 'no error recorded'}"
             for t in state["tasks"] if t["status"] != "completed"]
    integration = state.get("integration") or {}
    lines.append(f"integration {integration.get('status')}, tests "
                 f"{json.dumps(integration.get('test_results'))}")
    feature = state.get("current_feature") or {}
    if feature.get("stop_reason"):
        lines.append(f"stop reason: {feature['stop_reason']}")
    return "; ".join(lines[:20])
