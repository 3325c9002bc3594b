"""Bringing finished tasks together on the feature branch: merge as you go, conflicts to the
manager, then the integration pass (tests on the merged branch, the manager's review) and, with
`auto_merge`, a safe fast-forward of the base branch.

`IntegrationMixin` is mixed into the file-based orchestrator, which provides the integration
worktree (the feature branch's checkout) and the lock that keeps merges one at a time; it also
relies on `BaseOrchestrator`'s git, state, models and prompts. Custom orchestrators override
`merge_task`, `resolve_conflict` or `manager_integrate` like any other step.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agent_loop import run_agent
from .errors import AgentTeamError, GitError, ToolError
from .git_merge import MergeResult
from .lifecycle import fail_message
from .plan import extract_json
from .roles import MANAGER
from .state import utc_now
from .tools import Tool, Workspace, build_toolbox, define_tool

if TYPE_CHECKING:
    from .orchestrator import BaseOrchestrator

    _Base = BaseOrchestrator
else:
    _Base = object

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


class IntegrationMixin(_Base):
    """Merging task branches into the feature branch, and the review of the merged result."""

    integration_worktree: Path | None
    _merge_lock: threading.Lock

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
            sandbox=self.sandbox_policy,
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
