"""Attacks by scripted agents, through the real tools and real orchestrator runs on real repos.

Each test is one attack from the list in the README's reliability section. Where the sandbox
stops an attack at once, the "unconfined" variant (`sandbox.enabled: false`) shows the second
line of defence: the git guard and the integrity checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import IntegrityError, ToolError
from agent_team.git_workspace import GitWorkspace
from agent_team.integrity import move_branch
from agent_team.sanitize import for_markdown_pr, for_terminal
from agent_team.tools import Workspace, edit_file, write_file
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo, wait_until_gone
from tests.orchestration_helpers import (
    FAILING_TESTS,
    assert_nothing_lost,
    file_at,
    finish_call,
    git,
    integration_turn,
    plan_turn,
    preserve,
    run_orchestrator,
    state_path,
    task,
    tasks_by_id,
    tool_messages,
    tool_turn,
    write_and_finish,
    write_call,
)

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

KEY = "sk-ant-api03-" + "A" * 40
FEATURE = "feature/attack"
TASK_BRANCH = "feature/attack-agents/backend-dev/A"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", {"README.md": "# project\n", "app.txt": "hello\n"})
    return (tmp_path / "project").resolve()


def config(tmp_path: Path, *, unconfined: bool = False) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sandbox": {"enabled": not unconfined}}), encoding="utf-8")
    return path


def command(*argv: str) -> tuple[str, dict[str, Any]]:
    return ("run_command", {"argv": list(argv)})


def one_task(*turns: dict[str, Any], description: str = "Do the work") -> dict[str, Any]:
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev", description=description)])],
        "backend-dev:A": [*turns, tool_turn(write_call("a.txt", "A\n")), tool_turn(finish_call())],
        "manager:integration": [integration_turn()],
    }


def attack(project: Path, tmp_path: Path, *calls: tuple[str, dict[str, Any]],
           unconfined: bool = False) -> Any:
    return run_orchestrator(FileBasedOrchestrator, project, one_task(tool_turn(*calls)),
                            "Attack", config_path=config(tmp_path, unconfined=unconfined))


def outputs(run: Any) -> list[str]:
    return [text for _, text, _ in tool_messages(run.calls("backend-dev:A")[1])]


# -- git configuration: hooks and filters -------------------------------------------------


EVIL = "#!/bin/sh\necho pwned > {marker}\nenv > {marker}.env\n"


def plant_hook_dir(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    hooks = tmp_path / "evil-hooks"
    hooks.mkdir()
    for name in ("pre-commit", "post-commit", "pre-merge-commit", "post-merge"):
        (hooks / name).write_text(EVIL.format(marker=marker))
        (hooks / name).chmod(0o755)
    return hooks, marker


@pytest.mark.parametrize("unconfined", [False, True], ids=["sandboxed", "unconfined"])
def test_core_hooks_path_set_by_an_agent_never_runs(
    project: Path, tmp_path: Path, unconfined: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    hooks, marker = plant_hook_dir(tmp_path)
    config_before = (project / ".git" / "config").read_bytes()
    run = attack(project, tmp_path, command("git", "config", "core.hooksPath", str(hooks)),
                 unconfined=unconfined)
    assert not marker.exists(), "the agent's hook ran"
    assert (project / ".git" / "config").read_bytes() == config_before
    state = tasks_by_id(json.loads(state_path(project).read_text()))
    if unconfined:  # the change was found, undone, and the task failed loudly
        assert state["A"]["status"] == "failed"
        assert "was changed during the run" in state["A"]["error"]
        assert run.summary["exit_code"] == 1
    else:  # git could not even write it
        assert "Read-only file system" in outputs(run)[0]
        assert run.summary["exit_code"] == 0


@pytest.mark.parametrize("unconfined", [False, True], ids=["sandboxed", "unconfined"])
def test_a_gitattributes_filter_never_runs_in_the_orchestrators_git_add(
    project: Path, tmp_path: Path, unconfined: bool
) -> None:
    marker = tmp_path / "filtered"
    run = attack(
        project, tmp_path,
        write_call(".gitattributes", "* filter=evil\n"),
        command("git", "config", "filter.evil.clean", f"sh -c 'echo pwned > {marker}; cat'"),
        unconfined=unconfined,
    )
    assert not marker.exists(), "the agent's filter ran"
    assert "filter.evil" not in (project / ".git" / "config").read_text()
    assert run.summary["exit_code"] == (1 if unconfined else 0)


def test_git_config_global_does_not_reach_the_users_config(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Owner\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    hooks, marker = plant_hook_dir(tmp_path)
    run = attack(project, tmp_path, command(
        "sh", "-c", f"git config --global core.hooksPath {hooks} && cat $HOME/.gitconfig"))
    assert run.summary["exit_code"] == 0, run.output
    assert (home / ".gitconfig").read_text() == "[user]\n\tname = Owner\n"
    assert "hooksPath" in outputs(run)[0]  # it went to the sandbox's private HOME
    assert not marker.exists()


def test_the_users_own_hooks_run_on_agents_commits_inside_the_sandbox(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    escaped = tmp_path / "hook-escaped"
    hook = project / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\n"
                    f"echo x > {escaped}\n"
                    "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q sk-ant && exit 1\n"
                    "git diff --cached --name-only | grep -q forbidden && "
                    "{ echo 'hook: forbidden file'; exit 1; }\nexit 0\n")
    hook.chmod(0o755)
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "frontend-dev:B": write_and_finish("forbidden.txt", "no\n"),
        "manager:integration": [integration_turn()],
    }
    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Attack")
    tasks = tasks_by_id(json.loads(state_path(project).read_text()))
    assert tasks["A"]["status"] == "completed"  # the hook ran, saw no key, and passed
    assert tasks["B"]["status"] == "failed" and "hook: forbidden file" in tasks["B"]["error"]
    assert not escaped.exists()  # it ran confined
    assert run.summary["exit_code"] == 1


# -- branches, worktrees and the user's checkout ------------------------------------------


@pytest.mark.parametrize("how", ["checkout-b", "update-ref", "gitdir"])
def test_git_moves_by_an_unconfined_agent_fail_the_task_and_lose_no_commit(
    project: Path, tmp_path: Path, how: str
) -> None:
    before = preserve(project)
    calls = {
        "checkout-b": [command("git", "checkout", "-q", "-b", "other")],
        "update-ref": [command("git", "update-ref", f"refs/heads/{TASK_BRANCH}", "HEAD~0"),
                       command("git", "commit", "-q", "--allow-empty", "-m", "sneaky"),
                       command("git", "update-ref", f"refs/heads/{FEATURE}", "HEAD")],
        "gitdir": [command("sh", "-c", "echo gitdir: $(git rev-parse --git-common-dir)/"
                                       "worktrees/integration > .git")],
    }[how]
    run = attack(project, tmp_path, *calls, unconfined=True)
    tasks = tasks_by_id(json.loads(state_path(project).read_text()))
    assert run.summary["exit_code"] == 1
    assert tasks["A"]["status"] == "failed"
    assert "Integrity check failed" in tasks["A"]["error"]
    assert file_at(project, FEATURE, "a.txt") is None  # nothing unchecked was merged
    assert_nothing_lost(project, before)


def test_git_moves_in_the_sandbox_are_refused(project: Path, tmp_path: Path) -> None:
    before = preserve(project)
    run = attack(
        project, tmp_path,
        command("git", "checkout", "-q", "-b", "other"),
        command("git", "update-ref", f"refs/heads/{FEATURE}", "HEAD"),
        command("sh", "-c", "echo gitdir: /tmp > .git"),
        command("git", "-C", str(project), "commit", "-q", "-a", "--allow-empty", "-m", "x"),
        command("rm", "-rf", "."),
        command("sh", "-c", f"echo '{{}}' > {state_path(project)}"),
    )
    assert run.summary["exit_code"] == 0, run.output
    assert all("exit code 0" not in text for text in outputs(run)), outputs(run)
    assert file_at(project, FEATURE, "a.txt") == "A\n"
    assert_nothing_lost(project, before)


def test_move_branch_is_compare_and_swap_and_forward_only(project: Path) -> None:
    workspace = GitWorkspace(project)
    base = workspace.head_commit()
    workspace.create_branch("feature/x", base)
    git(project, "commit", "-q", "--allow-empty", "-m", "next")
    ahead = workspace.head_commit()
    with pytest.raises(IntegrityError, match="expected"):
        move_branch(workspace, "feature/x", ahead, expected_old=ahead)  # stale expectation
    move_branch(workspace, "feature/x", ahead, expected_old=base)
    with pytest.raises(IntegrityError, match="drop commits"):
        move_branch(workspace, "feature/x", base, expected_old=ahead)  # backwards
    assert workspace.head_commit("feature/x") == ahead


# -- processes and the environment --------------------------------------------------------


def test_keys_are_nowhere_a_command_can_look(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    monkeypatch.setenv("GITHUB_ENV", str(github_env))
    run = attack(
        project, tmp_path,
        command("sh", "-c", "cat /proc/*/environ | tr '\\0' '\\n'; env; "
                            "cat /proc/$PPID/environ; ls /proc"),
        command("sh", "-c", 'echo EVIL=1 >> "${GITHUB_ENV:-/dev/null}"; '
                            f"echo EVIL=1 >> {github_env}"),
    )
    assert run.summary["exit_code"] == 0, run.output
    assert all(KEY not in text and "sk-ant" not in text for text in outputs(run))
    assert github_env.read_text() == ""


def test_a_daemon_started_by_an_agent_does_not_outlive_its_command(
    project: Path, tmp_path: Path
) -> None:
    run = attack(project, tmp_path,
                 command("sh", "-c", "(setsid sleep 300.4141 > /dev/null 2>&1 &); echo bye"))
    assert run.summary["exit_code"] == 0
    assert wait_until_gone("sleep 300.4141") == []


# -- file tools -----------------------------------------------------------------------------


def test_a_hard_link_to_an_outside_file_is_neither_written_nor_read(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    os.link(outside, root / "linked.txt")
    workspace = Workspace(root)
    with pytest.raises(ToolError, match="hard links"):
        write_file(workspace, "linked.txt", "overwritten\n")
    with pytest.raises(ToolError, match="hard links"):
        edit_file(workspace, "linked.txt", "secret", "public")
    assert outside.read_text() == "secret\n"


def test_a_directory_flipped_to_a_symlink_during_writes_never_lets_one_escape(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = Workspace(root)
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(root), str(outside)],
                               stdout=subprocess.PIPE, text=True)
    written = refused = 0
    try:
        while not (root / "sub.real").exists() and flipper.poll() is None:
            pass  # the flipper has started
        for number in range(4000):
            try:
                write_file(workspace, f"sub/f{number % 7}.txt", f"{number}\n")
                written += 1
            except ToolError:
                refused += 1
    finally:
        (root / "stop").write_text("")
        flips = int(flipper.communicate(timeout=30)[0])
    assert flips >= 100 and written > 0 and refused > 0, (flips, written, refused)
    assert list(outside.iterdir()) == [], "a write followed the link outside"


FLIPPER = """
import os, shutil, sys
root, outside = sys.argv[1], sys.argv[2]
sub, real = os.path.join(root, "sub"), os.path.join(root, "sub.real")
flips = 0
while not os.path.exists(os.path.join(root, "stop")):
    try:
        if not os.path.exists(real):
            os.rename(sub, real)
        if os.path.isdir(sub) and not os.path.islink(sub):  # re-created by a write
            shutil.rmtree(sub)
        os.symlink(outside, sub)
        os.unlink(sub)
        os.rename(real, sub)
        flips += 1
    except OSError:
        pass
