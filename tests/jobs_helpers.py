"""Building blocks of the job worker tests: projects, scripted sessions, worker processes.

A "setup" is a project the delegation API runs in, a job store URL and the directories the
worker processes work in: one shared repository on SQLite, or on PostgreSQL a bare "remote"
with the caller's clone and one separate directory per worker (each worker clones the remote).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git

from tests.conftest import make_repo

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = ROOT / "scripts" / "orchestration"
LEASE_S = 2.0


def write_turn(path: str, content: str, *, delay: float = 0) -> dict[str, Any]:
    turn: dict[str, Any] = {"tool_calls": [
        {"name": "write_file", "arguments": {"path": path, "content": content}}]}
    if delay:
        turn["delay"] = delay
    return turn


def finish_turn(summary: str = "done", status: str = "completed", *,
                delay: float = 0) -> dict[str, Any]:
    turn: dict[str, Any] = {"tool_calls": [
        {"name": "finish_task", "arguments": {"status": status, "summary": summary}}]}
    if delay:
        turn["delay"] = delay
    return turn


@dataclass
class Setup:
    project: Path
    db: str
    worker_dirs: list[Path]
    session: Path
    remote: Path | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and k not in ("OPENAI_BASE_URL",)}
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), str(ROOT)])
        env["AGENT_TEAM_DB"] = self.db
        env["AGENT_TEAM_LEASE_S"] = str(LEASE_S)
        env["ORCHESTRATOR_WORKING_DIR"] = str(self.project)
        return env

    def start_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        """One worker process (its pid is the worker that claims and renews leases)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent_team.jobs.cli", "--project-dir",
             str(self.worker_dirs[index % len(self.worker_dirs)]), "--lease", str(LEASE_S)],
            env=self.env, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start_coordinator(self, workers: int, index: int = 0) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(PACKAGE_ROOT / "claude_coordinator.py"), str(workers),
             "--project-dir", str(self.worker_dirs[index % len(self.worker_dirs)])],
            env=self.env, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGTERM):
                    proc.send_signal(sig)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def job_log(self, job_branch: str) -> list[str]:
        """Subjects of the job branch's history, in the repository everyone shares."""
        where = self.remote or self.project
        repo = git.Repo(where)
        return repo.git.log("--format=%s", job_branch).splitlines()

    def branch_exists(self, name: str) -> bool:
        repo = git.Repo(self.remote or self.project)
        return bool(repo.git.branch("--list", name).strip())


def make_setup(tmp_path: Path, backend: str, agents: Mapping[str, Any],
               pg_database: Callable[[], str] | None = None) -> Setup:
    """A project with a scripted session; backend "sqlite" or "postgresql" (with a remote)."""
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"format": "agent-team-session", "version": 1,
                                   "agents": dict(agents)}), encoding="utf-8")
    config = {"api_provider": "scripted", "session": str(session)}
    if backend == "sqlite":
        project = tmp_path / "project"
        make_repo(project)
        (project / "orchestrator-config.json").write_text(json.dumps(config))
        db = f"sqlite:///{project / '.ai-agents' / 'jobs.db'}"
        return Setup(project, db, [project], session)
    assert pg_database is not None
    remote = tmp_path / "remote.git"
    git.Repo.init(remote, bare=True, initial_branch="main")
    seed = make_repo(tmp_path / "seed")
    seed.git.push(str(remote), "main")
    project = tmp_path / "project"
    clone = git.Repo.clone_from(str(remote), project)
    with clone.config_writer() as cw:
        cw.set_value("user", "name", "Test User")
        cw.set_value("user", "email", "test@example.com")
    (project / "orchestrator-config.json").write_text(json.dumps(config))
    dirs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    for directory in dirs:
        directory.mkdir()
    return Setup(project, pg_database(), dirs, session, remote=remote)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children")
        if children.exists():
            for child in children.read_text().split():
                found.append(int(child))
                found += descendants(int(child))
    return found
