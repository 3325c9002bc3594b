#!/usr/bin/env python3
"""The file-based orchestrator: parallel agents in their own worktrees, merged as they finish.

The manager plans tasks with dependencies. A task starts as soon as every task it depends on
is completed and merged, up to --max-workers at once, in a worktree on its own branch cut from
the feature branch at that moment (so it sees its dependencies' work). The orchestrator commits
what the agent changed, merges the branch into the feature branch (a conflict goes to the
manager, who resolves it with tools), and after the last task runs the integration pass: the
manager reviews the merged branch, the orchestrator runs the tests, the manager summarises.

    python scripts/orchestration/file_based_orchestrator.py --feature "..." --project-dir DIR
    python scripts/orchestration/file_based_orchestrator.py --demo

Everything the team does is visible live in .ai-agents/state/team-communication.json.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402
from agent_team.agent_loop import run_agent  # noqa: E402
from agent_team.cli import (  # noqa: E402
    common_options,
    limit_options,
    make_display,
    resolve_run_inputs,
    run_cli,
)
from agent_team.errors import (  # noqa: E402
    EXIT_FAILED,
    EXIT_OK,
    AgentTeamError,
    GitError,
    StateError,
    ToolError,
    UsageLimitExceeded,
)
from agent_team.git_workspace import CommitRefused, MergeResult  # noqa: E402
from agent_team.orchestrator import BaseOrchestrator, fail_message  # noqa: E402
from agent_team.plan import PRIORITY_RANK, extract_json  # noqa: E402
from agent_team.roles import MANAGER  # noqa: E402
from agent_team.scheduler import Job, run_graph  # noqa: E402
from agent_team.state import utc_now  # noqa: E402
from agent_team.tools import Tool, Workspace, build_toolbox, define_tool  # noqa: E402

INTEGRATION_SCHEMA = {
    "type": "object",
    "required": ["summary", "decisions"],
    "additionalProperties": False,
    "properties": {
        "summary": {"type": "string"},
        "decisions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["decision", "rationale", "affected_agents"],
                "additionalProperties": False,
                "properties": {
                    "decision": {"type": "string"},
                    "rationale": {"type": "string"},
                    "affected_agents": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


class FileBasedOrchestrator(BaseOrchestrator):
    """Dependency-ordered parallel execution with per-task worktrees and merge-as-you-go."""

    orchestrator_name = "file-based"

    def __init__(self, project_dir: str | Path, *, max_workers: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(project_dir, **kwargs)
        coordination = self.config.coordination
        if not coordination["parallel_execution"]:
            max_workers = 1
        self.max_workers = int(max_workers or coordination["max_workers"])
        self.integration_worktree: Path | None = None
        self._merge_lock = threading.Lock()
        self._fatal: StateError | None = None

    # -- the run ---------------------------------------------------------------------------

    def run(self, feature: str) -> dict[str, Any]:
        """Plan, execute in parallel, integrate; returns the summary (see report.py)."""
        return self.run_parallel(feature, self.max_workers)

    def run_parallel(self, feature: str, max_workers: int = 3) -> dict[str, Any]:
        with self.running(feature):
            self.report_stale_worktrees()
            try:
                tasks = self.manager_create_tasks(feature)
            except UsageLimitExceeded as exc:
                return self.stop_for_budget(exc)
            self.create_feature_branch()
            return self._execute_and_integrate(tasks, max_workers)

    def resume(self, max_workers: int | None = None) -> dict[str, Any]:
        """Continue the feature recorded in the state file after a crash or a stop.

        Completed and merged tasks are skipped; a task whose agent finished but whose merge
        did not happen is merged; every other task restarts from its branch's last commit.
        """
        with self.resuming() as state:
            self.git.prune_worktrees()
            self.clear_stale_locks()
            if not self.git.branch_exists(self.feature_branch):  # stopped while planning
                feature = state["current_feature"]
                try:
                    tasks = state["tasks"] or self.manager_create_tasks(
                        feature.get("description") or feature["title"])
                except UsageLimitExceeded as exc:
                    return self.stop_for_budget(exc)
                self.create_feature_branch()
                return self._execute_and_integrate(tasks, max_workers or self.max_workers)
            done = []
            for task in state["tasks"]:
                branch = self.task_branch(task)
                if task["status"] == "completed" and task.get("merged", False):
                    done.append(task["task_id"])
                elif (task["status"] == "in_progress" and task.get("result")
                      and task.get("commit") and self.git.branch_exists(branch)
                      and self.git.is_merged(branch, self.feature_branch)):
                    done.append(task["task_id"])  # merged just before the crash
                    self.set_task(task["task_id"], status="completed", merged=True,
                                  progress=100)
                elif not self._agent_already_finished(task):
                    self.set_task(task["task_id"], status="pending", error=None)
            self.log(f"{len(done)} of {len(state['tasks'])} tasks already done.")
            return self._execute_and_integrate(
                state["tasks"], max_workers or self.max_workers, completed=done
            )

    def clear_stale_locks(self) -> None:
        """Remove index locks a killed run's git left in this feature's worktrees."""
        root = self.feature_dir.resolve()
        for info in self.git.list_worktrees()[1:]:
            if root in info.path.parents:
                for lock in self.git.clear_stale_locks(info.path):
                    self.log(f"Removed {lock}, left by a git command of the interrupted run.")

    def _execute_and_integrate(
        self, tasks: list[dict[str, Any]], max_workers: int, completed: list[str] | None = None
    ) -> dict[str, Any]:
        self.integration_worktree = self._open_integration_worktree()
        self._fatal = None
        finished = False
        try:
            self.set_feature_status("in_progress")
            self.log(f"Running {len(tasks) - len(completed or [])} tasks with up to "
                     f"{max_workers} agents at once.")
            schedule = run_graph(
                [Job(t["task_id"], tuple(t["dependencies"]),
                     PRIORITY_RANK[t.get("priority", "medium")]) for t in tasks],
                self._run_job,
                max_workers=max_workers,
                on_event=self._on_schedule_event,
                should_stop=self.should_stop,
                completed=completed or (),
            )
            if self._fatal is not None:
                raise self._fatal
            self._record_schedule(schedule)
            if self.budget.tripped is not None:
                finished = True
                return self.stop_for_budget(self.budget.tripped)
            self.set_feature_status("integrating")
            integration = self.manager_integrate(tasks)
            ok = integration["success"]
            self.set_feature_status("completed" if ok else "failed", completed_at=utc_now())
            finished = True
        except UsageLimitExceeded as exc:  # during the integration pass
            finished = True
            return self.stop_for_budget(exc)
        finally:
            self.remove_own_worktree(self.integration_worktree, force=finished)
            self.integration_worktree = None
            self.remove_empty_dirs(self.feature_dir)
        return self.finish_run("completed" if ok else "failed", EXIT_OK if ok else EXIT_FAILED)

    def _open_integration_worktree(self) -> Path:
        """The feature branch's checkout for merges; an interrupted run's one is reused."""
        path = self.feature_dir / "integration"
        for info in self.git.list_worktrees():
            if info.path == path.resolve() and info.branch == self.feature_branch:
                if self.git.merge_in_progress(path):
                    self.git.abort_merge(path)
                self.git.reset_worktree(path, "HEAD")
                return path
        return self.git.add_worktree(path, self.feature_branch)

    def _run_job(self, job: Job) -> bool:
        """One task of the schedule; a state file that cannot be used stops the whole run."""
        if self._fatal is not None:
            return False
        try:
            return self.agent_execute_task(self._task(job.id))["status"] == "completed"
        except StateError as exc:
            self._fatal = self._fatal or exc
            raise

    def should_stop(self) -> bool:
        """Checked before each task starts; a reached budget or a state error ends the run."""
        return self.budget.tripped is not None or self._fatal is not None

    @property
    def feature_dir(self) -> Path:
        return self.worktree_root / self.feature_branch.split("/", 1)[1]

    def task_branch(self, task: dict[str, Any]) -> str:
        """`feature/<slug>-agents/<role>/<task>`: git cannot nest refs under `feature/<slug>`."""
        return f"{self.feature_branch}-agents/{task['assigned_to']}/{task['task_id']}"

    def _task(self, task_id: str) -> dict[str, Any]:
        return next(t for t in self.state.read()["tasks"] if t["task_id"] == task_id)

    def _on_schedule_event(self, event: str, task_id: str, detail: str) -> None:
        if event not in ("blocked", "skipped") or self._fatal is not None:
            return
        if self.budget.tripped is not None:  # not started because the run stopped
            self.set_task(task_id, status="pending", error="not started: the run stopped")
            return
        self.set_task(task_id, status=event, error=detail)
        self.log(f"{task_id} {event}: {detail}")

    def _record_schedule(self, schedule: Any) -> None:
        """Record errors that escaped a task (e.g. a worktree that could not be created)."""
        for task_id, error in schedule.errors.items():
            if self._task(task_id)["status"] == "in_progress":
                self.set_task(task_id, status="failed", error=error, completed_at=utc_now())

    # -- worktrees -------------------------------------------------------------------------

    def setup_worktrees(self, tasks: list[dict[str, Any]]) -> dict[str, Path]:
        """Create a worktree per task, branched from the feature branch as it is now."""
        worktrees = {}
        registered = {info.path: info for info in self.git.list_worktrees()}
        for task in tasks:
            path = self.feature_dir / "tasks" / task["task_id"]
            branch = self.task_branch(task)
            info = registered.get(path.resolve())
            if info is not None and info.branch == branch:  # left by an interrupted run
                try:
                    self.commit_task(task, path, "Work recovered from an interrupted run.")
                except CommitRefused as exc:
                    self.log(f"{task['task_id']}: {exc}")
                worktrees[task["task_id"]] = path
                continue
            if info is None and path.exists():  # no longer a worktree: keep its files
                aside = path.with_name(f"{path.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
                path.rename(aside)
                self.log(f"{path} is not a git worktree any more (deleted during an earlier "
                         f"run?); its files were moved to {aside}.")
            worktrees[task["task_id"]] = self.git.add_worktree(
                path, branch, start_point=self.feature_branch
            )
        return worktrees

    def report_stale_worktrees(self) -> None:
        """Tell the user about worktrees an earlier, crashed run left behind; delete nothing."""
        for line in self.git.prune_worktrees():
            self.log(f"Pruned worktree record: {line}")
        if not self.worktree_root.exists():
            return
        for info in self.git.stale_worktrees(self.worktree_root):
            state = []
            if info.dirty:
                state.append("uncommitted changes")
            if info.unmerged:
                state.append(f"{info.unmerged} unmerged commit(s)")
            message = (
                f"Stale worktree from an earlier run: {info.path} on {info.branch or info.head}"
                f" ({', '.join(state) or 'clean'}). Kept; remove it with "
                f"`git worktree remove {info.path}` once you no longer need it."
            )
            self.log(message)
            self._note("orchestrator", None, "stale_worktree", message)

    def _remove_worktree(self, path: Path) -> None:
        try:
            self.git.remove_worktree(path)
        except GitError as exc:  # dirty or locked: keep it, say so
            self.log(f"Kept worktree {path}: {exc}")

    # -- one task --------------------------------------------------------------------------

    def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """The whole life of one task: worktree, agent, commit, merge, cleanup."""
        if self._agent_already_finished(task):
            self.log(f"{task['task_id']}: agent work already committed; merging it.")
            branch = self.task_branch(task)
            return self._merge_and_record(task, branch, task["result"]["files_modified"])
        worktree = self.setup_worktrees([task])[task["task_id"]]
        return self.execute_task_in_worktree(task, worktree)

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        task_id, role = task["task_id"], task["assigned_to"]
        branch = self.task_branch(task)
        agent = self.agent_id(role, task_id)
        start = self.git.merge_base(branch, self.feature_branch)
        self.log(f"Executing {task_id} as {role} on {branch}")
        self.set_task(task_id, status="in_progress", started_at=utc_now(), branch=branch,
                      worktree=str(worktree), error=None)
        self.set_agent(agent, status="working", current_task=task_id, branch=branch,
                       worktree=str(worktree), turn=0)
        try:
            report, error = self._run_attempts(task, worktree)
        except UsageLimitExceeded as exc:
            commit, problem = self._save_work(task, worktree,
                                              f"Partial work; the run stopped: {exc}")
            self._remove_worktree(worktree)
            self.set_task(task_id, status="pending", commit=commit,
                          error=problem or f"stopped before finishing ({exc.limit}); work so "
                                           f"far is on {branch}")
            self.set_agent(agent, status="stopped")
            return {"task_id": task_id, "status": "stopped", "error": str(exc)}
        except StateError:  # the run stops; git keeps the work, the state cannot
            commit, problem = self._save_work(
                task, worktree, "Partial work; the run stopped: the team state file could not "
                                "be used.")
            self._remove_worktree(worktree)
            self.log(f"{task_id}: {problem or f'work so far is on {branch}'}")
            raise

        summary = report["summary"] if report else f"Partial work; the task failed: {error}"
        commit, problem = self._save_work(task, worktree, summary)
        if problem is not None:
            error = f"{error}; {problem}" if error else problem
        files = self.git.changed_files(start, branch)
        result = {
            "summary": summary,
            "completed_items": (report or {}).get("completed_items", []),
            "files_modified": files,
            "test_results": None,
            "blockers": (report or {}).get("blockers", []),
            "notes": (report or {}).get("notes", ""),
        }
        self._remove_worktree(worktree)
        if error is not None:
            self.set_task(task_id, status="failed", error=error, commit=commit, result=result,
                          completed_at=utc_now())
            self.set_agent(agent, status="failed")
            self.log(f"{task_id} failed: {error}" + (f" (work kept on {branch})" if commit else ""))
            return {"task_id": task_id, "status": "failed", "error": error}
        self.set_task(task_id, progress=90, commit=self.git.head_commit(branch), result=result)
        return self._merge_and_record(task, branch, files)

    def _run_attempts(
        self, task: dict[str, Any], worktree: Path
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Run the agent up to max_task_attempts times; each retry sees the last error."""
        attempts = int(self.config.coordination["max_task_attempts"])
        current = dict(task)
        used = int(self._task(task["task_id"]).get("attempts", 0))
        report: dict[str, Any] | None = None
        error: str | None = None
        for attempt in range(1, attempts + 1):
            used += 1
            self.set_task(task["task_id"], attempts=used)
            try:
                report = self.run_task_agent(current, worktree).report
                error = None if report["status"] == "completed" else (
                    "; ".join(report.get("blockers") or []) or report["summary"])
            except (UsageLimitExceeded, StateError):
                raise
            except Exception as exc:  # this task fails; independent tasks go on
                report, error = None, fail_message(exc)
            if error is None or attempt == attempts:
                break
            self.log(f"{task['task_id']} attempt {attempt} failed ({error}); retrying.")
            current["last_error"] = error
        return report, error

    def _save_work(
        self, task: dict[str, Any], worktree: Path, summary: str
    ) -> tuple[str | None, str | None]:
        """Commit what the agent left: (new commit or None, why the work is not on its branch)."""
        if not self.git.is_worktree(worktree):
            return None, (
                f"the task's worktree {worktree} was deleted while the agent worked (by a "
                f"command it ran?); what it committed before is kept on {self.task_branch(task)}"
            )
        try:
            return self.commit_task(task, worktree, summary), None
        except CommitRefused as exc:
            return None, str(exc)

    def _agent_already_finished(self, task: dict[str, Any]) -> bool:
        """On resume: the agent finished and its commit is on the branch, only the merge is due."""
        branch = self.task_branch(task)
        return bool(
            task.get("status") == "in_progress" and task.get("result") and task.get("commit")
            and self.git.branch_exists(branch)
            and self.git.head_commit(branch) == task["commit"]
        )

    def _merge_and_record(
        self, task: dict[str, Any], branch: str, files: list[str]
    ) -> dict[str, Any]:
        task_id = task["task_id"]
        agent = self.agent_id(task["assigned_to"], task_id)
        merge = self.merge_task(task, branch)
        if merge["status"] in ("merged", "conflict_resolved"):
            self.set_task(task_id, status="completed", progress=100, merged=True,
                          merge_commit=merge["commit"], completed_at=utc_now())
            self.set_agent(agent, status="done")
            self.log(f"{task_id} complete and merged ({merge['status']}): {len(files)} file(s)")
            return {"task_id": task_id, "status": "completed", "commit": task.get("commit")}
        conflicts = f" (conflicts in {', '.join(merge['conflicts'])})" if merge["conflicts"] else ""
        error = f"merge into {self.feature_branch} failed{conflicts}: {merge['message']}"
        self.set_task(task_id, status="failed", merged=False, error=error,
                      completed_at=utc_now())
        self.set_agent(agent, status="failed")
        self.log(f"{task_id} failed: {error} (branch {branch} kept)")
        return {"task_id": task_id, "status": "failed", "error": error}

    # -- merging ---------------------------------------------------------------------------

    def merge_task(self, task: dict[str, Any], branch: str) -> dict[str, Any]:
        """Merge a finished task branch into the feature branch, one merge at a time."""
        assert self.integration_worktree is not None
        worktree = self.integration_worktree
        title = f"Merge {task['task_id']} ({task['assigned_to']}): {task['description']}"
        message = (title if len(title) <= 72 else title[:69] + "...") + f"\n\nBranch: {branch}\n"
        with self._merge_lock:
            try:
                result = self.git.merge(worktree, branch, message, author_name=MANAGER,
                                        author_email=self.agent_email(MANAGER))
            except GitError as exc:
                return self._record_merge(task, branch, "failed", None, [], str(exc))
            if result.status in ("merged", "up_to_date"):
                return self._record_merge(task, branch, "merged", result.commit, [], "")
            self.log(f"Merge conflict for {task['task_id']} in {', '.join(result.conflicts)}; "
                     "asking the manager to resolve it.")
            return self.resolve_conflict(task, branch, result)

    def resolve_conflict(
        self, task: dict[str, Any], branch: str, merge: MergeResult
    ) -> dict[str, Any]:
        """Let the manager resolve a conflict with the file tools, or abort and keep the branch."""
        assert self.integration_worktree is not None
        worktree = self.integration_worktree
        sides = []
        for path in merge.conflicts:
            side = self.git.conflict_sides(worktree, path)
            if side.get("binary"):
                sides.append(f"### {path}\n(binary file: settle it with keep_side, choosing "
                             "'ours' or 'theirs', or report the conflict as blocked)")
                continue
            sides.append(
                f"### {path}\n--- feature branch (ours) ---\n{side.get('ours') or '(absent)'}\n"
                f"--- {branch} (theirs) ---\n{side.get('theirs') or '(absent)'}\n"
                f"--- common base ---\n{side.get('base') or '(absent)'}"
            )
        prompt = (
            f"Merging {branch} (task {task['task_id']} by {task['assigned_to']}: "
            f"{task['description']}) into {self.feature_branch} conflicted.\n\n"
            "Your workspace is the feature branch with the merge in progress; the conflicted "
            "files contain conflict markers. Write each file so that it keeps the intent of "
            "both sides, with no conflict markers left, then call finish_task with status "
            "completed. To take one side of a file whole, call keep_side. If the two sides "
            "cannot be reconciled, call finish_task with status blocked and explain why.\n\n"
            + "\n\n".join(sides)
        )
        model = self.model_for(MANAGER).for_agent(MANAGER, "merge")
        toolbox = build_toolbox(
            Workspace(worktree),
            command_timeout=float(self.config.coordination["command_timeout_seconds"]),
            extra_tools=[self._keep_side_tool(worktree, merge.conflicts)],
        )
        message = (f"Merge {task['task_id']} ({task['assigned_to']}), conflicts resolved by "
                   f"manager\n\nBranch: {branch}\nConflicts: {', '.join(merge.conflicts)}\n")
        try:
            report = run_agent(
                model, self._get_system_prompt(MANAGER), prompt, toolbox,
                max_turns=int(self.config.coordination["max_iterations"]),
                hooks=self.make_hooks(MANAGER, task["task_id"], model),
            ).report
            if report["status"] != "completed":
                raise AgentTeamError(f"the manager could not resolve it: {report['summary']}")
            commit = self.git.conclude_merge(worktree, message, author_name=MANAGER,
                                             author_email=self.agent_email(MANAGER))
        except Exception as exc:  # resolution failed: undo the merge, keep the branch
            self.git.abort_merge(worktree)
            return self._record_merge(task, branch, "conflict_unresolved", None,
                                      merge.conflicts, fail_message(exc))
        return self._record_merge(task, branch, "conflict_resolved", commit, merge.conflicts,
                                  report["summary"])

    def _keep_side_tool(self, worktree: Path, conflicts: list[str]) -> Tool:
        """The manager's way to settle a conflicted file, binary ones included: one side whole."""

        def keep_side(path: str, side: str) -> str:
            if path not in conflicts:
                raise ToolError(f"{path} is not a conflicted file; those are: "
                                f"{', '.join(conflicts)}.")
            try:
                self.git.resolve_conflict(worktree, path, "ours" if side == "ours" else "theirs")
            except GitError as exc:
                raise ToolError(f"Could not keep the {side} side of {path}: {exc}") from None
            where = "the feature branch" if side == "ours" else "the task branch"
            return f"{path}: kept the {side} version ({where}) whole."

        return define_tool(
            "keep_side",
            "Settle one conflicted file by keeping one side whole: 'ours' is the feature "
            "branch, 'theirs' the task branch being merged. The way to settle a binary file.",
            {"path": {"type": "string", "minLength": 1},
             "side": {"type": "string", "enum": ["ours", "theirs"]}},
            keep_side,
            required=["path", "side"],
        )

    def _record_merge(self, task: dict[str, Any], branch: str, status: str,
                      commit: str | None, conflicts: list[str], message: str) -> dict[str, Any]:
        entry = {
            "task_id": task["task_id"], "branch": branch, "into": self.feature_branch,
            "status": status, "commit": commit, "conflicts": list(conflicts),
            "message": message, "timestamp": utc_now(),
        }
        self.state.update(lambda state: state["integration"].setdefault("merges", []).append(
            entry))
        self.events.emit("merge", task_id=task["task_id"], status=status,
                         conflicts=list(conflicts), commit=commit)
        return entry

    # -- integration pass ------------------------------------------------------------------

    def manager_integrate(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Review the merged branch, run the tests there, record the manager's summary."""
        assert self.integration_worktree is not None
        self.state.update(lambda s: s["integration"].update(status="in_progress"))
        state = self.state.read()
        diff = self.git.diff_stat(self.base_commit, self.feature_branch) or "(no changes)"
        results = self.run_project_tests(self.integration_worktree, ref=self.feature_branch)
        lines = [
            f"- {t['task_id']} ({t['assigned_to']}): {t['status']}"
            + (f" - {t['error']}" if t.get("error") else "")
            for t in state["tasks"]
        ]
        merges = [
            f"- {m['task_id']}: {m['status']}"
            + (f" (conflicts: {', '.join(m['conflicts'])})" if m["conflicts"] else "")
            for m in state["integration"].get("merges", [])
        ]
        prompt = (
            f"Integration review of {self.feature_branch} for: "
            f"{state['current_feature']['title']}\n\nTasks:\n" + "\n".join(lines)
            + "\n\nMerges:\n" + ("\n".join(merges) or "- none")
            + f"\n\nDiff against {self.base_branch}:\n{diff}"
            + "\n\nTests run by the orchestrator on the merged branch: "
            + (results.describe() if results else "no test command")
            + "\n\nReturn JSON with a short \"summary\" for the reviewer (what was built, what "
            "failed, what to check before merging) and any follow-up \"decisions\"."
        )
        with self._structured_output(INTEGRATION_SCHEMA):
            reply = self.ask_manager("integration", prompt)
        try:
            review = extract_json(reply)
            summary, decisions = str(review.get("summary", "")), review.get("decisions") or []
        except AgentTeamError:
            summary, decisions = reply, []
        all_done = all(t["status"] == "completed" for t in state["tasks"])
        success = all_done and results is not None and results.success
        merged_into_base = success and self.maybe_merge_into_base()

        def apply(s: dict[str, Any]) -> None:
            s["integration"].update(
                status="completed" if success else "failed",
                test_results=results.to_dict() if results else None,
                summary=summary.strip(), merged_into_base=merged_into_base,
                completed_at=utc_now(),
            )
            for d in decisions:
                if isinstance(d, dict) and d.get("decision"):
                    s["decisions"].append({
                        "decision": str(d["decision"]), "rationale": str(d.get("rationale", "")),
                        "affected_agents": [str(a) for a in d.get("affected_agents", [])],
                        "made_by": MANAGER, "timestamp": utc_now(),
                    })

        self.state.update(apply)
        return {"success": success, "summary": summary, "tests": results}

    def maybe_merge_into_base(self) -> bool:
        """With auto_merge, fast-forward the base branch when that is safe; never force it."""
        if not self.config.coordination["auto_merge"] or self.base_branch == "HEAD":
            return False
        base, feature = self.base_branch, self.feature_branch
        holder = self.git.branch_checked_out_in(base)
        if holder is not None:
            self.log(f"auto_merge: {base} is checked out in {holder}; not moving it under your "
                     f"working tree. Merge with: git merge {feature}")
            return False
        now = self.git.resolve(base)
        if now != self.base_commit:
            self.log(f"auto_merge: {base} moved since the run started ({self.base_commit[:10]} "
                     f"-> {(now or 'deleted')[:10]}); not moving it. Merge with: "
                     f"git merge {feature}")
            return False
        try:
            self.git.update_branch_ref(base, self.git.head_commit(feature),
                                       expected_old=self.base_commit)
        except GitError as exc:
            self.log(f"auto_merge: {base} was not fast-forwarded: {exc}")
            return False
        self.log(f"auto_merge: {base} fast-forwarded to {feature}.")
        return True


@click.command()
@common_options
@click.option("--max-workers", type=click.IntRange(1, 64),
              help="Most agents working at once (default: coordination.max_workers, 3).")
@click.option("--resume", is_flag=True,
              help="Continue the feature recorded in the state file after a crash or a stop.")
def main(max_workers: int | None, resume: bool, **options: Any) -> None:
    """Plan a feature with a manager agent and build it with parallel agents."""

    display = make_display(options)

    def run() -> int:
        if resume:
            if options["feature"] or options["demo"]:
                raise click.UsageError("--resume continues the recorded feature; drop "
                                       "--feature and --demo.")
            project_dir, provider, session = (options["project_dir"] or Path.cwd(),
                                              options["api_provider"], options["session"])
        else:
            feature, project_dir, provider, session = resolve_run_inputs(
                options["feature"], options["project_dir"], options["demo"],
                "file-based-demo.json", options["api_provider"], options["session"],
            )
        orchestrator = FileBasedOrchestrator(
            project_dir, max_workers=max_workers, api_provider=provider,
            model_name=options["model_name"], base_url=options["base_url"], session=session,
            config_path=options["config_path"], test_command=options["test_command"],
            max_iterations=options["max_iterations"], limits=limit_options(options),
            output=display.write_line, progress=display, record=options["record"],
        )
        display.refresh_seconds = float(
            orchestrator.config.coordination["check_interval_seconds"])
        summary = orchestrator.resume(max_workers) if resume else orchestrator.run(feature)
        display.write_line(
            f"[Orchestrator] Result: branch {summary['feature_branch']} in {project_dir}")
        display.write_line(
            f"[Orchestrator] See it with: git -C {project_dir} log --graph --oneline "
            f"{summary['feature_branch']}")
        return int(summary["exit_code"])

    try:
        run_cli(run)
    finally:
        display.close()


if __name__ == "__main__":
    main()
