"""Step four: the integration pass. The orchestrator runs the tests on the merged branch, the
manager reviews and summarises, and with `auto_merge` the base branch is fast-forwarded when
that is safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .agent_calls import ModelRequest, ask
from .errors import AgentTeamError, GitError, ModelError
from .models import Message
from .plan import extract_json
from .prompts import system_for
from .redaction import redact
from .roles import MANAGER
from .run_context import RunContext
from .run_worktrees import checkout_integration
from .state_schema import utc_now
from .team import Team
from .testrun import TestResults, detect_test_command, run_tests

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


def run_project_tests(team: Team, run: RunContext, directory: Path, *,
                      ref: str | None = None) -> TestResults | None:
    """Run the project's tests in `directory`; None when no test command is known."""
    command = team.settings.test_command or detect_test_command(directory)
    if command is None:
        run.log("No test command found; pass --test-command to run tests.")
        return None
    run.log(f"Running tests: {command}")
    results = run_tests(command, directory,
                        timeout=team.settings.coordination.test_timeout_seconds, ref=ref,
                        checkout=team.project_dir, sandbox=team.sandbox)
    run.events.emit("test_run", command=results.command, exit_code=results.exit_code,
                    passed=results.passed, failed=results.failed, errors=results.errors,
                    skipped=results.skipped, source=results.source, timed_out=results.timed_out)
    run.log(f"Tests: {results.describe()}")
    return results


def review_prompt(team: Team, run: RunContext, results: TestResults | None) -> str:
    state = run.store.read()
    diff = team.git.history.diff_stat(run.base_commit, run.feature_branch) or "(no changes)"
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
    return (
        f"Integration review of {run.feature_branch} for: "
        f"{state['current_feature']['title']}\n\nTasks:\n" + "\n".join(lines)
        + "\n\nMerges:\n" + ("\n".join(merges) or "- none")
        + f"\n\nDiff against {run.base_branch}:\n{diff}"
        + "\n\nTests run by the orchestrator on the merged branch: "
        + (results.describe() if results else "no test command")
        + "\n\nReturn JSON with a short \"summary\" for the reviewer (what was built, what "
        "failed, what to check before merging) and any follow-up \"decisions\"."
    )


def manager_review(team: Team, run: RunContext, prompt: str) -> tuple[str, list[Any]]:
    """The manager's summary and decisions. An API failure is reported, not raised: the
    run's results stand (a budget stop still propagates)."""
    try:
        reply = ask(team, run, ModelRequest(
            role=MANAGER, conversation="integration", system=system_for(team, MANAGER),
            messages=[Message.user(prompt)], output_schema=INTEGRATION_SCHEMA)).text
    except ModelError as exc:
        run.log(f"The manager's integration call failed: {exc}")
        return f"The manager's review failed: {redact(str(exc))}", []
    try:
        review = extract_json(reply)
        return str(review.get("summary", "")), list(review.get("decisions") or [])
    except AgentTeamError:
        return reply, []


def integrate(team: Team, run: RunContext, worktree: Path) -> dict[str, Any]:
    """Run the tests on the merged branch in `worktree`, review, record; returns the verdict."""
    run.store.record({"op": "integration", "fields": {"status": "in_progress"}})
    checkout_integration(team, run, worktree)  # clean merges moved the branch, not its files
    results = run_project_tests(team, run, worktree, ref=run.feature_branch)
    summary, decisions = manager_review(team, run, review_prompt(team, run, results))
    tasks = run.store.read()["tasks"]
    all_done = all(t["status"] == "completed" for t in tasks)
    success = all_done and results is not None and results.success
    merged_into_base = success and maybe_merge_into_base(team, run)

    verdict = {"status": "completed" if success else "failed",
               "test_results": results.to_dict() if results else None,
               "summary": summary.strip(), "merged_into_base": merged_into_base,
               "completed_at": utc_now()}
    follow_ups = [{"decision": str(d["decision"]), "rationale": str(d.get("rationale", "")),
                   "affected_agents": [str(a) for a in d.get("affected_agents", [])],
                   "made_by": MANAGER, "timestamp": utc_now()}
                  for d in decisions if isinstance(d, dict) and d.get("decision")]
    run.store.record({"op": "integration", "fields": verdict},
                     {"op": "decisions", "entries": follow_ups})
    return {"success": success, "summary": summary, "tests": results}


def maybe_merge_into_base(team: Team, run: RunContext) -> bool:
    """With auto_merge, fast-forward the base branch when that is safe; never force it."""
    if not team.settings.coordination.auto_merge or run.base_branch == "HEAD":
        return False
    base, feature, git = run.base_branch, run.feature_branch, team.git
    holder = git.branch_checked_out_in(base)
    if holder is not None:
        run.log(f"auto_merge: {base} is checked out in {holder}; not moving it under your "
                f"working tree. Merge with: git merge {feature}")
        return False
    now = git.resolve(base)
    if now != run.base_commit:
        run.log(f"auto_merge: {base} moved since the run started ({run.base_commit[:10]} "
                f"-> {(now or 'deleted')[:10]}); not moving it. Merge with: git merge {feature}")
        return False
    try:
        git.update_branch_ref(base, git.head_commit(feature), expected_old=run.base_commit)
    except GitError as exc:
        run.log(f"auto_merge: {base} was not fast-forwarded: {exc}")
        return False
    run.log(f"auto_merge: {base} fast-forwarded to {feature}.")
    return True
