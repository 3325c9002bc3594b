"""End-to-end runs of the file-based orchestrator on real repositories and a scripted team.

Every claim is checked against what really exists afterwards: branches, merge commits, the
user's working tree, registered worktrees, and the validated state file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import StateLockedError
from agent_team.scripted import ScriptedModel
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    FAILING_TESTS,
    FAILURE_MODES,
    PASSING_TESTS,
    Run,
    branches,
    diamond_session,
    file_at,
    finish_call,
    git,
    integration_turn,
    is_ancestor,
    plan_turn,
    read_call,
    read_state,
    run_orchestrator,
    run_pytest_count,
    snapshot,
    span,
    task,
    tasks_by_id,
    tool_results,
    tool_turn,
    worktree_paths,
    write_and_finish,
    write_call,
    write_session,
)

BASE_FILES = {"README.md": "# project\n", "app.txt": "greeting = hello\n"}


def run_team(project: Path, agents: dict[str, list[dict[str, Any]]], feature: str, *,
             cls: type[FileBasedOrchestrator] = FileBasedOrchestrator, **kwargs: Any) -> Run:
    return run_orchestrator(cls, project, agents, feature, **kwargs)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", BASE_FILES)
    return (tmp_path / "project").resolve()


# -- the demo ----------------------------------------------------------------------------------


def test_demo_merges_every_task_resolves_the_conflict_and_passes_its_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # see test_bytecode_from_agent_commands

    result = CliRunner().invoke(main, ["--demo"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    (repo,) = tmp_path.glob("agent-team-demo-*/todo-app")
    state = read_state(repo)
    feature = state["current_feature"]["branch"]
    tasks = state["tasks"]
    assert [t["status"] for t in tasks] == ["completed"] * 4

    merges = git(repo, "log", "--merges", "--first-parent", "--format=%an%x1f%B%x1e",
                 feature).split("\x1e")
    merges = [m.strip("\n") for m in merges if m.strip()]
    assert len(merges) == len(tasks)
    for t in tasks:
        assert sum(f"Merge {t['task_id']} " in m for m in merges) == 1
    assert all(m.startswith("manager\x1f") for m in merges)
    resolved = [m for m in merges if "conflicts resolved" in m]
    assert len(resolved) == 1

    entries = [m for m in state["integration"]["merges"] if m["status"] == "conflict_resolved"]
    assert len(entries) == 1
    assert entries[0]["conflicts"] == ["todo/cli.py"]
    assert f"Merge {entries[0]['task_id']} " in resolved[0]
    assert "todo/cli.py" in resolved[0]
    cli = file_at(repo, feature, "todo/cli.py")
    assert cli is not None and "<<<<<<<" not in cli and "--due" in cli and "--priority" in cli

    tests = state["integration"]["test_results"]
    checkout = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", "--branch", feature, str(repo), str(checkout)],
                   check=True)
    real_exit, real_passed = run_pytest_count(checkout)
    assert (real_exit, tests["exit_code"]) == (0, 0)
    assert tests["passed"] == real_passed > 0
    assert tests["ref"] == feature
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", f"{feature}~{len(tasks)}")


# -- scheduling --------------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "overlap"), [(3, True), (1, False)])
def test_diamond_runs_in_dependency_order_and_siblings_overlap(
    project: Path, workers: int, overlap: bool
) -> None:
    agents = {
        "manager:plan": [plan_turn([
            task("A", "backend-dev"), task("B", "frontend-dev", ["A"]),
            task("C", "backend-dev", ["A"]), task("D", "qa-tester", ["B", "C"]),
        ])],
        "backend-dev:A": write_and_finish("a.txt", "from A\n"),
        "frontend-dev:B": [tool_turn(read_call("a.txt"), write_call("b.txt", "from B\n"),
                                     delay=0.2), tool_turn(finish_call(), delay=0.2)],
        "backend-dev:C": [tool_turn(read_call("a.txt"), write_call("c.txt", "from C\n"),
                                    delay=0.2), tool_turn(finish_call(), delay=0.2)],
        "qa-tester:D": [tool_turn(read_call("b.txt"), read_call("c.txt")),
                        tool_turn(write_call("d.txt", "from D\n"), finish_call())],
        "manager:integration": [integration_turn()],
    }

    run = run_team(project, agents, "Diamond feature", max_workers=workers)

    assert run.summary["exit_code"] == 0, run.output
    a, b, c, d = (span(run.calls(k)) for k in (
        "backend-dev:A", "frontend-dev:B", "backend-dev:C", "qa-tester:D"))
    assert b[0] >= a[1] and c[0] >= a[1]
    assert d[0] >= max(b[1], c[1])
    assert (max(b[0], c[0]) < min(b[1], c[1])) is overlap

    state = read_state(project)
    by_id = tasks_by_id(state)
    assert by_id["B"]["started_at"] >= by_id["A"]["completed_at"]
    assert by_id["D"]["started_at"] >= max(by_id["B"]["completed_at"], by_id["C"]["completed_at"])
    for key in ("frontend-dev:B", "backend-dev:C"):
        assert "from A" in tool_results(run.calls(key)[1])[0]
    assert [("from B" in r, "from C" in r) for r in tool_results(run.calls("qa-tester:D")[1])] \
        == [(True, False), (False, True)]
    feature = "feature/diamond-feature"
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        assert file_at(project, feature, name) is not None
    merged = [m["task_id"] for m in state["integration"]["merges"]]
    assert (merged[0], sorted(merged[1:3]), merged[3:]) == ("A", ["B", "C"], ["D"])


# -- failures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(FAILURE_MODES))
def test_failed_task_blocks_only_its_transitive_dependents(project: Path, mode: str) -> None:
    turns, reason, options = FAILURE_MODES[mode]
    agents = {
        "manager:plan": [plan_turn([
            task("A", "backend-dev"), task("B", "frontend-dev", ["A"]),
            task("C", "backend-dev"), task("D", "qa-tester", ["B"]),
            task("E", "qa-tester", ["C"]),
        ])],
        "backend-dev:A": turns,
        "frontend-dev:B": write_and_finish("b.txt", "B\n"),
        "backend-dev:C": write_and_finish("c.txt", "C\n"),
        "qa-tester:D": write_and_finish("d.txt", "D\n"),
        "qa-tester:E": write_and_finish("e.txt", "E\n"),
        "manager:integration": [integration_turn("A failed.")],
    }

    run = run_team(project, agents, "Failing feature", **options)

    assert run.summary["exit_code"] == 1
    state = read_state(project)
    by_id = tasks_by_id(state)
    assert {k: t["status"] for k, t in by_id.items()} == {
        "A": "failed", "B": "blocked", "C": "completed", "D": "blocked", "E": "completed"}
    assert reason in by_id["A"]["error"]
    assert "dependency A failed" in by_id["B"]["error"]
    assert "dependency A failed" in by_id["D"]["error"]
    assert set(run.model.remaining()) == {"frontend-dev:B", "qa-tester:D"}

    feature = "feature/failing-feature"
    failed_branch = f"{feature}-agents/backend-dev/A"
    assert git(project, "rev-parse", failed_branch).strip() == by_id["A"]["commit"]
    assert git(project, "log", "-1", "--format=%an", failed_branch).strip() == "backend-dev"
    assert file_at(project, failed_branch, "a.txt") == "half done\n"
    assert file_at(project, feature, "a.txt") is None
    assert not is_ancestor(project, failed_branch, feature)
    assert file_at(project, feature, "c.txt") == "C\n"
    assert file_at(project, feature, "e.txt") == "E\n"
    assert [m["task_id"] for m in state["integration"]["merges"]] == ["C", "E"]
    assert state["integration"]["status"] == "failed"
    assert worktree_paths(project) == [project]


@pytest.mark.parametrize("cause", ["failing-tests", "failed-task"])
def test_exit_code_1_through_the_cli(project: Path, tmp_path: Path, cause: str) -> None:
    failing_task = cause == "failed-task"
    session = write_session(tmp_path / "session.json", {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "qa-tester:B": ([tool_turn(finish_call("failed", "No test framework."))]
                        if failing_task else write_and_finish("b.txt", "B\n")),
        "manager:integration": [integration_turn("Something failed.")],
    })

    result = CliRunner().invoke(main, [
        "--feature", "Tested feature", "--project-dir", str(project),
        "--api-provider", "scripted", "--session", str(session),
        "--test-command", PASSING_TESTS if failing_task else FAILING_TESTS,
    ], catch_exceptions=False)

    assert result.exit_code == 1, result.output
    state = read_state(project)
    by_id = tasks_by_id(state)
    assert by_id["A"]["status"] == "completed"
    assert by_id["B"]["status"] == ("failed" if failing_task else "completed")
    tests = state["integration"]["test_results"]
    expected = (0, 3, 0, True) if failing_task else (1, 2, 1, False)
    assert (tests["exit_code"], tests["passed"], tests["failed"], tests["success"]) == expected
    assert state["integration"]["status"] == "failed"
    assert state["current_feature"]["status"] == "failed"


# -- merge conflicts ---------------------------------------------------------------------------


def conflicting_tasks(merge_turns: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """X and Y run at once and both rewrite the same line of app.txt."""
    return {
        "manager:plan": [plan_turn([task("X", "backend-dev"), task("Y", "frontend-dev")])],
        "backend-dev:X": [tool_turn(write_call("app.txt", "greeting = hi from X\n"),
                                    finish_call(), delay=0.1)],
        "frontend-dev:Y": [tool_turn(write_call("app.txt", "greeting = hi from Y\n"),
                                     delay=0.2), tool_turn(finish_call())],
        "manager:merge": merge_turns,
        "manager:integration": [integration_turn()],
    }


class ProbedMerges(FileBasedOrchestrator):
    """Both tasks branch before either merges; records the integration worktree after a conflict.

    The barrier makes the conflict certain: each task's worktree exists (cut from the same
    feature commit) before either agent starts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_conflict: list[dict[str, Any]] = []
        self.both_branched = threading.Barrier(2, timeout=20)

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        self.both_branched.wait()
        return super().execute_task_in_worktree(task, worktree)

    def resolve_conflict(self, task: dict[str, Any], branch: str, merge: Any) -> dict[str, Any]:
        entry = super().resolve_conflict(task, branch, merge)
        worktree = self.integration_worktree
        assert worktree is not None
        self.after_conflict.append({
            "merging": self.git.merges.in_progress(worktree),
            "status": git(worktree, "status", "--porcelain"),
            "head": git(worktree, "rev-parse", "HEAD").strip(),
            "feature": git(worktree, "rev-parse", self.feature_branch).strip(),
        })
        return entry


