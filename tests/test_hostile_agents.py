"""Hostile or confused agents: scripted tool calls that attack the worktree, the user's
repository, the environment and the state file, driving the real tools in real repositories.

What is guaranteed, and checked here:

- The file tools (read, write, edit, list, search) only reach files inside the task's worktree:
  `..`, absolute paths, `~`, symbolic links planted in the repository (to a directory, a file,
  a missing file, the real `.git`) and `.git` itself are refused with an error the model reads.
- `run_command` runs in the sandbox (tests/test_sandbox.py, tests/test_attacks.py) with a
  bounded output, a timeout that ends every process it started (also those that left its
  process group), and an environment without keys; the keys are masked in the orchestrator's
  own /proc environ too. The tests marked "unconfined" turn the sandbox off
  (`sandbox.enabled: false`) to prove the second line of defence still holds there: git is
  never run in a directory that is not one of its worktrees (a deleted and re-created
  worktree would otherwise let `git add`, `git reset` or `git merge --abort` act on the
  user's checkout), and during a run the state file is written by that run only: a change by
  anyone else, valid or not, is kept aside, never overwritten, and stops the run with the
  path of the run's last good version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import GitError, StateError
from agent_team.scripted import ScriptedModel
from agent_team.state import TeamState
from file_based_orchestrator import FileBasedOrchestrator
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo, wait_until_gone
from tests.orchestration_helpers import (
    FILE_BASED,
    PASSING_TESTS,
    assert_nothing_lost,
    assert_state_valid,
    dirty_the_checkout,
    file_at,
    finish_call,
    git,
    integration_turn,
    plan_turn,
    preserve,
    read_call,
    run_orchestrator,
    state_path,
    task,
    tasks_by_id,
    tool_messages,
    tool_turn,
    write_and_finish,
    write_call,
)

BASE_FILES = {"README.md": "# project\n", "app.txt": "greeting = hello\n"}
SECRET = "outside secret 7f3a\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", BASE_FILES)
    return (tmp_path / "project").resolve()


def worktree_of(project: Path, feature_slug: str, task_id: str) -> Path:
    return project / ".ai-agents" / "worktrees" / feature_slug / "tasks" / task_id


def config(tmp_path: Path, *, unconfined: bool = False, **coordination: Any) -> Path:
    """A config file; `unconfined` turns the sandbox off, to test the second line of defence."""
    path = tmp_path / "config.json"
    data: dict[str, Any] = {"coordination": coordination}
    if unconfined:
        data["sandbox"] = {"enabled": False}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def command(*argv: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("run_command", {"argv": list(argv), **extra})


# -- the file tools ----------------------------------------------------------------------------


def test_file_tools_refuse_every_way_out_of_the_worktree(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    os.symlink(outside, project / "link")
    os.symlink(outside / "secret.txt", project / "filelink")
    os.symlink(outside / "planted.txt", project / "dangling")
    os.symlink(project / ".git", project / "gitlink")
    git(project, "add", "link", "filelink", "dangling", "gitlink")
    git(project, "commit", "-q", "-m", "links planted in the repository")
    before = preserve(project)
    outside_before = {p.name: p.read_bytes() for p in outside.iterdir()}
    hooks_before = sorted(p.name for p in (project / ".git" / "hooks").iterdir())
    hostile = [
        write_call("../escape.txt", "x"),
        write_call("sub/../../../escape.txt", "x"),
        write_call("../../../../../../escape.txt", "x"),
        write_call(str(outside / "absolute.txt"), "x"),
        write_call("~/escape.txt", "x"),
        write_call("link/planted.txt", "through a linked directory"),
        write_call("filelink", "overwritten through a linked file"),
        write_call("dangling", "created through a dangling link"),
        write_call("gitlink/hooks/post-checkout", "#!/bin/sh\necho owned\n"),
        write_call(".git", "gitdir: /tmp/elsewhere\n"),
        write_call(".GIT/config", "[core]\n"),
        ("edit_file", {"path": "filelink", "old": "secret", "new": "public"}),
        read_call("link/secret.txt"),
        read_call("filelink"),
        read_call("dangling"),
        read_call(".git"),
        read_call("gitlink/config"),
        read_call(str(project / ".git" / "config")),
        read_call("../../../../../.git/config"),
        read_call("/etc/passwd"),
        read_call(str(outside / "secret.txt")),
        ("list_files", {"path": "link"}),
        ("list_files", {"path": "gitlink"}),
        ("list_files", {"path": ".."}),
        ("search_files", {"pattern": "secret", "path": "link"}),
        ("search_files", {"pattern": "secret", "path": "filelink"}),
    ]
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [
            tool_turn(*hostile),
            tool_turn(("search_files", {"pattern": "outside secret"}),
                      write_call("a.txt", "made inside\n")),
            tool_turn(finish_call()),
        ],
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Hostile feature")

    assert run.summary["exit_code"] == 0, run.output
    results = tool_messages(run.calls("backend-dev:A")[-1])
    refused = results[: len(hostile)]
    assert [name for name, _, _ in refused] == [name for name, _ in hostile]
    assert all(is_error for _, _, is_error in refused), [r for r in refused if not r[2]]
    assert "No matches" in results[len(hostile)][1]
    everything_sent = json.dumps([c.messages for c in run.model.calls], default=str)
    assert SECRET.strip() not in everything_sent
    assert SECRET.strip() not in state_path(project).read_text(encoding="utf-8")
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == outside_before
    assert sorted(p.name for p in (project / ".git" / "hooks").iterdir()) == hooks_before
    assert not list(tmp_path.rglob("escape.txt"))
    feature = "feature/hostile-feature"
    assert file_at(project, feature, "a.txt") == "made inside\n"
    for link in ("link", "filelink", "dangling", "gitlink"):
        assert git(project, "ls-tree", feature, link) == git(project, "ls-tree", "main", link)
    assert_nothing_lost(project, before)
    assert_state_valid(project)


# -- commands ----------------------------------------------------------------------------------


FIFTY_MB = ("import sys\nchunk = 'x' * 1_000_000\nfor _ in range(50):\n"
            "    sys.stdout.write(chunk)\nprint('END OF OUTPUT')\n")


def test_a_command_printing_50_mb_keeps_memory_bounded_and_the_run_goes_on(
    project: Path,
) -> None:
    before = preserve(project)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [tool_turn(command("python", "-c", FIFTY_MB)),
                          *write_and_finish("a.txt", "A\n")],
        "manager:integration": [integration_turn()],
    }
    tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        run = run_orchestrator(FileBasedOrchestrator, project, agents, "Loud feature")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not tracing:
            tracemalloc.stop()

    assert run.summary["exit_code"] == 0, run.output
    assert peak < 16 * 1024 * 1024, f"peak {peak:,} bytes while 50 MB streamed through"
    (_, output, is_error), *_ = tool_messages(run.calls("backend-dev:A")[1])
    assert not is_error and "[exit code 0" in output
    assert len(output) <= 12_000
    assert "bytes of output cut" in output and output.rstrip().endswith("END OF OUTPUT")
    assert state_path(project).stat().st_size < 200_000
    assert file_at(project, "feature/loud-feature", "a.txt") == "A\n"
    assert_nothing_lost(project, before)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_command_that_never_ends_is_killed_with_its_children_at_the_timeout(
    project: Path, tmp_path: Path
) -> None:
    escape = f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(300.0913)'"
    hang = f"sleep 300.0911 & {escape} & sleep 300.0912; wait"
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [
            tool_turn(command("sh", "-c", hang),
                      command("sleep", "300", timeout_seconds=100_000)),
            *write_and_finish("a.txt", "A\n"),
        ],
        "manager:integration": [integration_turn()],
    }
    started = time.monotonic()

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Hanging feature",
                           config_path=config(tmp_path, command_timeout_seconds=1))

    assert time.monotonic() - started < 15
    assert run.summary["exit_code"] == 0, run.output
    (_, timed_out, error1), (_, too_long, error2) = tool_messages(
        run.calls("backend-dev:A")[1])
    assert error1 and "timed out after 1 s" in timed_out
    assert error2 and "timeout_seconds" in too_long
    for marker in ("sleep 300.0911", "sleep 300.0912", "time.sleep(300.0913)"):
        assert wait_until_gone(marker) == [], f"{marker} survived"


def test_commands_reading_the_environment_find_no_keys(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + "K" * 40,
        "OPENAI_API_KEY": "sk-proj-" + "Q1" * 20,
        "GITHUB_TOKEN": "ghp_" + "G" * 36,
        "AWS_SECRET_ACCESS_KEY": "aws/secret/" + "S" * 30,
    }
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    lookups = [
        command("env"),
        command("python", "-c", "import os; print(dict(os.environ))"),
        command("sh", "-c", "echo ${ANTHROPIC_API_KEY:-absent}; tr '\\0' '\\n' "
                            "< /proc/self/environ"),
    ]
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [tool_turn(*lookups), *write_and_finish("a.txt", "A\n")],
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Curious feature")

    assert run.summary["exit_code"] == 0, run.output
    outputs = [text for _, text, _ in tool_messages(run.calls("backend-dev:A")[1])]
    assert len(outputs) == len(lookups) and "PATH" in outputs[0]
    assert "absent" in outputs[2]
    for text in outputs:
        for name, value in keys.items():
            assert value not in text
            assert f"{name}=" not in text


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
@pytest.mark.parametrize("unconfined", [False, True], ids=["sandboxed", "unconfined"])
def test_a_command_cannot_read_the_key_from_the_orchestrators_own_environment(
    project: Path, tmp_path: Path, unconfined: bool
) -> None:
    key = "sk-ant-api03-" + "P" * 40
    grab = "tr '\\0' '\\n' < /proc/$PPID/environ | grep API_KEY > found.txt; true"
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": [tool_turn(command("sh", "-c", grab)), tool_turn(finish_call())],
        "manager:integration": [integration_turn()],
    }}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, str(FILE_BASED), "--project-dir", str(project),
                           "--api-provider", "scripted", "--session", str(session),
                           "--feature", "Prying feature", "--test-command", PASSING_TESTS,
                           "--no-progress",
                           "--config", str(config(tmp_path, unconfined=unconfined))],
                          env={**env, "ANTHROPIC_API_KEY": key},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    found = file_at(project, "feature/prying-feature-agents/backend-dev/A", "found.txt")
    if unconfined:  # the orchestrator's own block is masked
        assert found == "ANTHROPIC_API_KEY=" + "*" * len(key) + "\n"
    else:  # its parent is the sandbox's init, whose environment never held a key
        assert found == ""


HIDDEN = """\
import ctypes, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from agent_team.process import hide_secrets_from_proc
print(hide_secrets_from_proc(), hide_secrets_from_proc())
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
print(os.environ["ANTHROPIC_API_KEY"])
print(libc.getenv(b"ANTHROPIC_API_KEY").decode())
print(subprocess.run(["sh", "-c", "echo $ANTHROPIC_API_KEY"], capture_output=True,
                     text=True).stdout.strip())
