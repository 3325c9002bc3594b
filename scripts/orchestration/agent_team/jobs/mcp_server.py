"""An MCP server (official SDK, stdio) exposing the delegation API as six tools.

An assistant that speaks MCP delegates natively: it creates a job with its subtasks, adds
more while it runs, reads the status, waits for the results, retries failures or cancels.
Blocking calls run in a thread so the server keeps answering.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

from .delegation import ClaudeOrchestrator
from .errors import WaitTimeout

SERVER_NAME = "agent-team-jobs"


def build_server(orch: ClaudeOrchestrator) -> MCPServer:
    """The server with its six tools bound to one orchestrator (one project, one store)."""
    server: MCPServer = MCPServer(
        SERVER_NAME,
        instructions="Delegate coding work to a pool of agent workers: create a job with "
                     "subtasks, then wait for and read the results.")

    @server.tool(description="Create a job for a goal with its subtasks. Each subtask: "
                             "{prompt, priority (1-10 or high/medium/low), expected_outputs, "
                             "context_files, role, parent (index of an earlier subtask)}. "
                             "Returns the job id and the task ids.")
    def create_job(goal: str, subtasks: list[dict[str, Any]]) -> dict[str, Any]:
        job_id = orch.create_job(goal)
        ids: list[int] = []
        for spec in subtasks:
            parent = spec.get("parent")
            ids.append(orch.add_subtask(
                job_id, str(spec.get("prompt", "")), priority=spec.get("priority", 5),
                context_files=spec.get("context_files"),
                expected_outputs=spec.get("expected_outputs"),
                parent_task_id=ids[int(parent)] if parent is not None else None,
                role=spec.get("role"), metadata=spec.get("metadata")))
        return {"job_id": job_id, "task_ids": ids}

    @server.tool(description="Add a subtask to an existing (even running) job.")
    def add_subtask(job_id: str, prompt: str, priority: int | str = 5,
                    expected_outputs: list[str] | None = None,
                    context_files: list[str] | None = None,
                    parent_task_id: int | None = None, role: str | None = None) -> dict[str, Any]:
        task_id = orch.add_subtask(job_id, prompt, priority=priority,
                                   expected_outputs=expected_outputs,
                                   context_files=context_files, parent_task_id=parent_task_id,
                                   role=role)
        return {"task_id": task_id}

    @server.tool(description="Status of a job: counts of tasks by status and progress_pct.")
    def job_status(job_id: str) -> dict[str, Any]:
        return orch.get_job_status(job_id)

    @server.tool(description="Wait until the job's tasks are finished (runs them here when no "
                             "worker is alive) and return each task's result; after timeout_s, "
                             "the results so far with timed_out true.")
    async def wait_and_collect(job_id: str, timeout_s: float = 600) -> dict[str, Any]:
        timed_out = False
        try:
            results = await anyio.to_thread.run_sync(
                lambda: orch.wait_and_collect(job_id, timeout=timeout_s))
        except WaitTimeout as exc:
            results, timed_out = exc.results, True
        return {"job_id": job_id, "status": orch.get_job_status(job_id)["status"],
                "timed_out": timed_out, "results": {str(k): v for k, v in results.items()}}

    @server.tool(description="Put failed tasks (and the tasks they blocked) back in the queue.")
    def retry_failed(job_id: str) -> dict[str, Any]:
        return {"requeued": orch.retry_failed_tasks(job_id)}

    @server.tool(description="Cancel every unfinished task of a job.")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return {"cancelled": orch.cancel_job(job_id)}

    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claude_mcp_server.py",
                                     description="MCP server (stdio) for delegating jobs.")
    parser.add_argument("--project-dir", type=Path, default=None)
    parser.add_argument("--db", default=None)
    args = parser.parse_args(argv)
    orch = ClaudeOrchestrator("mcp", project_dir=args.project_dir, db=args.db)
    build_server(orch).run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
