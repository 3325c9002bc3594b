"""Process faults: SIGKILL in every phase then --resume, a full disk under the state file, a
state file corrupted by hand before and during a run, and two orchestrators at once.

Every case ends with the state file valid (or, when it was corrupted, untouched and copied
aside), every ref and commit that existed still reachable, and a message that says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import StateError
from agent_team.scripted import ScriptedModel
from agent_team.state import TeamState
from agent_team.state_journal import JournalWriter
from agent_team.state_schema import new_state
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    PASSING_TESTS,
    assert_nothing_lost,
    assert_state_valid,
    branches,
    clean_env,
    cli_args,
    file_at,
    finish_call,
    git,
    integration_turn,
    plan_turn,
    preserve,
    read_call,
    read_json,
    state_path,
    task,
    tasks_by_id,
    tool_turn,
    write_and_finish,
    write_call,
    write_session,
)

BASE_FILES = {"README.md": "# project\n", "app.txt": "greeting = hello\n"}
FEATURE = "Greeting feature"
MERGED = "greeting = hi from X and Y\n"
PHASES = ("planning", "mid-task", "mid-commit", "mid-merge", "mid-integration")

#: The project's test command: says it started, and is slow only while the flag file exists.
TEST_SCRIPT = """\
import pathlib, sys, time
here = pathlib.Path(sys.argv[1])
(here / "started").touch()
if (here / "slow").exists():
    time.sleep(2)
print("1 passed, 0 failed")
"""


def team(slow: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """X and Y both rewrite app.txt (Y merges second and conflicts), Z builds on both.

    `slow` makes one phase take seconds, long enough to be killed in.
    """
    def pause(phase: str) -> float:
        return 3.0 if slow == phase or (slow, phase) == ("mid-commit", "mid-task") else 0.0

    return {
        "manager:plan": [plan_turn([task("X", "backend-dev"), task("Y", "frontend-dev"),
                                    task("Z", "qa-tester", ["X", "Y"])],
                                   delay=pause("planning"))],
        "backend-dev:X": [tool_turn(write_call("app.txt", "greeting = hi from X\n"), delay=0.5),
                          tool_turn(finish_call())],
        "frontend-dev:Y": [tool_turn(write_call("app.txt", "greeting = hi from Y\n"), delay=1.2),
                           tool_turn(finish_call())],
        "manager:merge": [tool_turn(read_call("app.txt")),
                          tool_turn(write_call("app.txt", MERGED), delay=pause("mid-merge")),
                          tool_turn(finish_call(summary="Kept both greetings."))],
        "qa-tester:Z": [tool_turn(write_call("z.txt", "Z\n")),
                        tool_turn(finish_call(), delay=pause("mid-task"))],
        "manager:integration": [integration_turn()],
    }


def unconfined(tmp_path: Path) -> Path:
    """A config without the sandbox: the test command signals through files outside the
    worktree (the kill points), which the sandbox would rightly refuse."""
    path = tmp_path / "unconfined.json"
    path.write_text(json.dumps({"sandbox": {"enabled": False}}), encoding="utf-8")
    return path


def project_test_command(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "project_tests.py"
    script.write_text(TEST_SCRIPT, encoding="utf-8")
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return f"python {script} {markers}", markers


def tree(project: Path, ref: str) -> str:
    return git(project, "rev-parse", f"{ref}^{{tree}}").strip()


@pytest.fixture(scope="module")
def reference_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The feature tree of an uninterrupted run of the same team."""
    base = tmp_path_factory.mktemp("reference")
    make_repo(base / "project", BASE_FILES)
    command, _ = project_test_command(base)
    summary = FileBasedOrchestrator(base / "project", model=ScriptedModel(team()),
                                    test_command=command, output=lambda _: None,
                                    config_path=unconfined(base)).run(FEATURE)
    assert summary["exit_code"] == 0
    merges = TeamState.for_project(base / "project").read()["integration"]["merges"]
    assert sorted(m["status"] for m in merges) == ["conflict_resolved", "merged", "merged"]
    return tree(base / "project", summary["feature_branch"])


