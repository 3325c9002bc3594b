"""Building blocks for the end-to-end orchestrator tests: scripted sessions and git snapshots.

A scripted session is the dict `ScriptedModel` replays: queues keyed `role:task_id`, `role` or
`*`, each a list of turns. The helpers here write those turns the way a real model would send
them (a plan as JSON text, file edits and `finish_task` as tool calls), and read back what the
run really did to the repository and the state file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_team.models import agent_key
from agent_team.scripted import ScriptedCall, ScriptedModel
from agent_team.state import TeamState
from agent_team.state_file import STATE_RELATIVE_PATH
from agent_team.state_schema import validate_state

PASSING_TESTS = "python -c \"print('3 passed, 0 failed')\""
FAILING_TESTS = "python -c \"import sys; print('2 passed, 1 failed'); sys.exit(1)\""


# -- scripted sessions -------------------------------------------------------------------------


def task(
    task_id: str,
    role: str,
    dependencies: Sequence[str] = (),
    *,
    description: str | None = None,
    priority: str = "medium",
) -> dict[str, Any]:
    """One task of a manager plan, in the shape the plan schema asks for."""
    return {
        "task_id": task_id,
        "description": description or f"Work item {task_id} for {role}",
        "assigned_to": role,
        "dependencies": list(dependencies),
        "deliverables": [f"{task_id.lower()}.txt"],
        "priority": priority,
    }


def plan_turn(tasks: Iterable[Mapping[str, Any]], decisions: Sequence[Mapping[str, Any]] = (),
              *, delay: float = 0) -> dict[str, Any]:
    """The manager's planning reply: the plan as JSON text."""
    turn: dict[str, Any] = {"text": json.dumps({"tasks": list(tasks),
                                                "decisions": list(decisions)})}
    if delay:
        turn["delay"] = delay
    return turn


def tool_turn(*calls: tuple[str, dict[str, Any]], delay: float = 0,
              text: str = "") -> dict[str, Any]:
    """One model reply carrying tool calls, each given as (name, arguments)."""
    turn: dict[str, Any] = {
        "text": text,
        "tool_calls": [{"name": name, "arguments": args} for name, args in calls],
    }
    if delay:
        turn["delay"] = delay
    return turn


def write_call(path: str, content: str) -> tuple[str, dict[str, Any]]:
    return ("write_file", {"path": path, "content": content})


def read_call(path: str) -> tuple[str, dict[str, Any]]:
    return ("read_file", {"path": path})


def finish_call(status: str = "completed", summary: str | None = None,
                blockers: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    return ("finish_task", {
        "status": status,
        "summary": summary or f"Task ended with status {status}.",
        "completed_items": [],
        "blockers": list(blockers),
        "notes": "",
    })


def write_and_finish(path: str, content: str, *, delay: float = 0) -> list[dict[str, Any]]:
    """Two turns: write one file, then report the task completed."""
    return [
        tool_turn(write_call(path, content), delay=delay),
        tool_turn(finish_call(summary=f"Wrote {path}.")),
    ]


def integration_turn(summary: str = "All tasks are merged and the tests pass.") -> dict[str, Any]:
    """The manager's integration summary, valid for both orchestrators."""
    return {"text": json.dumps({"summary": summary, "decisions": []})}


def diamond_session() -> dict[str, list[dict[str, Any]]]:
    """A, B in parallel, C after both: each writes its own file; the manager integrates."""
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                    task("C", "qa-tester", ["A", "B"])])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "frontend-dev:B": write_and_finish("b.txt", "B\n"),
        "qa-tester:C": write_and_finish("c.txt", "C\n"),
        "manager:integration": [integration_turn()],
    }


# Ways an agent's task fails, with a phrase of the error the state must record and the
# orchestrator options the mode needs. The failing agent always writes a.txt first.
FAILURE_MODES: dict[str, tuple[list[dict[str, Any]], str, dict[str, Any]]] = {
    "reported": ([tool_turn(write_call("a.txt", "half done\n")),
                  tool_turn(finish_call("failed", "Could not finish.",
                                        ["the schema is undecided"]))],
                 "the schema is undecided", {}),
    "script-exhausted": ([tool_turn(write_call("a.txt", "half done\n"))],
                         "no turn 2", {}),
    "max-turns": ([tool_turn(write_call("a.txt", "half done\n")),
                   tool_turn(read_call("a.txt"))],
                  "all 2 turns", {"max_iterations": 2}),
    "api-error": ([tool_turn(write_call("a.txt", "half done\n")),
                   {"error": {"status": 400, "message": "invalid request body"}}],
                  "invalid request body", {}),
}


def session_dict(agents: Mapping[str, list[dict[str, Any]]], feature: str) -> dict[str, Any]:
    return {"format": "agent-team-session", "version": 1, "feature": feature,
            "agents": dict(agents)}


