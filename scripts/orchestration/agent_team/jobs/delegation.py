"""The delegation API of the guide: `ClaudeOrchestrator` and `quick_delegate`.

A caller (a person, a script, an assistant) writes the subtasks itself; workers started with
`claude_coordinator.py N` run them. When no worker is alive, `wait_and_collect` runs the job's
tasks in this process with a pool of its own, so nothing hangs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import build_config
from ..errors import ConfigError, UserError
from ..git_workspace import GitWorkspace, is_inside_work_tree
from ..models import Message, agent_key
from ..prompts import system_prompt
from ..roles import MANAGER
from ..settings import Settings
from ..team import build_team
from .attempt import stored_settings
from .cli import LEASE_ENV, default_project_dir
from .db import resolve_max_attempts
from .errors import WaitTimeout
from .pool import run_pool
from .queue import DEFAULT_LEASE_S, TaskQueue
from .repo import ensure_job_branch
from .schema import COMPLETED, FAILED
from .store import JobStore

POLL_S = 0.5
SYNTHESIS_KEY = "synthesis"
DEFAULT_SYNTHESIS = ("Summarise what was built, list any failures or gaps, and give the next "
                     "steps for the user.")


class ClaudeOrchestrator:
    """Create jobs, add subtasks, wait for them and synthesise their results."""

    def __init__(self, orchestrator_id: str, *, project_dir: str | os.PathLike[str] | None = None,
                 db: str | os.PathLike[str] | None = None, pool_size: int = 2,
                 lease_s: float | None = None) -> None:
        if not isinstance(orchestrator_id, str) or not orchestrator_id.strip():
            raise UserError("ClaudeOrchestrator needs an id, e.g. ClaudeOrchestrator('main')")
        self.orchestrator_id = orchestrator_id
        self.project_dir = (Path(project_dir).expanduser().resolve() if project_dir
                            else default_project_dir())
        self.config = build_config(project_dir=self.project_dir)
        self.store = JobStore.open(db, self.project_dir)
        lease = lease_s or float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE_S)
        self.queue = TaskQueue(self.store, lease_s=lease)
        self.pool_size = pool_size
        self.max_attempts = resolve_max_attempts(None, self.project_dir)

    # -- settings --------------------------------------------------------------------------

    def job_settings(self) -> dict[str, Any]:
        """The project's effective settings as a job stores them (no keys, no store URL):
        the workers rebuild the team from them."""
        return stored_settings(Settings.from_config(self.config), self.project_dir)

    # -- the guide's calls -------------------------------------------------------------------

    def create_job(self, goal: str, *, remote_url: str | None = None,
                   base_branch: str | None = None) -> str:
        """Record a job and create its branch `jobs/<id>` from the current branch.

        On PostgreSQL the job records the repository's `origin` URL (or `remote_url`), so
        workers on other machines clone it and push their branches there.
        """
        if not is_inside_work_tree(self.project_dir):
            raise UserError(f"{self.project_dir} is not a git repository; pass project_dir= "
                            "or set ORCHESTRATOR_WORKING_DIR to your repository")
        workspace = GitWorkspace(self.project_dir)
        base = base_branch or workspace.current_branch() or "HEAD"
        if remote_url is None and self.store.is_postgresql and "origin" in [
                r.name for r in workspace.repo.remotes]:
            remote_url = workspace.repo.remotes.origin.url
        job = self.store.create_job(goal, orchestrator_id=self.orchestrator_id,
                                    project_dir=self.project_dir, remote_url=remote_url,
                                    base_branch=base, settings=self.job_settings())
        sha = ensure_job_branch(workspace, job.job_branch, base, remote_url)
        self.store.update_job(job.id, base_commit=sha)
        return job.id

    def add_subtask(self, job_id: str, prompt: str, priority: int | str = 5,
                    context_files: Sequence[str] | None = None,
                    expected_outputs: Sequence[str] | None = None,
                    parent_task_id: int | None = None, role: str | None = None,
                    metadata: Mapping[str, Any] | None = None) -> int:
        """Queue a subtask (also on a running job); returns its task id."""
        return self.store.add_task(job_id, prompt, priority=priority, role=role,
                                   parent_task_id=parent_task_id, context_files=context_files,
                                   expected_outputs=expected_outputs, metadata=metadata).id

    def get_job_status(self, job_id: str) -> dict[str, Any]:
        """status, total_tasks, completed, failed, running, pending, progress_pct, ..."""
        return self.store.job_status(job_id).to_dict()

    def get_completed_tasks(self, job_id: str) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.store.list_tasks(job_id, status=COMPLETED)]

    def get_failed_tasks(self, job_id: str) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.store.list_tasks(job_id, status=FAILED)]

    def retry_failed_tasks(self, job_id: str) -> list[int]:
        """Failed tasks and the dependents they blocked go back to the queue, the error in
        their prompt; returns their ids."""
        return self.store.retry_failed(job_id)

    def cancel_job(self, job_id: str) -> int:
        return self.store.cancel_job(job_id)

    def wait_and_collect(self, job_id: str, show_progress: bool = False,
                         timeout: float | None = None) -> dict[int, dict[str, Any]]:
        """Wait until every task is finished; {task_id: result} (failed ones carry `error`).

        With no live worker the tasks run here, in a pool of this process. When `timeout`
        seconds pass first, WaitTimeout is raised with the results so far on it; tasks this
        process was running go back to the queue, never lost.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = None
        while True:
            status = self.store.job_status(job_id)
            if show_progress:
                line = (f"Progress: {status.progress_pct:.0f}% - completed {status.completed}/"
                        f"{status.total_tasks}, running {status.running}, failed "
                        f"{status.failed + status.blocked}")
                if line != shown:
                    print(line, flush=True)
                    shown = line
            if status.finished or status.status == "cancelled" or status.total_tasks == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job_id, float(timeout or 0), self.collect(job_id),
                                  pending=status.pending, running=status.running)
            if not self.store.workers.live(stale_after=max(10.0, self.queue.lease_s)):
                run_pool(self.store, job_id, work_dir=self.project_dir,
                         workers=min(self.pool_size, max(1, status.pending)),
                         lease_s=self.queue.lease_s, until=deadline,
                         max_attempts=self.max_attempts)
                continue
            time.sleep(POLL_S)
        return self.collect(job_id)

    def collect(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Results of every finished task so far, without waiting."""
        results: dict[int, dict[str, Any]] = {}
        for task in self.store.list_tasks(job_id):
            if task.status == COMPLETED:
                results[task.id] = {"status": task.status, "prompt": task.prompt,
                                    **(task.result_data() or {})}
            elif task.status in ("failed", "blocked", "cancelled"):
                results[task.id] = {"status": task.status, "prompt": task.prompt,
                                    "error": task.error, **(task.result_data() or {})}
        return results

    def synthesize_results(self, results: Mapping[int, Mapping[str, Any]],
                           synthesis_prompt: str | None = None) -> str:
        """The manager's synthesis of the results (one model call, no tools)."""
        lines = [synthesis_prompt.strip() if synthesis_prompt else DEFAULT_SYNTHESIS, "",
                 "Results of the subtasks:"]
        for task_id, result in sorted(results.items()):
            files = ", ".join(result.get("files_changed") or []) or "no files"
            outcome = result.get("summary") or result.get("error") or "no summary"
            lines.append(f"- Task {task_id} [{result.get('status', '?')}] "
                         f"{result.get('prompt', '')}: {outcome} ({files})")
        prompt = "\n".join(lines)
        try:
            team = build_team(self.project_dir, Settings.from_config(self.config),
                              name=self.orchestrator_id, output=lambda line: None)
        except ConfigError as exc:
            raise ConfigError(f"synthesize_results needs a model: {exc}") from None
        reply = team.models.for_role(MANAGER).complete(
            system_prompt(team, MANAGER), [Message.user(prompt)],
            key=agent_key(MANAGER, SYNTHESIS_KEY))
        return reply.text.strip()


def quick_delegate(prompts: Sequence[str], *, project_dir: str | os.PathLike[str] | None = None,
                   db: str | os.PathLike[str] | None = None, priority: int | str = 5,
                   timeout: float | None = None) -> dict[int, dict[str, Any]]:
    """Run independent prompts as one job and return {task_id: result}.

    With `timeout`, WaitTimeout (a TimeoutError) carries the results so far."""
    if isinstance(prompts, str) or not prompts:
        raise UserError("quick_delegate takes a list of prompts, e.g. ['Create a factorial']")
    orch = ClaudeOrchestrator("quick_delegate", project_dir=project_dir, db=db)
    job_id = orch.create_job("Quick delegation: " + "; ".join(p[:40] for p in prompts[:3]))
    for prompt in prompts:
        orch.add_subtask(job_id, prompt, priority=priority)
    return orch.wait_and_collect(job_id, timeout=timeout)


__all__ = ["ClaudeOrchestrator", "quick_delegate"]