def kill_point(phase: str, project: Path, markers: Path) -> Callable[[], bool]:
    """When the running orchestrator is inside `phase`."""
    state = state_path(project)
    worktrees = project / ".ai-agents" / "worktrees" / "greeting-feature"

    def planning() -> bool:
        data = read_json(state)
        return bool(data and (data.get("current_feature") or {}).get("status") == "planning")

    def merging() -> bool:
        return any((project / ".git" / "worktrees").glob("*/MERGE_HEAD"))

    return {
        "planning": planning,
        "mid-task": lambda: (worktrees / "tasks" / "Z" / "z.txt").exists(),
        "mid-commit": lambda: (worktrees / "tasks" / "Z" / "z.txt").exists(),
        "mid-merge": merging,
        "mid-integration": lambda: (markers / "started").exists(),
    }[phase]


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_each_phase_then_resume_reaches_the_uninterrupted_tree(
    tmp_path: Path, phase: str, reference_tree: str
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    before = preserve(project)
    command, markers = project_test_command(tmp_path)
    (markers / "slow").touch()
    killed_session = write_session(tmp_path / "killed.json", team(slow=phase), FEATURE)
    process = subprocess.Popen(
        [*cli_args(project, killed_session, "--test-command", command,
                   "--config", str(unconfined(tmp_path))), "--feature", FEATURE],
        env=clean_env(), start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    reached = kill_point(phase, project, markers)
    deadline = time.monotonic() + 60
    try:
        while not reached():
            assert process.poll() is None, f"the run ended before {phase}"
            assert time.monotonic() < deadline, f"the run never reached {phase}"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    killed = assert_state_valid(project)
    assert killed["runs"][-1]["status"] == "running"
    if phase == "mid-commit":  # as if killed inside `git add`: every worktree's index locked
        for admin in (project / ".git" / "worktrees").iterdir():
            (admin / "index.lock").touch()
    snapshot = assert_nothing_lost(project, before)
    (markers / "slow").unlink()
    resume_session = write_session(tmp_path / "resume.json", team(), FEATURE)
    resumed = subprocess.run([*cli_args(project, resume_session, "--test-command", command,
                                        "--config", str(unconfined(tmp_path))),
                              "--resume"], env=clean_env(), capture_output=True, text=True,
                             timeout=120)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming feature/greeting-feature" in resumed.stdout
    state = assert_state_valid(project)
    assert state["current_feature"]["status"] == "completed"
    assert [r["status"] for r in state["runs"]] == ["crashed", "completed"]
    merges = sorted(m["status"] for m in state["integration"]["merges"])
    assert merges == ["conflict_resolved", "merged", "merged"]  # each merge exactly once
    assert tree(project, "feature/greeting-feature") == reference_tree
    assert file_at(project, "feature/greeting-feature", "app.txt") == MERGED
    assert_nothing_lost(project, snapshot)


# -- a full disk -------------------------------------------------------------------------------


class FullDisk:
    """os.replace onto the state file fails with ENOSPC once armed: once, or every time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, always: bool) -> None:
        self.always = always
        self.armed = threading.Event()
        self.on_disk_then: list[bytes] = []
        self._real = os.replace
        self._append = JournalWriter.append
        monkeypatch.setattr(os, "replace", self.replace)
        monkeypatch.setattr(JournalWriter, "append",
                            lambda writer, entry: self.append(writer, entry))

    def append(self, writer: JournalWriter, entry: Any) -> int:
        """A run's small changes go to the journal: the disk is just as full there."""
        state = writer.path.with_name("team-communication.json")
        if self.armed.is_set() and (self.always or not self.on_disk_then):
            self.on_disk_then.append(state.read_bytes())
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(writer.path))
        return self._append(writer, entry)

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        target = Path(dst)
        if self.armed.is_set() and target.name == "team-communication.json" and (
            self.always or not self.on_disk_then
        ):
            self.on_disk_then.append(target.read_bytes())
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        self._real(src, dst, *args, **kwargs)


def two_tasks() -> dict[str, list[dict[str, Any]]]:
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "qa-tester:B": write_and_finish("b.txt", "B\n"),
        "manager:integration": [integration_turn()],
    }