def test_conflict_resolved_by_the_manager(project: Path) -> None:
    merged = "greeting = hi from X and Y\n"
    agents = conflicting_tasks([tool_turn(read_call("app.txt"), write_call("app.txt", merged)),
                                tool_turn(finish_call(summary="Kept both greetings."))])

    run = run_team(project, agents, "Greeting feature", cls=ProbedMerges)

    assert run.summary["exit_code"] == 0, run.output
    state = read_state(project)
    merges = state["integration"]["merges"]
    assert sorted(m["status"] for m in merges) == ["conflict_resolved", "merged"]
    (resolved,) = [m for m in merges if m["status"] == "conflict_resolved"]
    assert resolved["conflicts"] == ["app.txt"]
    assert "<<<<<<<" in tool_results(run.calls("manager:merge")[1])[0]
    feature = "feature/greeting-feature"
    assert file_at(project, feature, "app.txt") == merged
    head = git(project, "log", "-1", "--format=%an%x1f%P%x1f%B", feature).split("\x1f")
    assert head[0] == "manager"
    assert len(head[1].split()) == 2
    assert "conflicts resolved by manager" in head[2]
    assert resolved["commit"] == git(project, "rev-parse", feature).strip()
    assert run.orchestrator.after_conflict == [{
        "merging": False, "status": "", "head": resolved["commit"],
        "feature": resolved["commit"]}]


