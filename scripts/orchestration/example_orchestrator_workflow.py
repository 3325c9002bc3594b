#!/usr/bin/env python3
"""The delegation guide's four patterns, runnable offline: `example_orchestrator_workflow.py N`.

1 parallel, 2 hierarchical, 3 adaptive, 4 quick delegation. Each runs in a demo repository
(a new temporary one unless --project-dir names one) on the scripted model, so no key and no
network are needed; with workers running (`claude_coordinator.py N`) they run the tasks,
otherwise the calls run them in this process. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orchestrator import ClaudeOrchestrator, quick_delegate  # noqa: E402


def _write(path: str, content: str, summary: str) -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "write_file",
                             "arguments": {"path": path, "content": content}}]},
            {"tool_calls": [{"name": "finish_task",
                             "arguments": {"status": "completed", "summary": summary}}]}]


SESSIONS: dict[int, dict[str, list[dict[str, Any]]]] = {
    1: {"worker:1": _write("factorial.py", "def factorial(n):\n    return 1 if n < 2 else "
                           "n * factorial(n - 1)\n", "factorial() in factorial.py"),
        "worker:2": _write("fibonacci.py", "def fibonacci(n):\n    a, b = 0, 1\n    for _ in "
                           "range(n):\n        a, b = b, a + b\n    return a\n",
                           "fibonacci() in fibonacci.py"),
        "worker:3": _write("primes.py", "def is_prime(n):\n    return n > 1 and all(n % d for "
                           "d in range(2, int(n ** 0.5) + 1))\n", "is_prime() in primes.py")},
    2: {"worker:1": _write("api.py", "ROUTES = {'/items': 'list'}\n", "REST API in api.py"),
        "worker:2": _write("test_api.py", "from api import ROUTES\n\n\ndef test_routes():\n"
                           "    assert '/items' in ROUTES\n", "tests in test_api.py"),
        "worker:3": _write("API.md", "# API\n\nGET /items lists items.\n", "docs in API.md")},
    3: {"worker:1": [{"tool_calls": [{"name": "finish_task", "arguments": {
            "status": "completed",
            "summary": "Found performance issues (N+1 queries) and security vulnerabilities "
                       "(unsanitised input)."}}]}],
        "worker:2": _write("queries.py", "# batched queries\n", "queries batched"),
        "worker:3": _write("security.py", "# input validation\n", "input validated")},
    4: {"worker:1": _write("factorial.py", "def factorial(n): ...\n", "factorial"),
        "worker:2": _write("fibonacci.py", "def fibonacci(n): ...\n", "fibonacci"),
        "worker:3": _write("primes.py", "def is_prime(n): ...\n", "prime checker")},
}
FALLBACK = [{"tool_calls": [{"name": "finish_task", "arguments": {
    "status": "completed", "summary": "nothing to change"}}]}]


def prepare_project(directory: Path, pattern: int) -> None:
    """A git repository with a config that selects the scripted model and this pattern."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(directory)], check=True)
        subprocess.run(["git", "-C", str(directory), "-c", "user.name=demo", "-c",
                        "user.email=demo@example.invalid", "commit", "-q", "--allow-empty",
                        "-m", "initial commit"], check=True)
    session = directory / ".ai-agents" / f"delegation-pattern-{pattern}.json"
    session.parent.mkdir(parents=True, exist_ok=True)
    agents = {**SESSIONS[pattern], "worker": FALLBACK}
    session.write_text(json.dumps({"format": "agent-team-session", "version": 1,
                                   "agents": agents}, indent=2), encoding="utf-8")
    (directory / "orchestrator-config.json").write_text(json.dumps(
        {"api_provider": "scripted", "session": str(session)}, indent=2), encoding="utf-8")


def pattern_1(project: Path) -> dict[int, dict[str, Any]]:
    orch = ClaudeOrchestrator("parallel_tasks", project_dir=project)
    job = orch.create_job("Generate utility functions")
    orch.add_subtask(job, "Create factorial function", priority=5)
    orch.add_subtask(job, "Create fibonacci function", priority=5)
    orch.add_subtask(job, "Create prime checker function", priority=5)
    return orch.wait_and_collect(job)


def pattern_2(project: Path) -> dict[int, dict[str, Any]]:
    orch = ClaudeOrchestrator("hierarchical", project_dir=project)
    job = orch.create_job("Build and test API")
    api_task = orch.add_subtask(job, "Implement REST API", priority=10)
    orch.add_subtask(job, "Write API tests", priority=5, parent_task_id=api_task)
    orch.add_subtask(job, "Generate API documentation", priority=3, parent_task_id=api_task)
    return orch.wait_and_collect(job)


def pattern_3(project: Path) -> dict[int, dict[str, Any]]:
    orch = ClaudeOrchestrator("adaptive", project_dir=project)
    job = orch.create_job("Refactor codebase")
    analysis_task = orch.add_subtask(job, "Analyze codebase and identify issues", priority=10)
    while True:
        task = orch.queue.get_task(analysis_task)
        if task["status"] == "completed":
            analysis = json.loads(task["result"])
            break
        if task["status"] in ("failed", "blocked", "cancelled"):
            raise SystemExit(f"analysis {task['status']}: {task['error']}")
        if not orch.store.workers.live():
            orch.wait_and_collect(job)  # nobody else will run it: run it here
        time.sleep(0.5)
    findings = analysis["summary"]
    if "performance issues" in findings:
        orch.add_subtask(job, "Optimize database queries", priority=8)
    if "security vulnerabilities" in findings:
        orch.add_subtask(job, "Fix security issues", priority=10)
    return orch.wait_and_collect(job)


def pattern_4(project: Path) -> dict[int, dict[str, Any]]:
    return quick_delegate([
        "Create Python factorial function",
        "Create Python fibonacci function",
        "Create Python prime checker",
    ], project_dir=project)


PATTERNS = {1: pattern_1, 2: pattern_2, 3: pattern_3, 4: pattern_4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", type=int, choices=sorted(PATTERNS))
    parser.add_argument("--project-dir", type=Path, default=None,
                        help="demo repository (default: a new temporary directory)")
    args = parser.parse_args(argv)
    project = (args.project_dir or Path(tempfile.mkdtemp(prefix="delegation-demo-"))).resolve()
    prepare_project(project, args.pattern)
    results = PATTERNS[args.pattern](project)
    for task_id, result in sorted(results.items()):
        files = ", ".join(result.get("files_changed") or []) or "no files"
        print(f"Task {task_id} [{result['status']}] {result['prompt']}: "
              f"{result.get('summary') or result.get('error')} ({files})")
    print(json.dumps({"pattern": args.pattern, "project": str(project),
                      "completed": sum(r["status"] == "completed" for r in results.values()),
                      "failed": sum(r["status"] != "completed" for r in results.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
