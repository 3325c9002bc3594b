"""Resume and state that cannot be turned against the user, and the run lock.

- A state file that is schema-valid but inconsistent (duplicate or dangling ids, a cycle, a
  branch without a slash, a branch of the user's, a task branch outside the feature's
  namespace, a base commit git does not have) is refused by `--resume` with exit 2 and every
  reason; nothing in git changes, not even `.git/info/exclude`.
- A task recorded completed and merged whose commit is not on the feature branch runs again.
- A SIGKILL inside `git worktree add` (made slow by a smudge filter of the user's) resumes to
  the tree an uninterrupted run builds, also when the half-made worktree's directory is gone
  and a branch lock is left; what cannot be repaired is reported with git's own words.
- The run lock survives its file being deleted, and agents cannot delete it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import StateError
from agent_team.git_workspace import GitWorkspace
from agent_team.run_lock import LOCK_NAME, RunLock
from agent_team.sandbox import SandboxPolicy, run_sandboxed
from agent_team.scripted import ScriptedModel
from agent_team.state_checks import check_consistency, in_namespace
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    PASSING_TESTS,
    assert_nothing_lost,
    assert_state_valid,
    branches,
    clean_env,
    file_at,
    git,
    integration_turn,
    plan_turn,
    preserve,
    read_json,
    state_path,
    task,
    tasks_by_id,
    write_and_finish,
    write_session,
)
from tests.orchestration_helpers import cli_args as fault_cli_args

BASE_FILES = {"README.md": "# project\n", "app.txt": "greeting = hello\n"}
FEATURE = "Resume feature"
BRANCH = "feature/resume-feature"


def two_tasks(delay: float = 0) -> dict[str, list[dict[str, Any]]]:
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": write_and_finish("a.txt", "A\n", delay=delay),
        "qa-tester:B": write_and_finish("b.txt", "B\n"),
        "manager:integration": [integration_turn()],
    }


def cli_args(project: Path, session: Path, *extra: str) -> list[str]:
    return fault_cli_args(project, session, "--test-command", PASSING_TESTS, *extra)


def finished_then_stopped(project: Path) -> dict[str, Any]:
    """A real run of two tasks, then its feature marked stopped so that it can be resumed."""
    summary = FileBasedOrchestrator(project, model=ScriptedModel(two_tasks()),
                                    test_command=PASSING_TESTS, output=lambda _: None
                                    ).run(FEATURE)
    assert summary["exit_code"] == 0
    state = json.loads(state_path(project).read_text(encoding="utf-8"))
    state["current_feature"]["status"] = "stopped"
    return state


def save(project: Path, state: dict[str, Any]) -> bytes:
    payload = json.dumps(state, indent=2).encode()
    state_path(project).write_bytes(payload)
    return payload


# -- inconsistent state files ------------------------------------------------------------------


def user_branch(project: Path, state: dict[str, Any], *, claimed: bool) -> None:
    """The state names the user's own `feature/mine` as the feature branch."""
    git(project, "branch", "feature/mine", "main")
    state["current_feature"]["branch"] = "feature/mine"
    state["integration"]["branch"] = "feature/mine"
    for entry in state["tasks"]:
        entry["branch"] = entry["branch"].replace(BRANCH, "feature/mine")
    owned = [b.replace(BRANCH, "feature/mine") for b in state["current_feature"]["branches"]]
    state["current_feature"]["branches"] = owned if claimed else owned[1:]
    if claimed:  # even listed as the run's own, it is checked out in the user's checkout
        git(project, "checkout", "-q", "feature/mine")