@pytest.mark.parametrize("how", ["manager-blocked", "markers-left"])
def test_unresolvable_conflict_is_aborted_and_the_branch_kept(project: Path, how: str) -> None:
    merge_turns = {
        "manager-blocked": [tool_turn(finish_call(
            "blocked", "Both sides rewrite the greeting.", ["needs a product decision"]))],
        "markers-left": [tool_turn(finish_call(summary="Looks fine to me."))],
    }[how]

    run = run_team(project, conflicting_tasks(merge_turns), "Greeting feature",
                   cls=ProbedMerges)

    assert run.summary["exit_code"] == 1
    state = read_state(project)
    merges = state["integration"]["merges"]
    assert sorted(m["status"] for m in merges) == ["conflict_unresolved", "merged"]
    (lost,) = [m for m in merges if m["status"] == "conflict_unresolved"]
    (won,) = [m for m in merges if m["status"] == "merged"]
    assert lost["conflicts"] == ["app.txt"]
    assert lost["commit"] is None
    loser = tasks_by_id(state)[lost["task_id"]]
    assert loser["status"] == "failed"
    assert "merge" in loser["error"]
    assert tasks_by_id(state)[won["task_id"]]["status"] == "completed"

    feature = "feature/greeting-feature"
    assert git(project, "rev-parse", lost["branch"]).strip() == loser["commit"]
    assert file_at(project, lost["branch"], "app.txt") == f"greeting = hi from {lost['task_id']}\n"
    assert not is_ancestor(project, lost["branch"], feature)
    assert file_at(project, feature, "app.txt") == f"greeting = hi from {won['task_id']}\n"
    assert git(project, "rev-parse", feature).strip() == won["commit"]
    assert run.orchestrator.after_conflict == [{
        "merging": False, "status": "", "head": won["commit"], "feature": won["commit"]}]
    assert worktree_paths(project) == [project]