def resume(project: Path, agents: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return FileBasedOrchestrator(project, model=ScriptedModel(agents), test_command=PASSING_TESTS,
                                 output=lambda _: None).resume()


@pytest.mark.parametrize("always", [False, True], ids=["once", "always"])
def test_disk_full_on_a_state_write_keeps_the_old_file_and_stops_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, always: bool
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    before = preserve(project)
    disk = FullDisk(monkeypatch, always=always)

    class FullWhileMerging(FileBasedOrchestrator):
        def merge_task(self, task: dict[str, Any], branch: str) -> dict[str, Any]:
            disk.armed.set()  # the merge's own record is the write that fails
            return super().merge_task(task, branch)

    lines: list[str] = []
    runner = FullWhileMerging(project, model=ScriptedModel(two_tasks()),
                              test_command=PASSING_TESTS, output=lines.append)
    with pytest.raises(StateError, match="No space left on device.*previous file was left"):
        runner.run("Disk feature")

    path = state_path(project)
    assert not list(path.parent.glob(".team-communication.json.*.tmp"))
    state = assert_state_valid(project)
    assert tasks_by_id(state)["A"]["status"] == "in_progress"  # its merge never got recorded
    assert "qa-tester" not in git(project, "branch")  # B never started
    assert file_at(project, "feature/disk-feature", "a.txt") == "A\n"  # the merge is in git
    if always:  # nothing could be written after the first failure: the old file is intact
        assert path.read_bytes() == disk.on_disk_then[0]
        assert len(disk.on_disk_then) == 2  # the failed run's record was tried once more
    else:
        assert state["current_feature"]["status"] == "failed"
        assert "No space left on device" in state["current_feature"]["stop_reason"]
    snapshot = assert_nothing_lost(project, before)

    disk.armed.clear()
    summary = resume(project, {"qa-tester:B": write_and_finish("b.txt", "B\n"),
                               "manager:integration": [integration_turn()]})
    assert summary["exit_code"] == 0
    assert file_at(project, "feature/disk-feature", "b.txt") == "B\n"
    assert_nothing_lost(project, snapshot)


# -- a state file corrupted by hand ------------------------------------------------------------


def corrupted(kind: str) -> bytes:
    state = new_state("project")
    if kind == "schema":
        state["tasks"] = "not a list"
    if kind == "future-version":
        state["schema_version"] = 99
    text = json.dumps(state, indent=2).encode()
    return {"not-json": b"{ this is not json", "truncated": text[: len(text) // 2],
            "schema": text, "future-version": text}[kind]


@pytest.mark.parametrize("kind", ["not-json", "truncated", "schema", "future-version"])
def test_a_state_file_corrupted_before_the_run_is_refused_never_overwritten_and_kept(
    tmp_path: Path, kind: str
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    path = state_path(project)
    path.parent.mkdir(parents=True)
    broken = corrupted(kind)
    path.write_bytes(broken)
    before = preserve(project)
    session = write_session(tmp_path / "session.json", two_tasks(), "Corrupt feature")
    base = ["--project-dir", str(project), "--api-provider", "scripted", "--session",
            str(session), "--no-progress"]

    for extra in (["--feature", "Corrupt feature"], ["--resume"]):
        result = CliRunner().invoke(main, [*base, *extra], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert str(path) in result.stderr and "Traceback" not in result.output
        assert path.read_bytes() == broken

    if kind == "future-version":
        assert "schema_version 99 is not one this agent_team can read" in result.stderr
    else:
        (backup,) = path.parent.glob("team-communication.json.corrupt-*")
        assert backup.read_bytes() == broken
        assert f"a copy is at {backup}" in result.stderr
    if kind == "schema":
        assert "$.tasks" in result.stderr
    assert "feature/corrupt-feature" not in branches(project)
    assert_nothing_lost(project, before)


def test_a_state_file_corrupted_by_hand_during_a_run_stops_it_at_the_next_write(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    before = preserve(project)
    path = state_path(project)
    garbage = b'{"schema_version": 1, "tasks": ['

    class UserEditsTheState(FileBasedOrchestrator):
        def merge_task(self, task: dict[str, Any], branch: str) -> dict[str, Any]:
            path.write_bytes(garbage)
            return super().merge_task(task, branch)

    runner = UserEditsTheState(project, model=ScriptedModel(two_tasks()),
                               test_command=PASSING_TESTS, output=lambda _: None)
    with pytest.raises(StateError, match="changed by something other than this run") as caught:
        runner.run("Edited feature")

    assert path.read_bytes() == garbage
    (changed,) = path.parent.glob("team-communication.json.changed-*")
    (last_good,) = path.parent.glob("team-communication.json.last-good-*")
    assert changed.read_bytes() == garbage
    assert str(last_good) in str(caught.value) and "--resume" in str(caught.value)
    assert tasks_by_id(TeamState(last_good).read())["A"]["status"] == "in_progress"
    assert file_at(project, "feature/edited-feature", "a.txt") == "A\n"
    assert "qa-tester" not in git(project, "branch")
    assert_nothing_lost(project, before)


# -- two orchestrators at once -----------------------------------------------------------------


@pytest.mark.slow
def test_a_second_orchestrator_is_refused_with_exit_2_and_the_first_is_unaffected(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    make_repo(project, BASE_FILES)
    before = preserve(project)
    first_session = write_session(tmp_path / "first.json", {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        # Long enough for two more interpreters to start and be refused on a loaded machine.
        "backend-dev:A": write_and_finish("a.txt", "A\n", delay=4),
        "manager:integration": [integration_turn()],
    }, "First feature")
    first = subprocess.Popen(
        [*cli_args(project, first_session, "--test-command", PASSING_TESTS), "--feature",
         "First feature"], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 30
    while (read_json(state_path(project)) or {}).get("tasks") in (None, []):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second_session = write_session(tmp_path / "second.json", two_tasks(), "Second feature")
    refused = [
        subprocess.run([*cli_args(project, second_session), *extra], env=clean_env(),
                       capture_output=True, text=True, timeout=60)
        for extra in (["--feature", "Second feature"], ["--resume"])
    ]
    out, err = first.communicate(timeout=60)

    for result in refused:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Another orchestrator is already running" in result.stderr
        assert "Traceback" not in result.stderr
    assert first.returncode == 0, out + err
    state = assert_state_valid(project)
    assert state["current_feature"]["title"] == "First feature"
    assert state["current_feature"]["status"] == "completed"
    assert [r["status"] for r in state["runs"]] == ["completed"]
    assert "feature/second-feature" not in branches(project)
    assert file_at(project, "feature/first-feature", "a.txt") == "A\n"
    assert_nothing_lost(project, before)