def mutate(kind: str, project: Path, state: dict[str, Any]) -> str:
    """Make the state inconsistent in one way; returns a phrase the refusal must contain."""
    tasks = state["tasks"]
    feature = state["current_feature"]
    if kind == "duplicate-id":
        tasks.append(copy.deepcopy(tasks[0]))
        return "task id(s) recorded more than once: A"
    if kind == "dangling-dependency":
        tasks[1]["dependencies"] = ["NOPE"]
        return "task B depends on NOPE, which the state does not hold"
    if kind == "cycle":
        tasks[0]["dependencies"] = ["B"]
        return "the task dependencies form a cycle"
    if kind == "no-slash":
        feature["branch"] = "trunk"
        return "has no slash"
    if kind == "users-branch":
        user_branch(project, state, claimed=False)
        return "branch 'feature/mine' exists but this run did not create it"
    if kind == "users-checked-out-branch":
        user_branch(project, state, claimed=True)
        return "is checked out in"
    if kind == "base-branch":
        feature["branch"] = "main"  # no slash either: both reasons are given
        return "is the base branch the run started from"
    if kind == "task-outside-namespace":
        tasks[0]["branch"] = "release/1.0"
        return "task A's branch 'release/1.0' lies outside the feature's namespace"
    if kind == "claims-a-foreign-branch":
        feature["branches"].append("main")
        return "current_feature.branches names 'main'"
    if kind == "unknown-base-commit":
        feature["base_commit"] = "0" * 40
        return "is not in this repository"
    raise AssertionError(kind)