# -- the user's repository ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [FileBasedOrchestrator, SimpleOrchestrator],
                         ids=["file-based", "simple"])
def test_users_working_tree_index_and_untracked_files_are_untouched(
    project: Path, cls: type[FileBasedOrchestrator]
) -> None:
    (project / "app.txt").write_text("greeting = my local edit\n", encoding="utf-8")
    (project / "README.md").write_text("# project\n\nstaged line\n", encoding="utf-8")
    git(project, "add", "README.md")
    (project / "notes.txt").write_bytes(b"my notes\x00\xff\n")
    before = {
        "head": git(project, "rev-parse", "HEAD"),
        "branch": git(project, "symbolic-ref", "HEAD"),
        "diff": git(project, "diff"),
        "cached": git(project, "diff", "--cached"),
        "notes": (project / "notes.txt").read_bytes(),
    }
    status_before = git(project, "status", "--porcelain").splitlines()
    all_before = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": [tool_turn(write_call("app.txt", "greeting = agent\n"),
                                    write_call("README.md", "# agent readme\n")),
                          tool_turn(finish_call())],
        "qa-tester:B": write_and_finish("notes.txt", "agent notes\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_team(project, agents, "Untouched feature", cls=cls)

    assert run.summary["exit_code"] == 0, run.output
    after = {
        "head": git(project, "rev-parse", "HEAD"),
        "branch": git(project, "symbolic-ref", "HEAD"),
        "diff": git(project, "diff"),
        "cached": git(project, "diff", "--cached"),
        "notes": (project / "notes.txt").read_bytes(),
    }
    assert after == before
    status_after = git(project, "status", "--porcelain").splitlines()
    assert sorted(status_after) == sorted([*status_before, "?? .ai-agents/"])
    all_after = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(all_after) == sorted(
        [*all_before, "?? .ai-agents/state/team-communication.json"])

    feature = "feature/untouched-feature"
    assert file_at(project, feature, "app.txt") == "greeting = agent\n"
    assert file_at(project, feature, "notes.txt") == "agent notes\n"
    root = project / ".ai-agents" / "worktrees"
    for t in read_state(project)["tasks"]:
        assert root in Path(t["worktree"]).parents


def test_no_task_worktree_survives_and_a_stale_one_is_reported_not_deleted(
    project: Path,
) -> None:
    stale = project / ".ai-agents" / "worktrees" / "old-run" / "TASK-009"
    git(project, "worktree", "add", "-q", "-b", "old-run/backend-dev", str(stale))
    (stale / "committed.txt").write_text("saved\n", encoding="utf-8")
    git(stale, "add", "committed.txt")
    git(stale, "commit", "-q", "-m", "work of a crashed run")
    (stale / "wip.txt").write_text("unsaved work\n", encoding="utf-8")
    stale_head = git(stale, "rev-parse", "HEAD")
    run = run_team(project, diamond_session(), "Hygiene feature")

    assert run.summary["exit_code"] == 0, run.output
    assert worktree_paths(project) == [project, stale]
    assert (stale / "wip.txt").read_text(encoding="utf-8") == "unsaved work\n"
    assert git(stale, "rev-parse", "HEAD") == stale_head
    notes = [u for u in read_state(project)["agent_updates"] if u["status"] == "stale_worktree"]
    assert len(notes) == 1
    assert str(stale) in notes[0]["message"]
    assert "uncommitted changes" in notes[0]["message"]
    assert "1 unmerged commit(s)" in notes[0]["message"]
    assert any(str(stale) in line and "Stale worktree" in line for line in run.lines)
    feature = "feature/hygiene-feature"
    assert set(branches(project)) == {
        "main", "old-run/backend-dev", feature, f"{feature}-agents/backend-dev/A",
        f"{feature}-agents/frontend-dev/B", f"{feature}-agents/qa-tester/C"}
    assert not list((project / ".ai-agents" / "worktrees" / "hygiene-feature").glob("*"))


ARTEFACT_TESTS = (
    "python -c \"open('junit.xml', 'w').write('<testsuite/>'); print('1 passed, 0 failed')\""
)


@pytest.mark.parametrize("cls", [FileBasedOrchestrator, SimpleOrchestrator],
                         ids=["file-based", "simple"])
def test_files_written_by_the_test_command_leave_no_worktree_behind(
    project: Path, cls: type[FileBasedOrchestrator]
) -> None:
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_team(project, agents, "Report feature", cls=cls, test_command=ARTEFACT_TESTS)

    assert run.summary["exit_code"] == 0
    assert worktree_paths(project) == [project]


@pytest.mark.parametrize("cls", [FileBasedOrchestrator, SimpleOrchestrator],
                         ids=["file-based", "simple"])
def test_bytecode_from_agent_commands_is_not_committed(
    project: Path, cls: type[FileBasedOrchestrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [
            tool_turn(write_call("helper.py", "VALUE = 1\n")),
            tool_turn(("run_command", {"argv": [sys.executable, "-c", "import helper"]})),
            tool_turn(finish_call()),
        ],
        "manager:integration": [integration_turn()],
    }

    run = run_team(project, agents, "Bytecode feature", cls=cls)

    assert run.summary["exit_code"] == 0
    tree = git(project, "ls-tree", "-r", "--name-only", "feature/bytecode-feature").split()
    assert "helper.py" in tree
    assert [name for name in tree if "__pycache__" in name] == []


def test_a_task_named_integration_gets_its_own_worktree(project: Path) -> None:
    agents = {
        "manager:plan": [plan_turn([task("integration", "backend-dev")])],
        "backend-dev:integration": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_team(project, agents, "Naming feature")

    assert run.summary["exit_code"] == 0
    assert tasks_by_id(read_state(project))["integration"]["status"] == "completed"


# -- one run at a time -------------------------------------------------------------------------


class Gated(FileBasedOrchestrator):
    """Holds its first task until the test lets it go."""

    reached = threading.Event()
    release = threading.Event()

    def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
        self.reached.set()
        assert self.release.wait(20)
        return super().agent_execute_task(task)


def test_second_orchestrator_on_the_same_project_is_refused(
    project: Path, tmp_path: Path
) -> None:
    Gated.reached, Gated.release = threading.Event(), threading.Event()
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n", delay=0.1),
        "manager:integration": [integration_turn()],
    }
    outcome: dict[str, Any] = {}

    def first() -> None:
        try:
            outcome["run"] = run_team(project, agents, "First feature", cls=Gated)
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert Gated.reached.wait(20)
        before = snapshot(project)
        session = write_session(tmp_path / "second.json", {"*": [plan_turn([])]})
        result = CliRunner().invoke(main, [
            "--feature", "Second feature", "--project-dir", str(project),
            "--api-provider", "scripted", "--session", str(session),
        ], catch_exceptions=False)
        with pytest.raises(StateLockedError, match="already running"):
            SimpleOrchestrator(project, model=ScriptedModel({}), output=lambda _: None).run(
                "Third feature")
        after = snapshot(project)
    finally:
        Gated.release.set()
        thread.join(30)

    assert result.exit_code == 2
    assert "Another orchestrator is already running" in result.stderr
    assert str(project) in result.stderr
    assert after == before
    assert "feature/second-feature" not in branches(project)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["run"].summary["exit_code"] == 0

    again = run_team(project, {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("again.txt", "again\n"),
        "manager:integration": [integration_turn()],
    }, "Later feature")
    assert again.summary["exit_code"] == 0


# -- auto_merge --------------------------------------------------------------------------------


class UserSwitchesBranch(FileBasedOrchestrator):
    """The user checks out another branch in their repository while the team works."""

    def manager_integrate(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        git(self.project_dir, "checkout", "-q", "-b", "elsewhere")
        return super().manager_integrate(tasks)


@pytest.mark.parametrize("base_checked_out", [True, False])
def test_auto_merge_fast_forwards_the_base_only_when_it_is_not_checked_out(
    project: Path, tmp_path: Path, base_checked_out: bool
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"coordination": {"auto_merge": True}}), encoding="utf-8")
    initial = git(project, "rev-parse", "main").strip()
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    }
    cls = FileBasedOrchestrator if base_checked_out else UserSwitchesBranch

    run = run_team(project, agents, "Merged feature", cls=cls, config_path=config)

    assert run.summary["exit_code"] == 0, run.output
    feature_head = git(project, "rev-parse", "feature/merged-feature").strip()
    state = read_state(project)
    if base_checked_out:
        assert git(project, "rev-parse", "main").strip() == initial
        assert state["integration"]["merged_into_base"] is False
        assert any("auto_merge" in line and "checked out" in line for line in run.lines)
        assert git(project, "status", "--porcelain") == "?? .ai-agents/\n"
    else:
        assert git(project, "rev-parse", "main").strip() == feature_head
        assert state["integration"]["merged_into_base"] is True
        assert git(project, "symbolic-ref", "--short", "HEAD").strip() == "elsewhere"
        assert git(project, "rev-parse", "HEAD").strip() == initial
        assert git(project, "status", "--porcelain") == "?? .ai-agents/\n"


def test_auto_merge_is_off_by_default(project: Path) -> None:
    initial = git(project, "rev-parse", "main")
    run = run_team(project, {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    }, "Plain feature", cls=UserSwitchesBranch)

    assert run.summary["exit_code"] == 0, run.output
    assert git(project, "rev-parse", "main") == initial
    assert read_state(project)["integration"]["merged_into_base"] is False
