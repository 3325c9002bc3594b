"""Reused task worktrees: what the next task sees is exactly a fresh worktree of its branch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import git
import pytest
from agent_team.errors import StateError
from agent_team.git_workspace import GitWorkspace
from agent_team.run_context import RunContext
from agent_team.scripted import ScriptedModel
from agent_team.state import TeamState
from agent_team.state_checks import claim_branch
from agent_team.state_journal import journal_path
from agent_team.worktree_pool import WorktreePool
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    finish_call,
    plan_turn,
    task,
    tool_turn,
    write_call,
)

BACKEND = {"author_name": "backend-dev", "author_email": "backend-dev@agents.invalid"}


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    return make_repo(tmp_path / "project", {"README.md": "# p\n", ".gitignore": "build/\n",
                                            "src/app.py": "print('app')\n"})


@pytest.fixture
def ws(repo: git.Repo) -> GitWorkspace:
    return GitWorkspace(repo.working_tree_dir)


def listed(ws: GitWorkspace) -> set[Path]:
    return {info.path for info in ws.worktrees.entries()[1:]}


def files_in(worktree: Path) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(worktree, followlinks=False):
        dirs[:] = [d for d in dirs if d != ".git" and not (Path(root) / d).is_symlink()]
        found |= {str((Path(root) / f).relative_to(worktree)) for f in files if f != ".git"}
        found |= {str((Path(root) / d).relative_to(worktree)) + "/"
                  for d in os.listdir(root) if (Path(root) / d).is_symlink()}
    return found


def test_the_next_task_sees_its_branch_and_nothing_the_last_task_left(
    ws: GitWorkspace, repo: git.Repo, tmp_path: Path
) -> None:
    pool = WorktreePool(ws, tmp_path / "wt" / "pool")
    first = ws.worktrees.add(tmp_path / "wt" / "tasks" / "A", "agent/a", start_point="main")
    pool.poolable(first, [])
    (first / "a.txt").write_text("a\n")
    (first / "build").mkdir()
    (first / "build" / "out.o").write_text("ignored output\n")
    (first / "__pycache__").mkdir()
    (first / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (first / "src" / "app.py").write_text("print('changed by A')\n")
    ws.commit_all(first, "A", **BACKEND)

    assert pool.park(first)
    assert not first.exists() and pool.free == 1

    second = pool.take(tmp_path / "wt" / "tasks" / "B", "agent/b", start_point="main",
                       exists=False)
    assert second == (tmp_path / "wt" / "tasks" / "B").resolve()
    assert ws.worktrees.branch_of(second) == "agent/b"
    assert ws.head_commit("agent/b") == ws.head_commit("main")
    assert files_in(second) == {"README.md", ".gitignore", "src/app.py"}
    assert (second / "src" / "app.py").read_text() == "print('app')\n"
    assert git.Repo(second).git.status("--porcelain", "--ignored") == ""
    expected = ws.expected.get(second)
    assert expected is not None and expected.branch == "agent/b"
    assert expected.head == ws.head_commit("main")
    assert listed(ws) == {second}  # one worktree, moved: nothing else registered
    # the commit path works in the reused worktree, with its integrity checks
    (second / "b.txt").write_text("b\n")
    sha = ws.commit_all(second, "B", **BACKEND)
    assert sha == ws.head_commit("agent/b")
    assert ws.history.changed_files("main", "agent/b") == ["b.txt"]


def test_the_setups_dependency_links_are_kept(
    ws: GitWorkspace, repo: git.Repo, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-node-modules"
    shared.mkdir()
    pool = WorktreePool(ws, tmp_path / "wt" / "pool")
    first = ws.worktrees.add(tmp_path / "wt" / "tasks" / "A", "agent/a", start_point="main")
    (first / "node_modules").symlink_to(shared, target_is_directory=True)
    ws.exclude("/node_modules")
    pool.poolable(first, ["node_modules"])
    assert pool.park(first)
    second = pool.take(tmp_path / "wt" / "tasks" / "B", "agent/b", start_point="main",
                       exists=False)
    assert second is not None
    assert (second / "node_modules").is_symlink()
    assert (second / "node_modules").resolve() == shared.resolve()


def test_a_worktree_not_marked_reusable_is_not_parked(
    ws: GitWorkspace, tmp_path: Path
) -> None:
    pool = WorktreePool(ws, tmp_path / "wt" / "pool")
    first = ws.worktrees.add(tmp_path / "wt" / "tasks" / "A", "agent/a", start_point="main")
    assert not pool.park(first)
    assert first.is_dir() and pool.free == 0


def test_a_slot_that_cannot_switch_is_removed_and_the_task_gets_none(
    ws: GitWorkspace, tmp_path: Path
) -> None:
    pool = WorktreePool(ws, tmp_path / "wt" / "pool")
    first = ws.worktrees.add(tmp_path / "wt" / "tasks" / "A", "agent/a", start_point="main")
    pool.poolable(first, [])
    assert pool.park(first)
    busy = ws.worktrees.add(tmp_path / "wt" / "tasks" / "C", "agent/c", start_point="main")
    # agent/c is checked out in another worktree: git refuses to check it out again
    got = pool.take(tmp_path / "wt" / "tasks" / "B", "agent/c", start_point="main", exists=True)
    assert got is None
    assert pool.free == 0 and len(pool.dropped) == 1 and "agent/c" in pool.dropped[0]
    assert listed(ws) == {busy}
    assert not (tmp_path / "wt" / "tasks" / "B").exists()


def test_drain_removes_parked_worktrees_and_a_new_pool_adopts_leftovers(
    ws: GitWorkspace, tmp_path: Path
) -> None:
    root = tmp_path / "wt" / "pool"
    pool = WorktreePool(ws, root)
    for name in ("A", "B"):
        made = ws.worktrees.add(tmp_path / "wt" / "tasks" / name, f"agent/{name.lower()}",
                                start_point="main")
        pool.poolable(made, [])
        assert pool.park(made)
    # an interrupted run left them parked: the next run of the feature takes them over,
    # detached, so it can run task A again on its own branch
    adopted = WorktreePool(ws, root)
    assert adopted.free == 2
    again = adopted.take(tmp_path / "wt" / "tasks" / "A", "agent/a", start_point="main",
                         exists=True)
    assert again is not None and ws.worktrees.branch_of(again) == "agent/a"
    assert adopted.dropped == [] and adopted.free == 1  # no slot was in the way
    adopted.poolable(again, [])
    assert adopted.park(again)
    assert adopted.drain() == []
    assert listed(ws) == set() and not root.exists()
    assert ws.branch_exists("agent/a") and ws.branch_exists("agent/b")  # work is kept


def test_branch_of_reads_the_worktrees_own_head(ws: GitWorkspace, tmp_path: Path) -> None:
    made = ws.worktrees.add(tmp_path / "wt" / "A", "agent/a", start_point="main")
    assert ws.worktrees.branch_of(made) == "agent/a"
    assert ws.worktrees.branch_of(ws.root) == "main"
    assert ws.worktrees.branch_of(tmp_path) is None
    git.Repo(made).git.checkout("--detach")
    assert ws.worktrees.branch_of(made) is None


def test_claiming_a_branch_is_one_journal_line_and_a_users_branch_is_refused(
    tmp_path: Path,
) -> None:
    state = TeamState.for_project(tmp_path)
    with state.transaction() as data:
        data["current_feature"] = {
            "id": "x", "title": "x", "description": "x", "branch": "feature/x",
            "base_branch": "main", "base_commit": "0" * 40, "branches": ["feature/x"],
            "status": "in_progress", "orchestrator": "t", "run_id": "r",
            "started_at": data["last_updated"], "updated_at": data["last_updated"],
            "completed_at": None}
    with state.exclusive():
        saves = state.stats.snapshot_writes
        run = cast(RunContext, SimpleNamespace(store=state))
        claim_branch(run, "agent/x/a", exists=False)
        claim_branch(run, "agent/x/a", exists=True)  # ours already: nothing to do
        assert state.stats.snapshot_writes == saves  # never a rewrite of the whole file
        assert state.stats.journal_appends == 1
        lines = journal_path(state.path).read_text().splitlines()
        assert json.loads(lines[-1])["ops"] == [
            {"op": "branch", "name": "agent/x/a", "exists": False}]
        with pytest.raises(StateError, match="did not create it"):
            claim_branch(run, "users-branch", exists=True)
        assert TeamState(state.path).read()["current_feature"]["branches"] == [
            "feature/x", "agent/x/a"]


def test_a_run_reuses_worktrees_and_leaves_none_behind(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project", {"README.md": "# p\n", ".gitignore": "build/\n"})
    root = Path(str(repo.working_tree_dir))
    plan = [task("A", "backend-dev"), task("B", "backend-dev", ["A"]),
            task("C", "backend-dev", ["B"])]
    session: dict[str, list[dict]] = {"manager": [plan_turn(plan)]}
    for name in ("A", "B", "C"):
        session[f"backend-dev:{name}"] = [
            tool_turn(write_call(f"{name.lower()}.txt", f"{name}\n"),
                      write_call(f"build/{name}.o", "ignored\n")),
            tool_turn(finish_call()),
        ]
    lines: list[str] = []
    # The tests run in the integration worktree, made from the last parked task worktree:
    # every merged file is there and the task's ignored output is not.
    check = ("import os, sys; ok = all(os.path.exists(f) for f in ('a.txt', 'b.txt', 'c.txt')) "
             "and not os.path.exists('build'); print('1 passed' if ok else '1 failed'); "
             "sys.exit(0 if ok else 1)")
    orchestrator = FileBasedOrchestrator(root, model=ScriptedModel(session), max_workers=1,
                                         output=lines.append,
                                         test_command=f'{sys.executable} -c "{check}"')
    parks: list[bool] = []
    takes: list[Path | None] = []
    park, take = WorktreePool.park, WorktreePool.take

    def parking(self: WorktreePool, worktree: Path) -> bool:
        parks.append(park(self, worktree))
        return parks[-1]

    def taking(self: WorktreePool, path: Path, branch: str, **kwargs: object) -> Path | None:
        takes.append(take(self, path, branch, **kwargs))  # type: ignore[arg-type]
        return takes[-1]

    WorktreePool.park, WorktreePool.take = parking, taking  # type: ignore[method-assign]
    try:
        summary = orchestrator.run("three tasks one after another")
    finally:
        WorktreePool.park, WorktreePool.take = park, take  # type: ignore[method-assign]
    assert summary["exit_code"] == 0, "\n".join(lines)
    assert parks == [True, True, True]
    assert takes[0] is None and all(t is not None for t in takes[1:]) and len(takes) == 4
    assert takes[3] == orchestrator.team.worktree_root.resolve() / (
        "three-tasks-one-after-another/integration")
    assert summary["test_results"]["exit_code"] == 0, summary["test_results"]
    feature = git.Repo(root).git.ls_tree("-r", "--name-only",
                                         "feature/three-tasks-one-after-another")
    assert set(feature.split()) == {"README.md", ".gitignore", "a.txt", "b.txt", "c.txt"}
    assert len(git.Repo(root).git.worktree("list").splitlines()) == 1


MANAGER = {"author_name": "manager", "author_email": "manager@agents.invalid"}


def task_commit(ws: GitWorkspace, where: Path, branch: str, files: dict[str, str]) -> str:
    made = ws.worktrees.add(where, branch, start_point="feature/x")
    for name, text in files.items():
        (made / name).write_text(text)
    sha = ws.commit_all(made, branch, **BACKEND)
    assert sha is not None
    return sha


def test_a_clean_merge_moves_the_branch_without_its_files_until_sync(
    ws: GitWorkspace, tmp_path: Path
) -> None:
    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "integration", "feature/x")
    assert ws.merges.merge_without_checkout(integration)
    before = ws.head_commit("feature/x")
    theirs = task_commit(ws, tmp_path / "a", "agent/a", {"a.txt": "a\n"})
    result = ws.merges.merge(integration, "agent/a", "Merge a", **MANAGER)
    assert result.status == "merged"
    assert ws.head_commit("feature/x") == result.commit
    assert git.Repo(integration).git.rev_list("--parents", "-n1", result.commit).split()[1:] \
        == [before, theirs]
    assert not (integration / "a.txt").exists()  # not written yet
    ws.merges.sync(integration)
    assert (integration / "a.txt").read_text() == "a\n"
    assert git.Repo(integration).git.status("--porcelain") == ""
    # merging it again changes nothing
    assert ws.merges.merge(integration, "agent/a", "again", **MANAGER).status == "up_to_date"


def test_a_conflict_is_left_in_the_files_after_the_earlier_merges_caught_up(
    ws: GitWorkspace, tmp_path: Path
) -> None:
    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "integration", "feature/x")
    assert ws.merges.merge_without_checkout(integration)
    task_commit(ws, tmp_path / "a", "agent/a", {"shared.txt": "from a\n", "a.txt": "a\n"})
    task_commit(ws, tmp_path / "b", "agent/b", {"shared.txt": "from b\n"})
    assert ws.merges.merge(integration, "agent/a", "Merge a", **MANAGER).status == "merged"
    result = ws.merges.merge(integration, "agent/b", "Merge b", **MANAGER)
    assert result.status == "conflict" and result.conflicts == ["shared.txt"]
    assert ws.merges.in_progress(integration)
    assert (integration / "a.txt").read_text() == "a\n"  # a's merge is in the files
    assert "<<<<<<<" in (integration / "shared.txt").read_text()


def test_a_repository_with_merge_hooks_merges_in_the_worktree(
    repo: git.Repo, tmp_path: Path
) -> None:
    hook = Path(repo.git_dir) / "hooks" / "post-merge"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    ws = GitWorkspace(repo.working_tree_dir)
    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "integration", "feature/x")
    assert not ws.merges.merge_without_checkout(integration)
    task_commit(ws, tmp_path / "a", "agent/a", {"a.txt": "a\n"})
    assert ws.merges.merge(integration, "agent/a", "Merge a", **MANAGER).status == "merged"
    assert (integration / "a.txt").read_text() == "a\n"  # git merge wrote it at once
