"""Checkpoints and rollbacks: full, partial, selective; no commit is ever lost and the user's
checkout is never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.co_helpers import co, make_project, scripted
from tests.orchestration_helpers import (
    file_at,
    git,
    integration_turn,
    plan_turn,
    task,
    write_and_finish,
)


def all_commits(repo: Path) -> set[str]:
    """Every commit reachable from any ref (branches, checkpoints, backups)."""
    return set(git(repo, "rev-list", "--all").split())


def user_view(repo: Path) -> tuple[str, str, str, bytes]:
    return (git(repo, "rev-parse", "HEAD"), git(repo, "symbolic-ref", "HEAD"),
            git(repo, "status", "--porcelain"), (repo / "README.md").read_bytes())


def run_one(project: Path, tmp_path: Path, number: int, path: str, content: str) -> str:
    """`co run` of backlog task `number`, which writes `path`; returns the run's branch."""
    agents = {"manager:plan": [plan_turn([task(f"T{number}", "backend-dev")])],
              f"backend-dev:T{number}": write_and_finish(path, content),
              "manager:integration": [integration_turn()]}
    result = co(*scripted(tmp_path, agents), "run", "--id", str(number), "--no-progress",
                "-d", str(project))
    assert result.exit_code == 0, result.output
    shown = json.loads(co("show", str(number), "--json", "-d", str(project)).output)
    return shown["runs"][-1]["branch"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = make_project(tmp_path / "app")
    (path / "README.md").write_text("# app\nuncommitted edit by the user\n")
    return path


def test_full_rollback_restores_branches_and_backlog_and_loses_no_commit(
        project: Path, tmp_path: Path) -> None:
    d = ["-d", str(project)]
    co("add", "First", *d)
    co("add", "Second", *d)
    first = run_one(project, tmp_path, 1, "one.txt", "1\n")
    made = co("checkpoint", "after the first run", *d)
    assert made.exit_code == 0 and "2 branch(es), 2 backlog task(s)" in made.output
    checkpoint_id = made.output.split()[1].rstrip(":")
    first_tip = git(project, "rev-parse", first).strip()
    # Work after the checkpoint: a second run, and an extra commit on the first run's branch.
    second = run_one(project, tmp_path, 2, "two.txt", "2\n")
    git(project, "worktree", "add", "-q", str(tmp_path / "wt"), first)
    (tmp_path / "wt" / "late.txt").write_text("late\n")
    git(tmp_path / "wt", "add", "late.txt")
    git(tmp_path / "wt", "commit", "-qm", "late commit")
    git(project, "worktree", "remove", str(tmp_path / "wt"))
    co("add", "Third", *d)
    before_commits = all_commits(project)
    before_user = user_view(project)

    result = co("rollback", checkpoint_id, *d)

    assert result.exit_code == 0, result.output
    assert git(project, "rev-parse", first).strip() == first_tip
    assert git(project, "branch", "--list", second).strip() == ""  # made after the checkpoint
    statuses = [(t["id"], t["status"]) for t in json.loads(co("list", "--json", *d).output)]
    assert statuses == [(1, "done"), (2, "pending")]
    assert all_commits(project) >= before_commits  # nothing lost: backups keep every tip
    backups = git(project, "for-each-ref", "--format=%(refname)", "refs/agent-team/backups/")
    assert any(line.endswith("/heads/" + second) for line in backups.splitlines())
    assert user_view(project) == before_user


def test_partial_rollback_restores_named_files_with_a_new_commit(project: Path,
                                                                 tmp_path: Path) -> None:
    d = ["-d", str(project)]
    co("add", "First", *d)
    branch = run_one(project, tmp_path, 1, "one.txt", "1\n")
    checkpoint_id = co("checkpoint", "base", *d).output.split()[1].rstrip(":")
    git(project, "worktree", "add", "-q", str(tmp_path / "wt"), branch)
    (tmp_path / "wt" / "one.txt").write_text("broken\n")
    (tmp_path / "wt" / "keep.txt").write_text("keep\n")
    git(tmp_path / "wt", "add", "-A")
    git(tmp_path / "wt", "commit", "-qm", "later work")
    git(project, "worktree", "remove", str(tmp_path / "wt"))
    tip = git(project, "rev-parse", branch).strip()
    before_user = user_view(project)

    result = co("rollback", checkpoint_id, "--strategy", "partial", "--files", "one.txt", *d)

    assert result.exit_code == 0, result.output
    assert file_at(project, branch, "one.txt") == "1\n"
    assert file_at(project, branch, "keep.txt") == "keep\n"
    assert git(project, "rev-parse", f"{branch}~1").strip() == tip
    assert user_view(project) == before_user
    assert co("rollback", checkpoint_id, "--strategy", "partial", *d).exit_code == 2


def test_selective_rollback_reverts_one_tasks_merge(project: Path, tmp_path: Path) -> None:
    d = ["-d", str(project)]
    co("add", "A", *d)
    co("add", "B", *d)
    checkpoint_id = co("checkpoint", "empty", *d).output.split()[1].rstrip(":")
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev"), task("T2", "qa-tester")])],
              "backend-dev:T1": write_and_finish("a.txt", "a\n"),
              "qa-tester:T2": write_and_finish("b.txt", "b\n"),
              "manager:integration": [integration_turn()]}
    assert co(*scripted(tmp_path, agents), "run", "--no-progress", *d).exit_code == 0
    branch = json.loads(co("show", "1", "--json", *d).output)["runs"][-1]["branch"]
    before = all_commits(project)

    result = co("rollback", checkpoint_id, "--strategy", "selective", "--tasks", "1", *d)

    assert result.exit_code == 0, result.output
    assert "task 1: merge reverted" in result.output
    assert file_at(project, branch, "a.txt") is None
    assert file_at(project, branch, "b.txt") == "b\n"
    assert all_commits(project) >= before
    unknown = co("rollback", checkpoint_id, "--strategy", "selective", "--tasks", "9", *d)
    assert unknown.exit_code == 1 and "no merge recorded" in unknown.output


def test_a_checked_out_branch_is_never_moved(project: Path, tmp_path: Path) -> None:
    d = ["-d", str(project)]
    co("add", "First", *d)
    checkpoint_id = co("checkpoint", "before", *d).output.split()[1].rstrip(":")
    branch = run_one(project, tmp_path, 1, "one.txt", "1\n")
    git(project, "worktree", "add", "-q", str(tmp_path / "mine"), branch)
    tip = git(project, "rev-parse", branch).strip()
    result = co("rollback", checkpoint_id, *d)
    assert result.exit_code == 1
    assert f"skipped {branch}: checked out in" in result.output
    assert git(project, "rev-parse", branch).strip() == tip


def test_unknown_checkpoint_and_listing(project: Path) -> None:
    d = ["-d", str(project)]
    assert "No checkpoints yet" in co("list-checkpoints", *d).output
    co("checkpoint", "manual one", *d)
    assert "manual    " in co("list-checkpoints", *d).output
    result = co("rollback", "nope", *d)
    assert result.exit_code == 2 and "No checkpoint 'nope'" in result.output


def test_include_files_keeps_the_working_copy_in_the_checkpoint(project: Path) -> None:
    from agent_team.co.checkpoint_cmds import rollback_manager

    manager = rollback_manager(project)
    checkpoint_id = manager.create_checkpoint("manual", "with files", ["README.md"])
    ref = f"refs/agent-team/checkpoints/{checkpoint_id}/files"
    assert file_at(project, ref, "README.md") == "# app\nuncommitted edit by the user\n"
    assert git(project, "status", "--porcelain").startswith(" M README.md")
