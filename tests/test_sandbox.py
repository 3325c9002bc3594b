"""The bubblewrap sandbox itself: real bwrap, real processes, real repositories.

Each test runs a command through `run_sandboxed` and checks one property of the sandbox from
the host's side: what it could write, see, reach and leave behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from agent_team.errors import EXIT_BAD_INPUT
from agent_team.models import ToolCall
from agent_team.sandbox import (
    SandboxPolicy,
    SandboxUnavailable,
    require_sandbox,
    run_sandboxed,
    sandbox_environment,
    sandbox_status,
    sandboxed_argv,
)
from agent_team.tools import Workspace, build_toolbox

from tests.conftest import make_repo, wait_until_gone

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

POLICY = SandboxPolicy()
KEY = "sk-ant-api03-" + "Z" * 40


@pytest.fixture
def repo_and_worktree(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    make_repo(repo, {"app.py": "x = 1\n"})
    worktree = tmp_path / "wt"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "task", str(worktree)],
                   check=True)
    return repo, worktree


def sh(script: str, workdir: Path, policy: SandboxPolicy = POLICY) -> tuple[int, str]:
    outcome = run_sandboxed(["sh", "-c", script], workdir=workdir, policy=policy, timeout=30)
    return outcome.exit_code, outcome.output


def test_the_sandbox_works_on_this_machine() -> None:
    status = sandbox_status()
    assert status.available, status.detail
    assert "bubblewrap" in status.detail


def test_only_the_worktree_is_writable_and_git_is_read_only(
    repo_and_worktree: tuple[Path, Path], tmp_path: Path
) -> None:
    repo, worktree = repo_and_worktree
    config_before = (repo / ".git" / "config").read_bytes()
    marker_before = (worktree / ".git").read_bytes()
    code, out = sh(
        "echo made > inside.txt && echo inside-ok;"
        f"echo x > {repo}/outside.txt;"  # under /tmp: lands in the private tmpfs, if anywhere
        f"echo x >> {repo}/.git/config || echo config-refused;"
        "echo 'gitdir: /elsewhere' > .git || echo marker-refused;"
        "git config core.hooksPath /tmp/evil || echo git-config-refused;"
        "git log --oneline | head -1;"
        "touch /etc/agent-was-here || echo etc-refused;"
        "mount -o remount,rw / 2>/dev/null || echo remount-refused",
        worktree,
    )
    for word in ("inside-ok", "config-refused", "marker-refused",
                 "git-config-refused", "initial commit", "etc-refused", "remount-refused"):
        assert word in out, out
    assert (worktree / "inside.txt").read_text() == "made\n"
    assert not (repo / "outside.txt").exists()
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert (worktree / ".git").read_bytes() == marker_before
    assert not Path("/etc/agent-was-here").exists()


def test_tmp_and_home_are_private_and_credentials_hidden(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "neighbour.txt").write_text("private\n")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".netrc").write_text("machine x password hunter2\n")
    argv = sandboxed_argv(
        ["sh", "-c", f"echo HOME=$HOME; ls /tmp; cat {tmp_path}/neighbour.txt;"
                     f"cat {home}/.ssh/id_ed25519; cat {home}/.netrc; echo end"],
        workdir=work, policy=POLICY, environ={"HOME": str(home)},
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env=sandbox_environment(POLICY))
    assert "HOME=/tmp/home" in done.stdout and "end" in done.stdout
    assert "private" not in done.stdout
    assert "PRIVATE KEY" not in done.stdout and "hunter2" not in done.stdout


def test_no_other_process_is_visible_and_no_key_in_any_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("INNOCENT_LOOKING", KEY)  # a key under a harmless name
    monkeypatch.setenv("LC_SMUGGLED", KEY)  # an allowed name holding a key
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    monkeypatch.setenv("GITHUB_PATH", str(tmp_path / "github_path"))
    code, out = sh("ls /proc | grep -c '^[0-9]'; cat /proc/*/environ | tr '\\0' '\\n'; env",
                   tmp_path)
    assert code == 0
    assert int(out.splitlines()[0]) <= 4  # init, sh, and what sh started
    assert KEY not in out and "sk-ant" not in out
    assert "GITHUB_ENV" not in out and "GITHUB_PATH" not in out
    env = sandbox_environment(POLICY)
    assert not {"ANTHROPIC_API_KEY", "INNOCENT_LOOKING", "LC_SMUGGLED", "GITHUB_ENV"} & set(env)


def test_the_network_is_off_unless_allowed(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    probe = (f"import socket; s = socket.socket(); s.settimeout(3)\n"
             f"try:\n s.connect(('127.0.0.1', {port})); print('connected')\n"
             f"except OSError as e: print('refused', e)")
    try:
        off = run_sandboxed([sys.executable, "-c", probe], workdir=tmp_path, policy=POLICY,
                            timeout=30)
        on = run_sandboxed([sys.executable, "-c", probe], workdir=tmp_path,
                           policy=SandboxPolicy(network=True), timeout=30)
    finally:
        server.close()
    assert "refused" in off.output, off.output
    assert "connected" in on.output, on.output


def test_a_double_forked_daemon_dies_with_the_command(tmp_path: Path) -> None:
    code, _ = sh("(setsid sleep 300.6061 > /dev/null 2>&1 &) ; nohup sleep 300.6062 "
                 "> /dev/null 2>&1 & echo started", tmp_path)
    assert code == 0
    assert wait_until_gone("sleep 300.606") == []


def test_a_missing_bwrap_refuses_commands_and_says_how_to_install(
    tmp_path: Path,
) -> None:
    missing = SandboxPolicy(bwrap=str(tmp_path / "no-bwrap"))
    assert not sandbox_status(missing).available
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap") as caught:
        run_sandboxed(["true"], workdir=tmp_path, policy=missing, timeout=10)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(SandboxUnavailable):
        require_sandbox(missing)
    box = build_toolbox(Workspace(tmp_path), sandbox=missing)
    result = box.call(ToolCall(id="1", name="run_command", arguments={"argv": ["ls"]}))
    assert result.is_error and "bubblewrap" in result.content


def test_a_broken_bwrap_is_reported_not_used(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    status = sandbox_status(SandboxPolicy(bwrap=str(fake)))
    assert not status.available and "uid map" in status.detail
    assert "apparmor_restrict_unprivileged_userns" in status.fix


def test_the_opt_out_runs_unconfined_and_is_warned(tmp_path: Path) -> None:
    off = SandboxPolicy(enabled=False)
    warning = require_sandbox(off)
    assert warning is not None and "WARNING" in warning and "unconfined" in warning
    outcome = run_sandboxed(["sh", "-c", f"echo x > {tmp_path}/../outside-{os.getpid()}"],
                            workdir=tmp_path, policy=off, timeout=10)
    assert outcome.exit_code == 0  # no sandbox: the write outside succeeds
    (tmp_path.parent / f"outside-{os.getpid()}").unlink()


def test_check_reports_the_sandbox(tmp_path: Path) -> None:
    make_repo(tmp_path / "p")
    co = Path(__file__).resolve().parents[1] / "scripts" / "orchestration" / "co.py"
    done = subprocess.run([sys.executable, str(co), "check", "--project-dir",
                           str(tmp_path / "p")], capture_output=True, text=True, timeout=60)
    line = next(x for x in done.stdout.splitlines() if "sandbox:" in x)
    assert line.startswith("ok") and "bubblewrap" in line and "no network" in line


def test_an_interpreter_and_tools_under_tmp_stay_usable_read_only(tmp_path: Path) -> None:
    """A virtual environment or tool directory under /tmp is mounted back, read-only."""
    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    (tools / "hello-tool").write_text("#!/bin/sh\necho tool ran\n")
    (tools / "hello-tool").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    path = f"{tools}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    argv = sandboxed_argv(
        ["sh", "-c", f"hello-tool; {sys.executable} -c 'print(1 + 1)'; "
                     f"touch {tools}/planted && echo writable || echo read-only"],
        workdir=work, policy=POLICY, environ={"PATH": path},
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**sandbox_environment(POLICY), "PATH": path})
    assert "tool ran" in done.stdout and "2" in done.stdout, done.stderr
    assert "read-only" in done.stdout and not (tools / "planted").exists()


def test_a_run_without_the_sandbox_says_so_in_its_report(tmp_path: Path) -> None:
    import json

    from file_based_orchestrator import FileBasedOrchestrator

    from tests.orchestration_helpers import (
        integration_turn,
        plan_turn,
        read_state,
        run_orchestrator,
        task,
        write_and_finish,
    )

    project = tmp_path / "project"
    make_repo(project, {"README.md": "# p\n"})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"sandbox": {"enabled": False}}), encoding="utf-8")
    run = run_orchestrator(FileBasedOrchestrator, project, {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    }, "Unconfined feature", config_path=config)

    assert run.summary["exit_code"] == 0
    assert any("sandbox is turned off" in w for w in run.summary["warnings"])
    report = (project / read_state(project)["runs"][-1]["report"]).read_text(encoding="utf-8")
    assert "**Warning**: WARNING: the sandbox is turned off" in report
    assert "Warning: WARNING: the sandbox is turned off" in run.output
