"""Runs the service's jobs: settings, workspaces, threads, child jobs, cancellation, reports.

Root jobs run on a small thread pool (`orchestrator.max_concurrent_jobs`). A child job runs
in the thread of the task that delegated it; while it runs, that task gives its worker slot
back to the tree, so a parent waiting for its child never starves it (one worker is enough).
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
from agent_team.config import Config, build_config
from agent_team.errors import AgentTeamError, ToolError
from agent_team.git_workspace import GitWorkspace
from agent_team.lifecycle import fail_message
from agent_team.models import ChatModel
from agent_team.scripted import ScriptedModel

from .config import ServiceConfig
from .engine import JobContext, JobOrchestrator, TreeContext, depth_refusal
from .layout import JobLayout, LiveLogs
from .records import JobRecord, JobRegistry, JobSettings, new_job_id, utc_now
from .reports import final_result, job_report, level_reports, write_worker_dirs
from .results import public_task, task_diff, task_results

log = logging.getLogger("orchestrator.api")
OK_TASK = ("success", "recursive_success")


class JobRejected(Exception):
    """A request the server will not run; `field` names the request field concerned."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.field = field


class JobRunner:
    def __init__(self, config: ServiceConfig, registry: JobRegistry, *,
                 model_factory: Callable[[], ChatModel | None] | None = None) -> None:
        self.config = config
        self.registry = registry
        self.model_factory = model_factory or self._default_model
        self.pool = ThreadPoolExecutor(config.max_concurrent_jobs, thread_name_prefix="job")
        self.trees: dict[str, TreeContext] = {}
        self._lock = threading.Lock()

    def _default_model(self) -> ChatModel | None:
        """A scripted session replays from its start for every job tree; real providers are
        built by the engine from the configured provider and model."""
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

    def submit(self, request: str, options: Mapping[str, Any]) -> JobRecord:
        settings, depth = self.settings_for(options)
        job_id = new_job_id()
        record = JobRecord(
            job_id=job_id, request=request, settings=settings, depth=depth, root_job_id=job_id,
            workspace=str(self.config.workspace_root / f"job_{job_id}"),
        )
        if options.get("execution_mode") in ("wsl", "windows"):
            record.notes.append(f"execution_mode {options['execution_mode']!r} is not "
                                "applicable here: agents run on this machine's OS.")
        self.registry.add(record)
        self.registry.emit(record, "job_submitted", request=request[:500])
        log.info("job %s submitted (depth %d, max_workers %d)", job_id, depth,
                 settings.max_workers)
        self.pool.submit(self._run_root, record)
        return record

    # -- running ---------------------------------------------------------------------------

    def _run_root(self, record: JobRecord) -> None:
        layout = JobLayout(Path(record.workspace))
        try:
            tree = TreeContext(layout=layout,
                               logs=LiveLogs(layout, structured=self.config.structured_logs),
                               slots=threading.BoundedSemaphore(record.settings.max_workers),
                               model=self.model_factory())
        except Exception as exc:  # noqa: BLE001 - reported on the job
            self._finish_early(record, "failed", fail_message(exc))
            return
        with self._lock:
            self.trees[record.job_id] = tree
        if record.status == "cancelled":
            return
        try:
            project = (Path(record.settings.project_dir) if record.settings.project_dir
                       else self._fresh_repository(layout.repo, record))
            self.run_job(record, tree, project)
        except Exception as exc:  # noqa: BLE001 - a crash is the job's failure, not the server's
            log.exception("job %s crashed", record.job_id)
            self._finish_early(record, "failed", fail_message(exc))
        finally:
            tree.logs.close()

    def _finish_early(self, record: JobRecord, status: str, error: str) -> None:
        self.registry.update(record.job_id, status=status, error=error, finished_at=utc_now())
        self.registry.emit(record, "job_finished", status=status, error=error)

    @staticmethod
    def _fresh_repository(path: Path, record: JobRecord) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="main")
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "agent-team service")
            cw.set_value("user", "email", "service@agent-team.invalid")
            cw.set_value("commit", "gpgsign", "false")
        (path / "README.md").write_text(f"# Job {record.job_id}\n\nWorkspace of a job of the "
                                        "agent-team service.\n", encoding="utf-8")
        repo.index.add(["README.md"])
        repo.index.commit("Workspace of the job")
        return path

    def engine_config(self, record: JobRecord, project: Path) -> Config:
        server, settings = self.config, record.settings
        return build_config(project_dir=project, overrides={
            "api_provider": None if server.api_provider == "scripted" else server.api_provider,
            "model": server.model,
            "base_url": server.base_url,
            "coordination": {
                "max_workers": settings.max_workers,
                "max_task_attempts": settings.max_retries + 1,
                "command_timeout_seconds": settings.default_timeout,
            },
            "limits": dict(settings.limits),
        })

    def run_job(self, record: JobRecord, tree: TreeContext, project: Path) -> JobRecord:
        """Run one job of a tree to its end and write its results and reports."""
        self.registry.update(record.job_id, status="running", started_at=utc_now())
        self.registry.emit(record, "job_started")
        ctx = JobContext(record=record, registry=self.registry, tree=tree,
                         delegate=self.delegate)
        error: str | None = None
        summary: Mapping[str, Any] = {}
        orchestrator: JobOrchestrator | None = None
        try:
            orchestrator = JobOrchestrator(project, job=ctx,
                                           config=self.engine_config(record, project),
                                           max_workers=record.settings.max_workers)
            tree.orchestrators.append(orchestrator)
            ctx.on_progress = lambda: self._live_tasks(ctx, orchestrator)
            summary = orchestrator.run(record.request) or {}
        except Exception as exc:  # noqa: BLE001 - reported on the job
            error = fail_message(exc)
            log.info("job %s ended with an error: %s", record.job_id, error)
        state: Mapping[str, Any] = {"tasks": []}
        tasks: list[dict[str, Any]] = []
        if orchestrator is not None:
            try:
                state = orchestrator.state.read()
                tasks = task_results(state, ctx, self.registry, orchestrator.git,
                                     orchestrator.feature_branch,
                                     cancelled=tree.cancelled.is_set())
            except AgentTeamError as exc:
                error = error or fail_message(exc)
        status, problem = self._decide(tree, tasks, state, summary, error)
        branch = orchestrator.feature_branch if orchestrator is not None else None
        if orchestrator is not None and branch and not orchestrator.git.branch_exists(branch):
            branch = None
        public = [public_task(t) for t in tasks]
        self.registry.update(record.job_id, error=problem, tasks=public, branch=branch,
                             repository=str(project))
        if orchestrator is not None:
            diffs = {t["task_id"]: task_diff(orchestrator.git, t["start_point"], t["commit"])
                     for t in tasks}
            write_worker_dirs(tree.layout, record, public, ctx.transcripts, diffs)
        # Reports first, the final status last: a finished job always has its reports.
        ended = replace(record, status=status, finished_at=utc_now())
        review = str((state.get("integration") or {}).get("summary") or "")
        job_report(tree.layout, ended, tasks, review)
        fields: dict[str, Any] = {
            "report": str(tree.layout.reports / f"job_{record.job_id}.md")}
        others = [r for r in self.registry.tree(record.root_job_id) if r.job_id != record.job_id]
        level_reports(tree.layout, [ended, *others])
        if record.parent_job_id is None:
            final_result(tree.layout, ended, [ended, *others])
            fields["final_report"] = str(tree.layout.final_result)
        self.registry.update(record.job_id, status=status, finished_at=ended.finished_at,
                             **fields)
        self.registry.emit(record, "job_finished", status=status, error=problem)
        log.info("job %s finished: %s", record.job_id, status)
        return record

    def _live_tasks(self, ctx: JobContext, orchestrator: JobOrchestrator | None) -> None:
        """Refresh the record's task list while the job runs (statuses and timings only)."""
        if orchestrator is None:
            return
        try:
            tasks = task_results(orchestrator.state.read(), ctx, self.registry,
                                 orchestrator.git, orchestrator.feature_branch, live=True)
        except AgentTeamError:
            return
        with self.registry._lock:
            ctx.record.tasks = [public_task(t) for t in tasks]

    @staticmethod
    def _decide(tree: TreeContext, tasks: list[dict[str, Any]], state: Mapping[str, Any],
                summary: Mapping[str, Any], error: str | None) -> tuple[str, str | None]:
        ok = sum(1 for t in tasks if t["status"] in OK_TASK)
        if tree.cancelled.is_set():
            return "cancelled", "Cancelled through the API."
        if error is not None:
            return ("partial" if ok else "failed"), error
        feature = state.get("current_feature") or {}
        if summary.get("status") == "stopped" or feature.get("status") == "stopped":
            return ("partial" if ok else "failed"), str(feature.get("stop_reason") or "stopped")
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

    def delegate(self, parent: JobOrchestrator, task: Mapping[str, Any], worktree: Path,
                 sub_request: str) -> str:
        """The `delegate` tool: run a child job on the task's branch, merge its result in."""
        ctx = parent.job
        record, tree = ctx.record, ctx.tree
        task_id = str(task["task_id"])
        refusal = depth_refusal(record.depth, record.settings.max_depth,
                                record.settings.enable_recursion)
        if refusal:
            raise ToolError(refusal)
        if tree.cancelled.is_set():
            raise ToolError("The job was cancelled; finish your task now.")
        if task_id in ctx.delegations:
            raise ToolError(f"This task already delegated to job {ctx.delegations[task_id]}; "
                            "finish the rest yourself.")
        parent.commit_task(task, worktree, "Work before delegating to a child job.")
        label = ctx.labels.get(task_id, "x")
        child = JobRecord(
            job_id=new_job_id(), request=sub_request,
            settings=replace(record.settings, project_dir=None),
            depth=record.depth + 1, root_job_id=record.root_job_id, workspace=record.workspace,
            parent_job_id=record.job_id, parent_task_id=task_id, worker_prefix=f"{label}_",
        )
        self.registry.add(child)
        ctx.delegations[task_id] = child.job_id
        self.registry.emit(record, "delegated", task_id=task_id, child_job_id=child.job_id,
                           worker_id=f"worker_{label}")
        tree.slots.release()  # lend this worker's slot to the child while we wait
        try:
            self.run_job(child, tree, worktree)
        finally:
            tree.slots.acquire()
        done = self.registry.get(child.job_id) or child
        merged = ""
        if done.branch and done.status in ("completed", "partial"):
            try:
                GitWorkspace(worktree).repo.git.merge("--ff-only", done.branch)
                merged = f"Its work ({done.branch}) is merged into your workspace."
            except Exception as exc:  # noqa: BLE001 - told to the agent
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
        record = self.registry.get(job_id)
        if record is None:
            raise KeyError(job_id)
        root = self.registry.get(record.root_job_id) or record
        affected = [r.job_id for r in self.registry.tree(root.job_id) if not r.finished]
        with self._lock:
            tree = self.trees.get(root.job_id)
        if tree is not None:
            tree.cancelled.set()
            for orchestrator in tree.orchestrators:
                orchestrator.budget.stop("Cancelled through the API.")
        for rid in affected:
            current = self.registry.get(rid)
            if current is not None and current.status == "pending":
                self._finish_early(current, "cancelled", "Cancelled before it started.")
        self.registry.emit(root, "cancel_requested", jobs=affected)
        log.info("cancel requested for job tree %s (%d job(s))", root.job_id, len(affected))
        return affected

    def shutdown(self, wait: bool = False) -> None:
        for tree in list(self.trees.values()):
            tree.cancelled.set()
            for orchestrator in tree.orchestrators:
                orchestrator.budget.stop("The server is shutting down.")
        self.pool.shutdown(wait=wait, cancel_futures=True)