def write_session(path: Path, agents: Mapping[str, list[dict[str, Any]]],
                  feature: str = "scripted feature") -> Path:
    path.write_text(json.dumps(session_dict(agents, feature), indent=2), encoding="utf-8")
    return path


# -- running an orchestrator -------------------------------------------------------------------


class Run:
    """One finished orchestration: its summary, the scripted model, and the console lines."""

    def __init__(self, summary: dict[str, Any], model: ScriptedModel, lines: list[str],
                 orchestrator: Any) -> None:
        self.summary = summary
        self.model = model
        self.lines = lines
        self.orchestrator = orchestrator

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def calls(self, key: str) -> list[ScriptedCall]:
        return [call for call in self.model.calls if call.key == key]


def run_orchestrator(cls: type, project: Path, agents: Mapping[str, list[dict[str, Any]]],
                     feature: str, **kwargs: Any) -> Run:
    """Run `cls` on `project` with a scripted team, quietly, with a fast passing test command."""
    model = ScriptedModel(dict(agents))
    lines: list[str] = []
    kwargs.setdefault("test_command", PASSING_TESTS)
    orchestrator = cls(project, model=model, output=lines.append, **kwargs)
    summary = orchestrator.run(feature)
    return Run(summary, model, lines, orchestrator)


def span(calls: Sequence[ScriptedCall]) -> tuple[float, float]:
    """When an agent's first request started and its last one finished."""
    return calls[0].started, calls[-1].finished


def tool_results(call: ScriptedCall) -> list[str]:
    """The tool results the model had been sent when it received `call`."""
    return [m.content for m in call.messages if m.role == "tool"]


# -- git and state probes ----------------------------------------------------------------------


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in `repo` and return stdout (never strips meaningful leading spaces)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class RepoSnapshot:
    """Everything a run must leave alone in the user's repository."""

    refs: str
    head: str
    symbolic_head: str
    status: str
    worktrees: str
    state_bytes: bytes | None


def snapshot(repo: Path) -> RepoSnapshot:
    state_path = repo / STATE_RELATIVE_PATH
    return RepoSnapshot(
        refs=git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        head=git(repo, "rev-parse", "HEAD"),
        symbolic_head=git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        status=git(repo, "status", "--porcelain"),
        worktrees=git(repo, "worktree", "list", "--porcelain"),
        state_bytes=state_path.read_bytes() if state_path.exists() else None,
    )


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def worktree_paths(repo: Path) -> list[Path]:
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [Path(line.split(" ", 1)[1]) for line in lines if line.startswith("worktree ")]


def log_subjects(repo: Path, rev_range: str, *extra: str) -> list[tuple[str, str]]:
    """(author name, subject) of each commit in `rev_range`, oldest first."""
    out = git(repo, "log", "--reverse", "--format=%an%x1f%s", *extra, rev_range)
    return [tuple(line.split("\x1f", 1)) for line in out.splitlines()]  # type: ignore[misc]


def file_at(repo: Path, ref: str, path: str) -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{path}"],
                          capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def read_state(repo: Path) -> dict[str, Any]:
    """The state file, read and validated the way any tool would read it."""
    path = repo / STATE_RELATIVE_PATH
    data = TeamState(path).read()
    validate_state(json.loads(path.read_text(encoding="utf-8")), path)
    return data


def tasks_by_id(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in state["tasks"]}


def run_pytest_count(directory: Path) -> tuple[int, int]:
    """(exit code, number of passed tests) of the project's own pytest run in `directory`."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=directory, capture_output=True, text=True, check=False, timeout=120,
    )
    passed = 0
    for line in reversed(done.stdout.splitlines()):
        words = line.replace(",", " ").split()
        if "passed" in words:
            passed = int(words[words.index("passed") - 1])
            break
    return done.returncode, passed


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of],
                          capture_output=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


class Keyed:
    """A model seen as one agent: every call carries that agent's conversation key."""

    def __init__(self, model: Any, role: str | None, task_id: str | None = None) -> None:
        self.model = model
        self.key = agent_key(role, task_id)

    def complete(self, system: str, messages: Any, **options: Any) -> Any:
        return self.model.complete(system, messages, key=self.key, **options)


def keyed(model: Any, role: str | None, task_id: str | None = None) -> Keyed:
    return Keyed(model, role, task_id)


# -- "nothing lost": what the fault, hostile-agent and git-fault suites check --------------------
#
# `preserve(repo)` records what a run must never lose or change in the user's repository: every
# ref, every commit reachable from any ref, HEAD, the index and the bytes of every file in the
# working tree. `assert_nothing_lost` compares a later snapshot with it.

ROOT = Path(__file__).resolve().parents[1]
FILE_BASED = ROOT / "scripts" / "orchestration" / "file_based_orchestrator.py"
SKIPPED = (".git", ".ai-agents")