print(b"sk-ant" in open("/proc/self/environ", "rb").read())
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_hiding_the_keys_from_proc_keeps_them_for_the_process_and_its_children() -> None:
    key = "sk-ant-api03-" + "H" * 40
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, "-c", HIDDEN, str(FILE_BASED.parent)],
                          env={**env, "ANTHROPIC_API_KEY": key}, capture_output=True, text=True,
                          timeout=30, check=True)
    counts, *rest = done.stdout.splitlines()
    first, second = map(int, counts.split())
    assert first >= 1 and second == 0  # masked once; a second call finds nothing left
    assert rest == [key, key, key, "False"]


# -- deleting the worktree ---------------------------------------------------------------------


def rm_turns(how: str, worktree: Path) -> list[dict[str, Any]]:
    argv = {
        "dot": ["rm", "-rf", "."],
        "absolute": ["rm", "-rf", str(worktree)],
        "contents": ["sh", "-c", "rm -rf ./* ./.[!.]*"],
    }[how]
    return [
        tool_turn(write_call("a.txt", "first draft\n")),
        tool_turn(command(*argv)),
        tool_turn(write_call("after.txt", "written after the deletion\n"), command("ls")),
        tool_turn(finish_call(summary="All done, honestly.")),
    ]


@pytest.mark.parametrize("how", ["dot", "absolute", "contents"])
def test_rm_rf_of_its_own_worktree_fails_only_that_task_and_touches_nothing_else(
    project: Path, how: str, tmp_path: Path
) -> None:
    """Unconfined: in the sandbox the worktree and its .git file are mount points rm cannot
    remove (tests/test_attacks.py)."""
    dirty_the_checkout(project)
    before = preserve(project)
    worktree = worktree_of(project, "removal-feature", "A")
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                    task("C", "qa-tester", ["A"])])],
        "backend-dev:A": rm_turns(how, worktree),
        "frontend-dev:B": write_and_finish("b.txt", "B\n", delay=0.3),
        "qa-tester:C": write_and_finish("c.txt", "C\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Removal feature",
                           config_path=config(tmp_path, unconfined=True))

    state = assert_state_valid(project)
    tasks = tasks_by_id(state)
    feature = "feature/removal-feature"
    assert tasks["B"]["status"] == "completed"
    assert file_at(project, feature, "b.txt") == "B\n"
    assert_nothing_lost(project, before)
    if how == "dot":  # rm refuses to remove "." at all: the task simply goes on
        assert run.summary["exit_code"] == 0, run.output
        assert file_at(project, feature, "after.txt") == "written after the deletion\n"
        return
    assert run.summary["exit_code"] == 1
    assert tasks["A"]["status"] == "failed"
    assert "was deleted while the agent worked" in tasks["A"]["error"]
    assert tasks["C"]["status"] == "blocked"
    after_results = tool_messages(run.calls("backend-dev:A")[-1])[-2:]
    if how == "absolute":  # nothing re-creates the directory
        assert all(is_error and "no longer exists" in text for _, text, is_error in after_results)
        assert not worktree.exists()
    else:  # the directory is there but no worktree: its new file is kept, never committed
        assert (worktree / "after.txt").read_text() == "written after the deletion\n"
    assert file_at(project, f"{feature}-agents/backend-dev/A", "after.txt") is None

    resumed = FileBasedOrchestrator(project, model=ScriptedModel({
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "qa-tester:C": write_and_finish("c.txt", "C\n"),
        "manager:integration": [integration_turn()],
    }), test_command=PASSING_TESTS, output=lambda _: None).resume()

    assert resumed["exit_code"] == 0
    assert file_at(project, feature, "a.txt") == "A\n"
    if how == "contents":
        (aside,) = worktree.parent.glob("A.orphaned-*")
        assert (aside / "after.txt").read_text() == "written after the deletion\n"
    assert_nothing_lost(project, before)


