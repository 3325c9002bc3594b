"""The delegation API without workers, the MCP server through the SDK's client, the dashboard
and the guide's example workflows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.jobs_helpers import PACKAGE_ROOT, finish_turn, make_setup, write_turn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_quick_delegate_with_no_worker_runs_in_process(tmp_path: Path) -> None:
    from orchestrator import quick_delegate

    agents = {f"worker:{n}": [write_turn(f"f{n}.py", f"def f{n}(): ...\n"),
                              finish_turn(f"function {n}")] for n in (1, 2, 3)}
    setup = make_setup(tmp_path, "sqlite", agents)
    results = quick_delegate(["Create factorial", "Create fibonacci", "Create prime checker"],
                             project_dir=setup.project)
    assert sorted(results) == [1, 2, 3]
    assert [results[n]["files_changed"] for n in (1, 2, 3)] == [["f1.py"], ["f2.py"], ["f3.py"]]
    assert all(r["status"] == "completed" for r in results.values())


def test_api_refuses_bad_input_clearly(tmp_path: Path) -> None:
    from agent_team.errors import UserError
    from orchestrator import ClaudeOrchestrator

    setup = make_setup(tmp_path, "sqlite", {})
    orch = ClaudeOrchestrator("t", project_dir=setup.project)
    job = orch.create_job("goal")
    with pytest.raises(UserError, match="priority 'soon' is not valid"):
        orch.add_subtask(job, "x", priority="soon")
    with pytest.raises(UserError, match="list of prompts"):
        from orchestrator import quick_delegate
        quick_delegate("just one string", project_dir=setup.project)
    not_repo = tmp_path / "plain"
    not_repo.mkdir()
    with pytest.raises(UserError, match="not a git repository"):
        ClaudeOrchestrator("t", project_dir=not_repo, db=setup.db).create_job("goal")


def test_coordinator_rejects_a_bad_worker_count() -> None:
    done = subprocess.run([sys.executable, str(PACKAGE_ROOT / "claude_coordinator.py"), "zero"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "positive integer" in done.stderr


def test_mcp_server_through_the_sdk_client(tmp_path: Path) -> None:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    agents = {"worker:1": [write_turn("hello.py", "print('hi')\n"), finish_turn("hello")]}
    setup = make_setup(tmp_path, "sqlite", agents)
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(PACKAGE_ROOT / "claude_mcp_server.py"), "--project-dir", str(setup.project)],
        env=setup.env)

    async def session() -> tuple[list[str], dict, dict, dict]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            created = await client.call_tool("create_job", {
                "goal": "hello", "subtasks": [{"prompt": "Write hello.py", "priority": "high",
                                               "expected_outputs": ["hello.py"]}]})
            job_id = created.structured_content["job_id"]
            collected = await client.call_tool("wait_and_collect",
                                               {"job_id": job_id, "timeout_s": 120})
            status = await client.call_tool("job_status", {"job_id": job_id})
            return (tools, created.structured_content, collected.structured_content,
                    status.structured_content)

    tools, created, collected, status = anyio.run(session)
    assert tools == ["add_subtask", "cancel_job", "create_job", "job_status", "retry_failed",
                     "wait_and_collect"]
    assert created["task_ids"] == [1]
    assert collected["results"]["1"]["files_changed"] == ["hello.py"]
    assert status["status"] == "completed" and status["progress_pct"] == 100.0


def test_dashboard_once_prints_jobs_workers_and_events(tmp_path: Path) -> None:
    from orchestrator import ClaudeOrchestrator

    setup = make_setup(tmp_path, "sqlite", {})
    orch = ClaudeOrchestrator("t", project_dir=setup.project)
    job = orch.create_job("Dashboard goal")
    orch.add_subtask(job, "Visible task", priority=9)
    orch.store.workers.register("machine-1")
    done = subprocess.run([sys.executable, str(PACKAGE_ROOT / "claude_dashboard.py"), "--once",
                           "--db", setup.db], capture_output=True, text=True, timeout=60,
                          env={**setup.env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for text in (job, "Dashboard goal", "Visible task", "machine-1", "idle", "task_added",
                 "1 worker(s) alive"):
        assert text in done.stdout


@pytest.mark.parametrize("pattern", ["1", "2", "3", "4"])
def test_example_workflows_run_offline(tmp_path: Path, pattern: str) -> None:
    done = subprocess.run([sys.executable,
                           str(PACKAGE_ROOT / "example_orchestrator_workflow.py"), pattern,
                           "--project-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=150,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("AGENT_TEAM_DB", "ORCHESTRATOR_WORKING_DIR")})
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["pattern"] == int(pattern) and report["failed"] == 0
    assert report["completed"] >= 3
