"""Git faults: the base branch moving during a run, a dirty checkout, a binary merge conflict, a
repository without commits, a detached HEAD and a pre-commit hook that refuses agents' work.

Decisions these tests pin down:

- The feature branch starts at the base commit recorded when the run began, whatever happens to
  the base branch later; auto_merge moves the base branch only when it still points at that
  commit (compare-and-swap), so a commit or reset made meanwhile is never overridden.
- A binary conflict is settled by the manager's keep_side tool (one side whole) or recorded as
  unresolved with the file named, the task branch kept and exit 1.
- Hooks are honoured for agent commits. When one refuses, the work is saved without hooks on
  `<task branch>-hook-refused` (never merged), the worktree is cleaned, and the task fails with
  the hook's output: nothing is lost and nothing the hook refused reaches the feature branch.
"""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator
from file_based_orchestrator import main as file_based_main
from simple_orchestrator import SimpleOrchestrator
from simple_orchestrator import main as simple_main

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    assert_nothing_lost,
    assert_state_valid,
    branches,
    dirty_the_checkout,
    file_at,
    finish_call,
    git,
    integration_turn,
    is_ancestor,
    plan_turn,
    preserve,
    run_orchestrator,
    task,
    tasks_by_id,
    tool_messages,
    tool_turn,
    worktree_paths,
    write_and_finish,
    write_call,
    write_session,
)

BASE_FILES = {"README.md": "# project\n", "app.txt": "greeting = hello\n"}
ORCHESTRATORS = pytest.mark.parametrize("cls", [FileBasedOrchestrator, SimpleOrchestrator],
                                        ids=["file-based", "simple"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", BASE_FILES)
    return (tmp_path / "project").resolve()


def auto_merge_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"coordination": {"auto_merge": True}}), encoding="utf-8")
    return path


def one_task(path: str = "a.txt") -> dict[str, list[dict[str, Any]]]:
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish(path, "A\n"),
        "manager:integration": [integration_turn()],
    }


# -- the base branch moves ---------------------------------------------------------------------


def move_main(project: Path, how: str) -> str:
    """What the user does to main while the team works; returns where main now points."""
    if how == "commit-in-checkout":
        (project / "user.txt").write_text("the user's own work\n", encoding="utf-8")
        git(project, "add", "user.txt")
        git(project, "commit", "-q", "-m", "user commit during the run")
        return git(project, "rev-parse", "main").strip()
    git(project, "checkout", "-q", "-b", "elsewhere")
    if how == "forward":
        tree = git(project, "rev-parse", "main^{tree}").strip()
        new = git(project, "commit-tree", tree, "-p", "main", "-m", "pushed by a colleague")
        git(project, "update-ref", "refs/heads/main", new.strip())
    else:
        git(project, "branch", "-f", "main", "main~1")
    return git(project, "rev-parse", "main").strip()


@pytest.mark.parametrize("how", ["commit-in-checkout", "forward", "back"])
def test_the_base_branch_moving_during_the_run_changes_nothing_the_run_built_on(
    project: Path, tmp_path: Path, how: str
) -> None:
    (project / "second.txt").write_text("second\n", encoding="utf-8")
    git(project, "add", "second.txt")
    git(project, "commit", "-q", "-m", "second commit")
    base = git(project, "rev-parse", "main").strip()
    before = preserve(project)
    moved: list[str] = []

    class UserMovesMain(FileBasedOrchestrator):
        def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
            moved.append(move_main(self.project_dir, how))
            return super().agent_execute_task(task)

    run = run_orchestrator(UserMovesMain, project, one_task(), "Moving feature",
                           config_path=auto_merge_config(tmp_path))

    assert run.summary["exit_code"] == 0, run.output
    feature = "feature/moving-feature"
    state = assert_state_valid(project)
    assert state["current_feature"]["base_commit"] == base
    assert git(project, "rev-parse", f"{feature}~1").strip() == base
    assert git(project, "rev-parse", "main").strip() == moved[0]  # the user's move stands
    assert state["integration"]["merged_into_base"] is False
    if how != "commit-in-checkout":
        assert any("auto_merge: main moved since the run started" in line for line in run.lines)
    assert file_at(project, feature, "a.txt") == "A\n"
    if how == "back":  # the user moved main back on purpose; its old tip is in the feature
        before = replace(before, refs={k: v for k, v in before.refs.items()
                                       if k != "refs/heads/main"})
    assert_nothing_lost(project, before, checkout=False)