def test_rm_rf_of_the_shared_worktree_stops_the_simple_orchestrator_clearly(
    project: Path, tmp_path: Path
) -> None:
    """Unconfined, as above."""
    dirty_the_checkout(project)
    before = preserve(project)
    worktree = project / ".ai-agents" / "worktrees" / "removal-feature" / "feature"
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "qa-tester:B": rm_turns("absolute", worktree),
    }

    with pytest.raises(GitError, match="was deleted while B ran"):
        run_orchestrator(SimpleOrchestrator, project, agents, "Removal feature",
                         config_path=config(tmp_path, unconfined=True))

    state = assert_state_valid(project)
    assert state["current_feature"]["status"] == "failed"
    assert "was deleted while B ran" in state["current_feature"]["stop_reason"]
    assert file_at(project, "feature/removal-feature", "a.txt") == "A\n"
    assert_nothing_lost(project, before)


# -- the state file ----------------------------------------------------------------------------


TAMPERING = {
    "garbage": "open(PATH, 'w').write('{\"tasks\": ')",
    "valid-edit": ("import json; s = json.load(open(PATH)); "
                   "[t.update(status='completed') for t in s['tasks']]; "
                   "json.dump(s, open(PATH, 'w'))"),
    "deleted": "import os; os.remove(PATH)",
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_an_agent_changing_the_state_file_stops_the_run_and_loses_nothing(
    project: Path, how: str, tmp_path: Path
) -> None:
    """Unconfined: in the sandbox the state file is read-only (tests/test_attacks.py)."""
    before = preserve(project)
    path = state_path(project)
    code = TAMPERING[how].replace("PATH", repr(str(path)))
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev", ["A"])])],
        "backend-dev:A": [
            tool_turn(write_call("a.txt", "A\n"),
                      write_call(".ai-agents/state/team-communication.json", "{}"),
                      ("edit_file", {"path": "../../../../state/team-communication.json",
                                     "old": "pending", "new": "completed"})),
            tool_turn(command("python", "-c", code)),
            tool_turn(finish_call()),
        ],
    }

    message = "deleted" if how == "deleted" else "changed"
    with pytest.raises(StateError, match=f"was {message} by something other than this run"):
        run_orchestrator(FileBasedOrchestrator, project, agents, "Tampered feature",
                         config_path=config(tmp_path, unconfined=True))

    if how == "deleted":
        assert not path.exists()
    else:
        (changed,) = path.parent.glob("team-communication.json.changed-*")
        assert changed.read_bytes() == path.read_bytes()  # kept, never overwritten
    (last_good,) = path.parent.glob("team-communication.json.last-good-*")
    saved = TeamState(last_good).read()
    assert tasks_by_id(saved)["A"]["status"] == "in_progress"
    branch = "feature/tampered-feature-agents/backend-dev/A"
    assert file_at(project, branch, "a.txt") == "A\n"  # the agent's work is committed
    assert "feature/tampered-feature-agents/frontend-dev/B" not in git(project, "branch")
    assert_nothing_lost(project, before)

    shutil.copyfile(last_good, path)
    resumed = FileBasedOrchestrator(project, model=ScriptedModel({
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "frontend-dev:B": write_and_finish("b.txt", "B\n"),
        "manager:integration": [integration_turn()],
    }), test_command=PASSING_TESTS, output=lambda _: None).resume()
    assert resumed["exit_code"] == 0
    state = assert_state_valid(project)
    # The stopped run could not record its end in the refused file: resuming says so.
    assert [r["status"] for r in state["runs"]] == ["crashed", "completed"]
    assert file_at(project, "feature/tampered-feature", "b.txt") == "B\n"
    assert_nothing_lost(project, before)