KINDS = ["duplicate-id", "dangling-dependency", "cycle", "no-slash", "users-branch",
         "users-checked-out-branch", "base-branch", "task-outside-namespace",
         "claims-a-foreign-branch", "unknown-base-commit"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_inconsistent_state_is_refused_with_exit_2_and_git_is_untouched(
    tmp_path: Path, kind: str
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    state = finished_then_stopped(project)
    reason = mutate(kind, project, state)
    payload = save(project, state)
    before = preserve(project)
    exclude = (project / ".git" / "info" / "exclude").read_bytes()
    worktrees = git(project, "worktree", "list", "--porcelain")
    session = write_session(tmp_path / "session.json", two_tasks(), FEATURE)

    result = CliRunner().invoke(main, [
        "--project-dir", str(project), "--api-provider", "scripted", "--session", str(session),
        "--no-progress", "--resume"], catch_exceptions=False)

    assert result.exit_code == 2, result.output
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.output and "Nothing was changed" in result.stderr
    assert state_path(project).read_bytes() == payload
    after = assert_nothing_lost(project, before)
    assert after.refs == before.refs
    assert (project / ".git" / "info" / "exclude").read_bytes() == exclude
    assert git(project, "worktree", "list", "--porcelain") == worktrees


def test_the_checks_pass_on_every_state_a_real_run_writes(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    state = finished_then_stopped(project)
    workspace = GitWorkspace(project)
    assert state["current_feature"]["branches"] == [
        BRANCH, f"{BRANCH}-agents/backend-dev/A", f"{BRANCH}-agents/qa-tester/B"]
    assert check_consistency(state, workspace, worktree_root=project / ".ai-agents") == []
    assert in_namespace(BRANCH, f"{BRANCH}-agents/x/y")
    assert not in_namespace(BRANCH, f"{BRANCH}-agents/") and not in_namespace(BRANCH, "main")


def test_a_task_branch_of_the_users_is_never_checked_out_by_a_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    git(project, "branch", f"{BRANCH}-agents/backend-dev/A", "main")  # the user's, by chance
    before = preserve(project)
    runner = FileBasedOrchestrator(project, model=ScriptedModel(two_tasks()),
                                   test_command=PASSING_TESTS, output=lambda _: None)
    with pytest.raises(StateError, match="this run did not create it"):
        runner.run(FEATURE)
    state = assert_state_valid(project)
    assert f"{BRANCH}-agents/backend-dev/A" not in state["current_feature"]["branches"]
    assert "this run did not create it" in state["current_feature"]["stop_reason"]
    assert_nothing_lost(project, before)


def test_a_merged_task_whose_commit_left_the_feature_branch_runs_again(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    state = finished_then_stopped(project)
    merge_of_a = tasks_by_id(state)["A"]["merge_commit"]
    git(project, "branch", "-f", BRANCH, merge_of_a)  # B's merge is gone from the branch
    save(project, state)
    lines: list[str] = []
    model = ScriptedModel({"qa-tester:B": write_and_finish("b.txt", "B\n"),
                           "manager:integration": [integration_turn()]})

    summary = FileBasedOrchestrator(project, model=model, test_command=PASSING_TESTS,
                                    output=lines.append).resume()

    assert summary["exit_code"] == 0, lines
    assert any("B is recorded as merged, but its commit" in line for line in lines), lines
    assert {c.key for c in model.calls} == {"qa-tester:B", "manager:integration"}  # A skipped
    assert file_at(project, BRANCH, "b.txt") == "B\n"
    assert file_at(project, BRANCH, "a.txt") == "A\n"
    resumed = tasks_by_id(assert_state_valid(project))
    assert resumed["B"]["merged"] and resumed["A"]["merged"]
    assert git(project, "merge-base", "--is-ancestor", resumed["B"]["commit"], BRANCH) == ""


# -- a kill inside `git worktree add` ----------------------------------------------------------

#: A smudge filter that is slow on its Nth run: `git worktree add` spends its time checking out.
SMUDGE = """\
import pathlib, sys, time
marks = pathlib.Path(sys.argv[1])
count = marks / "count"
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
if n == int(sys.argv[2]):
    (marks / "started").touch()
    time.sleep(60)
sys.stdout.buffer.write(sys.stdin.buffer.read())
"""


def slow_checkout_repo(tmp_path: Path, nth: int) -> tuple[Path, Path]:
    project = tmp_path / "project"
    make_repo(project, {**BASE_FILES, ".gitattributes": "app.txt filter=slow\n"})
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "smudge.py"
    script.write_text(SMUDGE, encoding="utf-8")
    git(project, "config", "filter.slow.smudge", f"{sys.executable} {script} {marks} {nth}")
    git(project, "config", "filter.slow.clean", "cat")
    return project, marks


def run_until(args: list[str], reached: Callable[[], bool]) -> None:
    process = subprocess.Popen(args, env=clean_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not reached():
            assert process.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("then", ["as-killed", "directory-deleted", "branch-lock-left"])
def test_sigkill_inside_git_worktree_add_resumes_cleanly(tmp_path: Path, then: str) -> None:
    # The first checkout of app.txt is the first task's: the integration worktree is opened
    # without files (they come from a parked task worktree at the end), so the resumed run
    # also finds that half-made integration worktree and must complete it.
    project, marks = slow_checkout_repo(tmp_path, 1)
    before = preserve(project)
    session = write_session(tmp_path / "killed.json", two_tasks(), FEATURE)
    run_until([*cli_args(project, session, "--max-workers", "1"), "--feature", FEATURE],
              lambda: (marks / "started").exists())

    admins = list((project / ".git" / "worktrees").iterdir())
    half = [a for a in admins if (a / "locked").exists()]
    assert len(half) == 1 and not (half[0] / "index").exists()  # what git leaves behind
    checkout = Path((half[0] / "gitdir").read_text().strip()).parent
    assert checkout.name == "A"
    if then == "directory-deleted":
        shutil.rmtree(checkout)
    if then == "branch-lock-left":
        lock = project / ".git" / "refs" / "heads" / f"{BRANCH}-agents" / "qa-tester" / "B.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    assert_state_valid(project)
    snapshot = assert_nothing_lost(project, before)

    resumed = subprocess.run([*cli_args(project, write_session(
        tmp_path / "resume.json", two_tasks(), FEATURE)), "--resume"],
        env=clean_env(), capture_output=True, text=True, timeout=180)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    if then == "directory-deleted":
        assert "Unlocked the record of" in resumed.stdout
    else:
        assert "half checked out" in resumed.stdout
    if then == "branch-lock-left":
        assert "B.lock, left by a git command" in resumed.stdout
    state = assert_state_valid(project)
    assert state["current_feature"]["status"] == "completed"
    assert [r["status"] for r in state["runs"]] == ["crashed", "completed"]
    assert file_at(project, BRANCH, "a.txt") == "A\n" and file_at(project, BRANCH, "b.txt") == "B\n"
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert_nothing_lost(project, snapshot)


def test_what_resume_cannot_repair_is_reported_with_gits_own_words(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    save(project, finished_then_stopped(project))
    blocker = project / ".ai-agents" / "worktrees" / "resume-feature" / "integration"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the checkout goes\n")
    session = write_session(tmp_path / "session.json", two_tasks(), FEATURE)

    result = subprocess.run([*cli_args(project, session), "--resume"], env=clean_env(),
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "worktree add" in output and "already exists" in output, output
    assert "Traceback" not in output
    assert blocker.read_text() == "a file where the checkout goes\n"


# -- the run lock ------------------------------------------------------------------------------

HOLDER = """\
import sys
sys.path.insert(0, sys.argv[2])
from agent_team.errors import StateLockedError
from agent_team.run_lock import RunLock
try:
    lock = RunLock(sys.argv[1]).acquire()
except StateLockedError as exc:
    print("refused:", exc, flush=True)
    raise SystemExit(2)
print("locked", flush=True)
sys.stdin.readline()
"""


def holder(tmp_path: Path, common: Path) -> subprocess.Popen[str]:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER, encoding="utf-8")
    package = Path(__file__).resolve().parents[1] / "scripts" / "orchestration"
    return subprocess.Popen([sys.executable, str(script), str(common), str(package)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=clean_env())


@pytest.mark.parametrize("swap", ["deleted", "replaced"])
def test_a_second_process_is_refused_even_when_the_lock_file_vanished(
    tmp_path: Path, swap: str
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    common = project / ".git"
    first = holder(tmp_path, common)
    assert first.stdout is not None and first.stdout.readline().strip() == "locked"
    (common / LOCK_NAME).unlink()
    if swap == "replaced":
        (common / LOCK_NAME).write_text("")
    second = holder(tmp_path, common)
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 2 and "Another orchestrator is already running" in out, out

    first.communicate("\n", timeout=30)  # the first one ends: the lock is free again
    third = holder(tmp_path, common)
    assert third.stdout is not None and third.stdout.readline().strip() == "locked"
    third.communicate("\n", timeout=30)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_an_agent_in_the_sandbox_cannot_remove_or_replace_the_run_lock(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    worktree = tmp_path / "wt"
    git(project, "worktree", "add", "-q", "-b", "task", str(worktree))
    common = (project / ".git").resolve()
    lock = RunLock(common).acquire()
    try:
        inode = (common / LOCK_NAME).stat().st_ino
        outcome = run_sandboxed(["sh", "-c",
                                 f"rm -f {common}/{LOCK_NAME} || echo rm-refused;"
                                 f"mv {common}/{LOCK_NAME} {common}/x || echo mv-refused;"
                                 f"echo x > {common}/{LOCK_NAME} || echo write-refused;"
                                 f"rmdir {common} || echo rmdir-refused"],
                                workdir=worktree, policy=SandboxPolicy(), timeout=30)
        for word in ("rm-refused", "mv-refused", "write-refused", "rmdir-refused"):
            assert word in outcome.output, outcome.output
        assert (common / LOCK_NAME).stat().st_ino == inode
        second = holder(tmp_path, common)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 2, out
    finally:
        lock.release()


@pytest.mark.slow
def test_deleting_the_lock_file_during_a_run_does_not_let_a_second_orchestrator_in(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    before = preserve(project)
    first_session = write_session(tmp_path / "first.json", two_tasks(delay=1.5), FEATURE)
    first = subprocess.Popen([*cli_args(project, first_session), "--feature", FEATURE],
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 30
    while (read_json(state_path(project)) or {}).get("tasks") in (None, []):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    (project / ".git" / LOCK_NAME).unlink()
    second_session = write_session(tmp_path / "second.json", two_tasks(), "Second feature")
    refused = subprocess.run([*cli_args(project, second_session), "--feature", "Second feature"],
                             env=clean_env(), capture_output=True, text=True, timeout=60)
    out, err = first.communicate(timeout=90)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Another orchestrator is already running" in refused.stderr
    assert first.returncode == 0, out + err
    assert "feature/second-feature" not in branches(project)
    assert assert_state_valid(project)["current_feature"]["title"] == FEATURE
    assert_nothing_lost(project, before)
