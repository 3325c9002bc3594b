"""Runs the service's jobs: settings, workspaces, the tree of a job, child jobs, cancellation,
reports.

Root jobs run on a small thread pool (`orchestrator.max_concurrent_jobs`); each job's tasks are
claimed from the job store by in-server lanes (`lanes.py`). A child job runs in the thread of
the task that delegated it; while it runs, that task lends its worker slot to the tree, so a
parent waiting for its child never starves it (one worker is enough).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import git
from agent_team.errors import AgentTeamError, RunInterrupted, ToolError
from agent_team.models import ChatModel
from agent_team.scripted import ScriptedModel
from agent_team.steps_task import commit_task, fail_message
from agent_team.task_record import TaskRecord

from .config import ServiceConfig
from .engine import JobRun, TreeContext, open_job, run_job
from .layout import JobLayout, LiveLogs
from .records import JobSettings, ServiceJob, ServiceJobs, utc_now
from .reports import final_result, job_report, level_reports, write_worker_dirs
from .results import public_task, task_entries

log = logging.getLogger("orchestrator.api")
OK_TASK = ("success", "recursive_success")
CANCELLED = "Cancelled through the API."


class JobRejected(Exception):
    """A request the server will not run; `field` names the request field concerned."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.field = field


class JobRunner:
    """Submits, runs, delegates and cancels the service's jobs over one job store."""

    def __init__(self, config: ServiceConfig, registry: ServiceJobs | None = None, *,
                 model_factory: Callable[[], ChatModel | None] | None = None) -> None:
        self.config = config
        self.registry = registry or ServiceJobs.open(config.workspace_root, config.job_store)
        self.model_factory = model_factory or self._default_model
        self.pool = ThreadPoolExecutor(config.max_concurrent_jobs, thread_name_prefix="job")
        self.trees: dict[str, TreeContext] = {}
        self._lock = threading.Lock()

    def _default_model(self) -> ChatModel | None:
        """A scripted session replays from its start for every job tree; real providers are
        built by the team from the configured provider and model."""
        if self.config.api_provider == "scripted":
            if self.config.session is None:
                raise AgentTeamError("orchestrator.session is required with api_provider "
                                     "scripted.")
            return ScriptedModel.from_file(self.config.session)
        return None

    # -- submission ------------------------------------------------------------------------

    def settings_for(self, options: Mapping[str, Any]) -> tuple[JobSettings, int]:
        server = self.config

        def pick(name: str, default: Any) -> Any:
            value = options.get(name)
            return default if value is None else value

        max_depth = min(int(pick("max_recursion_depth", server.max_depth)), server.max_depth)
        depth = int(options.get("current_depth") or 0)
        if depth > max_depth:
            raise JobRejected(403, f"Max recursion depth reached: current_depth {depth} is "
                                   f"above max_recursion_depth {max_depth}.",
                              "config.current_depth")
        limits = {k: options[k] for k in ("max_api_calls", "token_budget", "cost_limit_usd")
                  if options.get(k) is not None}
        project = options.get("project_dir")
        settings = JobSettings(
            max_workers=min(int(pick("max_workers", server.max_workers)), server.max_workers),
            default_timeout=float(pick("default_timeout", server.default_timeout)),
            max_retries=int(pick("max_retries", server.max_retries)),
            enable_recursion=server.recursion_enabled and bool(pick("enable_recursion", True)),
            max_depth=max_depth,
            limits=limits,
            project_dir=str(self.allowed_project(project)) if project else None,
        )
        return settings, depth

    def allowed_project(self, value: str) -> Path:
        """A project directory the server may work in: an existing git checkout that lies,
        after resolving links, under one of orchestrator.project_roots."""
        if not self.config.project_roots:
            raise JobRejected(403, "This server accepts no project_dir (orchestrator."
                                   "project_roots is empty); jobs get a fresh workspace.",
                              "config.project_dir")
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise JobRejected(422, "project_dir must be an absolute path.", "config.project_dir")
        resolved = path.resolve()
        if not any(resolved == root or root in resolved.parents
                   for root in self.config.project_roots):
            raise JobRejected(403, "project_dir is not under an allowed project root.",
                              "config.project_dir")
        if not (resolved / ".git").exists():
            raise JobRejected(403, "project_dir is not a git repository with a .git entry.",
                              "config.project_dir")
        return resolved

    def submit(self, request: str, options: Mapping[str, Any]) -> ServiceJob:
        settings, depth = self.settings_for(options)
        notes = []
        if options.get("execution_mode") in ("wsl", "windows"):
            notes.append(f"execution_mode {options['execution_mode']!r} is not applicable "
                         "here: agents run on this machine's OS.")
        from agent_team.jobs.store import new_job_id

        job_id = new_job_id()
        job = self.registry.create(request, settings, depth=depth, notes=notes, job_id=job_id,
                                   workspace=str(self.config.workspace_root / f"job_{job_id}"))
        self.registry.emit(job, "job_submitted", request=request[:500])
        log.info("job %s submitted (depth %d, max_workers %d)", job_id, depth,
                 settings.max_workers)
        self.pool.submit(self._run_root, job)
        return job

    # -- running ---------------------------------------------------------------------------

    def _run_root(self, job: ServiceJob) -> None:
        layout = JobLayout(Path(job.workspace))
        try:
            tree = TreeContext(layout=layout,
                               logs=LiveLogs(layout, structured=self.config.structured_logs),
                               slots=threading.BoundedSemaphore(job.settings.max_workers),
                               model=self.model_factory())
        except Exception as exc:  # noqa: BLE001 - reported on the job
            self._finish_early(job, "failed", fail_message(exc))
            return
        with self._lock:
            self.trees[job.job_id] = tree
        current = self.registry.get(job.job_id, with_tasks=False)
        if current is None or current.finished:  # cancelled while it waited for a thread
            tree.logs.close()
            return
        try:
            project = (Path(job.settings.project_dir) if job.settings.project_dir
                       else self._fresh_repository(layout.repo, job))
            self.run_tree_job(job, tree, project)
        except Exception as exc:  # noqa: BLE001 - a crash is the job's failure, not the server's
            log.exception("job %s crashed", job.job_id)
            self._finish_early(job, "failed", fail_message(exc))
        finally:
            tree.logs.close()

    def _finish_early(self, job: ServiceJob, status: str, error: str) -> None:
        self.registry.set_outcome(job.job_id, status=status, error=error)
        self.registry.emit(job, "job_finished", status=status, error=error)

    @staticmethod
    def _fresh_repository(path: Path, job: ServiceJob) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="main")
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "agent-team service")
            cw.set_value("user", "email", "service@agent-team.invalid")
            cw.set_value("commit", "gpgsign", "false")
        (path / "README.md").write_text(f"# Job {job.job_id}\n\nWorkspace of a job of the "
                                        "agent-team service.\n", encoding="utf-8")
        repo.index.add(["README.md"])
        repo.index.commit("Workspace of the job")
        return path

    def run_tree_job(self, job: ServiceJob, tree: TreeContext, project: Path) -> ServiceJob:
        """Run one job of a tree to its end and write its results and reports."""
        jobs = self.registry
        jobs.set_outcome(job.job_id, status="running", repository=str(project))
        jobs.emit(job, "job_started")
        error: str | None = None
        summary: Mapping[str, Any] = {}
        running: JobRun | None = None
        try:
            server = self.config
            running = open_job(
                job, jobs, tree, project, self.delegate,
                provider=None if server.api_provider == "scripted" else server.api_provider,
                model=server.model, base_url=server.base_url)
            summary = run_job(running) or {}
        except Exception as exc:  # noqa: BLE001 - reported on the job
            error = fail_message(exc)
            log.info("job %s ended with an error: %s", job.job_id, error)
        if running is not None:
            jobs.set_usage(job.job_id, running.usage)
        state: Mapping[str, Any] = {"tasks": []}
        if running is not None:
            try:
                state = running.run.store.read()
            except AgentTeamError as exc:
                error = error or fail_message(exc)
        tasks = task_entries(jobs, job, public=False)
        status, problem = self._decide(tree, tasks, state, summary, error)
        branch = f"feature/job-{job.job_id}"
        if running is None or not running.team.git.branch_exists(branch):
            branch = ""
        jobs.set_outcome(job.job_id, error=problem, branch=branch or None)
        public = [public_task(t) for t in tasks]
        if running is not None:
            write_worker_dirs(tree.layout, job, public, running.transcripts, running.diffs)
        # Reports first, the final status last: a finished job always has its reports.
        view = jobs.get_required(job.job_id)
        ended = replace(view, status=status, finished_at=utc_now())
        review = str((state.get("integration") or {}).get("summary") or "")
        job_report(tree.layout, ended, tasks, review)
        fields: dict[str, Any] = {"report": str(tree.layout.reports / f"job_{job.job_id}.md")}
        others = [j for j in jobs.tree(job.root_job_id, with_tasks=True)
                  if j.job_id != job.job_id]
        level_reports(tree.layout, [ended, *others])
        if job.parent_job_id is None:
            final_result(tree.layout, ended, [ended, *others])
            fields["final_report"] = str(tree.layout.final_result)
        jobs.set_outcome(job.job_id, status=status, **fields)
        jobs.emit(job, "job_finished", status=status, error=problem)
        log.info("job %s finished: %s", job.job_id, status)
        return jobs.get_required(job.job_id)

    @staticmethod
    def _decide(tree: TreeContext, tasks: list[dict[str, Any]], state: Mapping[str, Any],
                summary: Mapping[str, Any], error: str | None) -> tuple[str, str | None]:
        ok = sum(1 for t in tasks if t["status"] in OK_TASK)
        if tree.cancelled.is_set():
            return "cancelled", CANCELLED
        if error is not None:
            return ("partial" if ok else "failed"), error
        feature = state.get("current_feature") or {}
        if summary.get("status") == "stopped" or feature.get("status") == "stopped":
            reason = str(feature.get("stop_reason") or "stopped")
            return ("partial" if ok else "failed"), reason
        if not tasks:
            return "failed", "The plan had no tasks."
        failed = [t["task_id"] for t in tasks if t["status"] not in OK_TASK]
        if failed:
            return ("partial" if ok else "failed"), f"Tasks not done: {', '.join(failed)}."
        tests = (state.get("integration") or {}).get("test_results")
        if tests and not tests.get("success", tests.get("exit_code") == 0):
            return "partial", "Every task is done but the project's tests failed."
        return "completed", None

    # -- recursion -------------------------------------------------------------------------

    def delegate(self, parent: JobRun, task: TaskRecord, worktree: Path,
                 store_task: int, sub_request: str) -> str:
        """The `delegate` tool: run a child job on the task's branch, merge its result in."""
        tree, task_id = parent.tree, str(task["task_id"])
        if tree.stop.stopped:
            raise ToolError("The job is stopping; finish your task now.")
        if task_id in parent.delegations:
            raise ToolError(f"This task already delegated to job {parent.delegations[task_id]}; "
                            "finish the rest yourself.")
        commit_task(parent.team, parent.run, task, worktree,
                    "Work before delegating to a child job.", str(task["branch"]))
        label = parent.labels.get(task_id, "x")
        child = self.registry.create(
            sub_request, replace(parent.job.settings, project_dir=None),
            depth=parent.job.depth + 1, workspace=parent.job.workspace,
            root_job_id=parent.job.root_job_id, parent=parent.job, parent_task_id=task_id,
            parent_store_task=store_task, worker_prefix=f"{label}_")
        parent.delegations[task_id] = child.job_id
        self.registry.emit(parent.job, "delegated", task_id=task_id, child_job_id=child.job_id,
                           worker_id=f"worker_{label}")
        tree.slots.release()  # lend this worker's slot to the child while we wait
        try:
            done = self.run_tree_job(child, tree, worktree)
        finally:
            tree.slots.acquire()
        merged = ""
        if done.branch and done.status in ("completed", "partial"):
            try:
                result = parent.team.git.merges.merge(
                    worktree, done.branch, f"Merge child job {done.job_id} into {task_id}",
                    author_name="manager", author_email="manager@agent-team.invalid")
                merged = (f"Its work ({done.branch}) is merged into your workspace."
                          if result.status in ("merged", "up_to_date") else
                          f"Its branch {done.branch} conflicts with your workspace in "
                          f"{', '.join(result.conflicts)}; it was not merged.")
                if result.status == "conflict":
                    parent.team.git.merges.abort(worktree)
            except AgentTeamError as exc:
                merged = f"Its branch {done.branch} could not be merged here: {exc}"
        lines = [f"Child job {done.job_id} finished: {done.status}. {merged}".strip()]
        if done.error:
            lines.append(f"Problem: {done.error}")
        for t in done.tasks:
            files = ", ".join(t.get("files_modified") or []) or "no files"
            lines.append(f"- {t['worker_id']} {t['task_id']}: {t['status']} [{files}] "
                         f"{str(t.get('output', ''))[:300]}")
        return "\n".join(lines)

    # -- control ---------------------------------------------------------------------------

    def cancel(self, job_id: str) -> list[str]:
        """Cancel the job's whole tree (a parent cannot finish without its child)."""
        job = self.registry.get(job_id, with_tasks=False)
        if job is None:
            raise KeyError(job_id)
        root = self.registry.get(job.root_job_id, with_tasks=False) or job
        affected = [j for j in self.registry.tree(root.job_id) if not j.finished]
        with self._lock:
            tree = self.trees.get(root.job_id)
        if tree is not None and affected:
            tree.cancelled.set()
            tree.stop.stop(RunInterrupted(CANCELLED))
        for current in affected:
            self.registry.store.cancel_job(current.job_id, CANCELLED)
            if current.status == "pending":
                self._finish_early(current, "cancelled", "Cancelled before it started.")
        self.registry.emit(root, "cancel_requested", jobs=[j.job_id for j in affected])
        log.info("cancel requested for job tree %s (%d job(s))", root.job_id, len(affected))
        return [j.job_id for j in affected]

    def shutdown(self, wait: bool = False) -> None:
        for tree in list(self.trees.values()):
            tree.stop.stop(RunInterrupted("The server is shutting down."))
        self.pool.shutdown(wait=wait, cancel_futures=True)