# -- an agent that never finishes --------------------------------------------------------------


def test_an_agent_that_never_calls_finish_task_fails_its_task_and_keeps_its_work(
    project: Path, tmp_path: Path
) -> None:
    before = preserve(project)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"]),
                                    task("C", "frontend-dev")])],
        "backend-dev:A": [tool_turn(write_call("a.txt", "half done\n")),
                          tool_turn(read_call("a.txt")),
                          tool_turn(read_call("README.md"))],
        "frontend-dev:C": write_and_finish("c.txt", "C\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Endless feature",
                           config_path=config(tmp_path, max_iterations=3))

    assert run.summary["exit_code"] == 1
    run.model.assert_complete()
    tasks = tasks_by_id(assert_state_valid(project))
    assert tasks["A"]["status"] == "failed"
    assert "all 3 turns without calling finish_task" in tasks["A"]["error"]
    branch = "feature/endless-feature-agents/backend-dev/A"
    assert tasks["A"]["commit"] == git(project, "rev-parse", branch).strip()
    assert file_at(project, branch, "a.txt") == "half done\n"
    assert tasks["B"]["status"] == "blocked" and tasks["C"]["status"] == "completed"
    assert file_at(project, "feature/endless-feature", "c.txt") == "C\n"
    assert_nothing_lost(project, before)