@dataclass(frozen=True)
class Preserved:
    """What the user's repository held at one moment."""

    refs: dict[str, str]
    commits: frozenset[str]
    head: bytes
    index: bytes | None
    files: dict[str, bytes]


def working_files(repo: Path) -> dict[str, bytes]:
    """Every file of the user's working tree (links by target), outside .git and .ai-agents."""
    found: dict[str, bytes] = {}
    for directory, dirnames, filenames in os.walk(repo):
        here = Path(directory)
        if here == repo:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED]
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            path = here / name
            rel = path.relative_to(repo).as_posix()
            found[rel] = (b"link:" + os.readlink(path).encode() if path.is_symlink()
                          else path.read_bytes())
    return found


def preserve(repo: Path) -> Preserved:
    """Snapshot the repository; the index and HEAD are read before any git command runs."""
    git_dir = repo / ".git"
    index = (git_dir / "index").read_bytes() if (git_dir / "index").exists() else None
    head = (git_dir / "HEAD").read_bytes()
    files = working_files(repo)
    refs = dict(
        line.split(" ", 1)[::-1]
        for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    )
    commits = frozenset(git(repo, "rev-list", "--all").split()) if refs else frozenset()
    return Preserved(refs, commits, head, index, files)


def assert_nothing_lost(repo: Path, before: Preserved, *, checkout: bool = True,
                        refs_fixed: bool = False) -> Preserved:
    """Nothing that existed in `before` is gone; with `checkout`, the user's files are as they were.

    A ref may have moved forward, unless `refs_fixed` (runs that never auto-merge: even a
    fast-forward of a user's branch would be a bug). Returns the new snapshot, so a test can
    chain checks across phases of a run.
    """
    after = preserve(repo)
    for ref, sha in before.refs.items():
        assert ref in after.refs, f"{ref} was deleted (it was at {sha})"
        moved = after.refs[ref]
        assert moved == sha or is_ancestor(repo, sha, moved), (
            f"{ref} moved from {sha} to {moved}, which does not contain it")
    lost = before.commits - after.commits
    assert not lost, f"commits no longer reachable from any ref: {sorted(lost)}"
    if refs_fixed:
        moved_refs = {ref: (sha, after.refs.get(ref)) for ref, sha in before.refs.items()
                      if after.refs.get(ref) != sha}
        assert not moved_refs, f"refs moved by the run: {moved_refs}"
    if checkout:
        assert after.head == before.head, "the user's HEAD changed"
        assert after.index == before.index, "the user's index (.git/index) changed"
        assert after.files == before.files, _files_diff(before.files, after.files)
    return after


def _files_diff(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"the user's working tree changed: {changed}"


def dirty_the_checkout(repo: Path) -> None:
    """Give the user an unstaged edit, a staged file, a deletion and untracked text and bytes."""
    (repo / "app.txt").write_text("greeting = my local edit\n", encoding="utf-8")
    (repo / "staged.txt").write_text("staged by the user\n", encoding="utf-8")
    git(repo, "add", "staged.txt")
    (repo / "README.md").unlink()
    (repo / "notes.bin").write_bytes(b"my notes\x00\xff\xfe\n")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "idea.txt").write_text("untracked idea\n", encoding="utf-8")


def state_path(repo: Path) -> Path:
    return repo / STATE_RELATIVE_PATH


def assert_state_valid(repo: Path) -> dict[str, Any]:
    """The state file parses and validates; returns it."""
    return read_state(repo)


def tool_messages(call: ScriptedCall) -> list[tuple[str, str, bool]]:
    """(tool name, content, is_error) of every tool result the model had been sent."""
    return [(m.name or "", m.content, m.is_error) for m in call.messages if m.role == "tool"]


def cli_args(project: Path, session: Path, *extra: str) -> list[str]:
    """Arguments of the file-based orchestrator's command line for a scripted run."""
    return [sys.executable, str(FILE_BASED), "--project-dir", str(project), "--api-provider",
            "scripted", "--session", str(session), "--no-progress", *extra]


def clean_env() -> dict[str, str]:
    """The environment for orchestrator subprocesses: no keys, no bytecode files."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def read_json(path: Path) -> dict[str, Any] | None:
    """The state file as JSON while another process writes it; None when unreadable yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def new_branches(before: Preserved, after: Preserved) -> list[str]:
    return sorted(ref.removeprefix("refs/heads/") for ref in after.refs
                  if ref.startswith("refs/heads/") and ref not in before.refs)


def write_config(path: Path, **sections: Any) -> Path:
    """An orchestrator-config.json with tiny retry delays, plus the given sections."""
    data: dict[str, Any] = {"retry": {"base_delay_seconds": 0.001, "max_delay_seconds": 0.01,
                                      "retry_after_ceiling_seconds": 0.05}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def contains_any(text: str, needles: Iterable[str]) -> list[str]:
    return [needle for needle in needles if needle in text]