print(flips)
"""


# -- output -----------------------------------------------------------------------------------


HOSTILE_TEXT = "Add \x1b[2J\x1b]0;owned\x07login\r\nStatus: SUCCESS - ready to review\x9b31m"


def test_escape_sequences_and_forged_lines_in_plan_text_never_reach_the_terminal(
    project: Path, tmp_path: Path
) -> None:
    agents = one_task(description=HOSTILE_TEXT)
    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Attack",
                           test_command=FAILING_TESTS)
    assert run.summary["exit_code"] == 1
    text = "\n".join(run.lines)
    assert "\x1b" not in text and "\x9b" not in text and "\r" not in text
    assert "Status: SUCCESS" not in [line.strip()[:15] for line in run.lines]
    assert [line for line in text.splitlines() if line.startswith("Status:")] == [
        "Status: FAILED"]


def test_closing_keywords_mentions_and_html_in_a_summary_never_reach_the_pr(
    project: Path, tmp_path: Path
) -> None:
    summary = ("Done. Resolves #12, fixes octo/repo#7 and closes "
               "https://github.com/o/r/issues/3. Thanks @octocat <img src=x onerror=alert(1)>")
    agents = {**one_task(), "manager:integration": [integration_turn(summary)]}
    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Attack")
    report = (project / run.summary["reports"]["markdown"]).read_text() if isinstance(
        run.summary.get("reports"), dict) else next(
        (project / ".ai-agents" / "reports").glob("*.md")).read_text()
    assert "Resolves `#12`" in report and "fixes `octo/repo#7`" in report
    assert "closes `https://github.com/o/r/issues/3.`" in report or "closes `https" in report
    assert "`@octocat`" in report and "<img" not in report and "&lt;img" in report


def test_sanitizers_on_their_own() -> None:
    assert for_terminal("a\x1b[31mred\x1b[0m\x07b\u202ec") == "aredbc"
    assert for_terminal("x\r\nStatus: OK", single_line=True) == "x | Status: OK"
    assert for_markdown_pr("Fixes #4 by @me <b>") == "Fixes `#4` by `@me` &lt;b>"
    assert for_markdown_pr("email me@example.com") == "email me@example.com"