def test_auto_merge_still_fast_forwards_when_the_base_did_not_move(
    project: Path, tmp_path: Path
) -> None:
    class UserSwitchesBranch(FileBasedOrchestrator):
        def manager_integrate(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
            git(self.project_dir, "checkout", "-q", "-b", "elsewhere")
            return super().manager_integrate(tasks)

    run = run_orchestrator(UserSwitchesBranch, project, one_task(), "Merged feature",
                           config_path=auto_merge_config(tmp_path))

    assert run.summary["exit_code"] == 0, run.output
    assert git(project, "rev-parse", "main") == git(project, "rev-parse", "feature/merged-feature")
    assert assert_state_valid(project)["integration"]["merged_into_base"] is True


# -- the user's checkout -----------------------------------------------------------------------


@ORCHESTRATORS
def test_uncommitted_staged_deleted_and_untracked_files_are_left_byte_for_byte(
    project: Path, cls: type[FileBasedOrchestrator]
) -> None:
    dirty_the_checkout(project)
    before = preserve(project)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": [tool_turn(write_call("app.txt", "greeting = agent\n"),
                                    write_call("staged.txt", "agent's own staged.txt\n"),
                                    write_call("scratch/idea.txt", "agent idea\n")),
                          tool_turn(finish_call())],
        "qa-tester:B": write_and_finish("README.md", "# rewritten by the agent\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(cls, project, agents, "Dirty feature")

    assert run.summary["exit_code"] == 0, run.output
    assert file_at(project, "feature/dirty-feature", "app.txt") == "greeting = agent\n"
    assert file_at(project, "feature/dirty-feature", "notes.bin") is None
    assert_nothing_lost(project, before)


# -- a binary conflict -------------------------------------------------------------------------


def write_bytes(path: str, seed: int) -> tuple[str, dict[str, Any]]:
    code = f"open({path!r}, 'wb').write(bytes((i * {seed}) % 256 for i in range(2048)))"
    return ("run_command", {"argv": ["python", "-c", code]})


def payload(seed: int) -> bytes:
    return bytes((i * seed) % 256 for i in range(2048))


class BothBranchFirst(FileBasedOrchestrator):
    """Both tasks have their worktree before either merges, so the conflict is certain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.both_branched = threading.Barrier(2, timeout=20)

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        self.both_branched.wait()
        return super().execute_task_in_worktree(task, worktree)


MANAGER_MOVES = {
    "keep-theirs": [tool_turn(("keep_side", {"path": "README.md", "side": "ours"}),
                              ("keep_side", {"path": "logo.bin", "side": "theirs"})),
                    tool_turn(finish_call(summary="Kept the task's logo."))],
    "blocked": [tool_turn(finish_call("blocked", "Two different logos.",
                                      ["a designer must choose"]))],
    "claims-done": [tool_turn(finish_call(summary="Resolved."))],
}


@pytest.mark.parametrize("move", sorted(MANAGER_MOVES))
def test_a_binary_merge_conflict_is_settled_by_a_side_or_recorded_unresolved(
    project: Path, move: str
) -> None:
    before = preserve(project)
    agents = {
        "manager:plan": [plan_turn([task("X", "backend-dev"), task("Y", "frontend-dev")])],
        "backend-dev:X": [tool_turn(write_bytes("logo.bin", 3), delay=0.1),
                          tool_turn(finish_call())],
        "frontend-dev:Y": [tool_turn(write_bytes("logo.bin", 7), delay=0.3),
                           tool_turn(finish_call())],
        "manager:merge": MANAGER_MOVES[move],
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(BothBranchFirst, project, agents, "Logo feature")

    state = assert_state_valid(project)
    merges = state["integration"]["merges"]
    (conflict,) = [m for m in merges if m["status"] != "merged"]
    (clean,) = [m for m in merges if m["status"] == "merged"]
    assert conflict["conflicts"] == ["logo.bin"]
    prompt = run.calls("manager:merge")[0].messages[0].content
    assert "binary file: settle it with keep_side" in prompt
    loser = tasks_by_id(state)[conflict["task_id"]]
    seeds = {"X": 3, "Y": 7}
    feature = "feature/logo-feature"
    logo = git_bytes(project, f"{feature}:logo.bin")
    if move == "keep-theirs":
        assert run.summary["exit_code"] == 0, run.output
        assert conflict["status"] == "conflict_resolved"
        refused, kept = tool_messages(run.calls("manager:merge")[-1])
        assert refused[2] and "not a conflicted file" in refused[1]
        assert not kept[2]
        assert logo == payload(seeds[conflict["task_id"]])
        assert len(git(project, "log", "-1", "--format=%P", feature).split()) == 2
    else:
        assert run.summary["exit_code"] == 1
        assert conflict["status"] == "conflict_unresolved" and conflict["commit"] is None
        assert loser["status"] == "failed" and "logo.bin" in loser["error"]
        assert logo == payload(seeds[clean["task_id"]])
        assert git_bytes(project, f"{conflict['branch']}:logo.bin") == payload(
            seeds[conflict["task_id"]])
        assert not is_ancestor(project, conflict["branch"], feature)
    if move == "claims-done":
        assert "unmerged binary" in conflict["message"]
    assert worktree_paths(project) == [project]
    assert_nothing_lost(project, before)


def git_bytes(project: Path, spec: str) -> bytes:
    return subprocess.run(["git", "-C", str(project), "show", spec], capture_output=True,
                          check=True).stdout


# -- repositories the run cannot or must carefully use -----------------------------------------


@pytest.mark.parametrize("cli", [file_based_main, simple_main], ids=["file-based", "simple"])
def test_a_repository_without_commits_is_refused_with_exit_2_and_nothing_written(
    tmp_path: Path, cli: Any
) -> None:
    project = tmp_path / "empty"
    project.mkdir()
    git(project, "init", "-q")
    exclude = (project / ".git" / "info" / "exclude").read_bytes()
    session = write_session(tmp_path / "session.json", one_task(), "Anything")

    result = CliRunner().invoke(cli, [
        "--feature", "Anything", "--project-dir", str(project), "--api-provider", "scripted",
        "--session", str(session), "--no-progress"], catch_exceptions=False)

    assert result.exit_code == 2
    assert "has no commits yet; make an initial commit first" in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in project.iterdir()) == [".git"]
    assert git(project, "for-each-ref") == ""
    assert (project / ".git" / "info" / "exclude").read_bytes() == exclude


@ORCHESTRATORS
def test_a_detached_head_is_the_base_commit_and_stays_detached(
    project: Path, tmp_path: Path, cls: type[FileBasedOrchestrator]
) -> None:
    first = git(project, "rev-parse", "HEAD").strip()
    (project / "later.txt").write_text("later\n", encoding="utf-8")
    git(project, "add", "later.txt")
    git(project, "commit", "-q", "-m", "later commit on main")
    git(project, "checkout", "-q", "--detach", first)
    before = preserve(project)

    run = run_orchestrator(cls, project, one_task(), "Detached feature",
                           config_path=auto_merge_config(tmp_path))

    assert run.summary["exit_code"] == 0, run.output
    feature = "feature/detached-feature"
    state = assert_state_valid(project)
    assert state["current_feature"]["base_branch"] == "HEAD"
    assert state["current_feature"]["base_commit"] == first
    assert git(project, "merge-base", feature, "main").strip() == first
    assert file_at(project, feature, "later.txt") is None
    assert git(project, "rev-parse", "HEAD").strip() == first
    assert state["integration"].get("merged_into_base") in (False, None)
    assert_nothing_lost(project, before)


# -- hooks -------------------------------------------------------------------------------------


def install_hook(project: Path, name: str, text: str) -> None:
    hook = project / ".git" / "hooks" / name
    hook.write_text(text, encoding="utf-8")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_a_failing_post_checkout_hook_does_not_stop_the_run(project: Path) -> None:
    install_hook(project, "post-checkout", "#!/bin/sh\necho 'post-checkout says no'\nexit 1\n")
    before = preserve(project)

    run = run_orchestrator(FileBasedOrchestrator, project, one_task(), "Checkout feature")

    assert run.summary["exit_code"] == 0, run.output
    assert file_at(project, "feature/checkout-feature", "a.txt") == "A\n"
    assert worktree_paths(project) == [project]
    assert_nothing_lost(project, before)


HOOK = """#!/bin/sh
if git diff --cached --name-only | grep -q '\\.bad$'; then
  echo "lint failed: .bad files are not allowed"
  exit 1
fi
"""


@ORCHESTRATORS
def test_a_refusing_pre_commit_hook_fails_the_task_and_keeps_its_work_on_a_branch(
    project: Path, tmp_path: Path, cls: type[FileBasedOrchestrator]
) -> None:
    install_hook(project, "pre-commit", HOOK)
    dirty_the_checkout(project)
    before = preserve(project)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                    task("C", "qa-tester", ["B"])])],
        "backend-dev:A": write_and_finish("ok.txt", "fine\n"),
        "frontend-dev:B": [tool_turn(write_call("x.bad", "refused content\n"),
                                     write_call("b.txt", "B\n")),
                           tool_turn(finish_call())],
        "qa-tester:C": write_and_finish("c.txt", "C\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(cls, project, agents, "Hook feature")

    assert run.summary["exit_code"] == 1
    # The hook runs in the sandbox and cannot log outside the worktree; its refusal below is
    # the proof that it ran (tests/test_attacks.py checks where it runs).
    tasks = tasks_by_id(assert_state_valid(project))
    feature = "feature/hook-feature"
    rescue = f"{feature}-agents/frontend-dev/B-hook-refused"
    assert tasks["A"]["status"] == "completed"
    assert tasks["B"]["status"] == "failed" and tasks["C"]["status"] == "blocked"
    assert "lint failed: .bad files are not allowed" in tasks["B"]["error"]
    assert rescue in tasks["B"]["error"]
    assert file_at(project, rescue, "x.bad") == "refused content\n"
    assert file_at(project, rescue, "b.txt") == "B\n"
    message = git(project, "log", "-1", "--format=%an%n%B", rescue)
    assert message.startswith("frontend-dev\n") and "without running hooks" in message
    assert file_at(project, feature, "ok.txt") == "fine\n"
    assert file_at(project, feature, "x.bad") is None
    assert not is_ancestor(project, rescue, feature)
    assert rescue in branches(project)
    assert worktree_paths(project) == [project]
    assert_nothing_lost(project, before)
