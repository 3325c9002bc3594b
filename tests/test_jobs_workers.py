"""Worker processes against the job store: the guide's session, crashes, freezes and races.

Every test runs on SQLite (one repository) and on a real PostgreSQL server (a bare remote,
the caller's clone and one clone per worker machine). Leases are 2 s so expiries are quick.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_team.jobs import JobStore
from agent_team.jobs.pgserver import PostgresServer

from tests.jobs_helpers import (
    ROOT,
    Setup,
    descendants,
    finish_turn,
    make_setup,
    wait_for,
    write_turn,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROUTES = "const router = require('express').Router();\n// GET POST PUT DELETE /tasks\n"
GUIDE_AGENTS = {
    "worker:1": [write_turn("server.js", "const app = require('express')();\n"),
                 finish_turn("Express server")],
    **{f"worker:{n}": [write_turn("routes/tasks.js", ROUTES), finish_turn(f"endpoint {n}")]
       for n in (2, 3, 4, 5)},
    "worker:6": [write_turn("tests/tasks.test.js", "test('crud', () => {});\n"),
                 finish_turn("integration tests")],
    "manager:synthesis": [{"text": "Built: server, CRUD routes and tests. Next: run npm test."}],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _setup(tmp_path: Path, backend: str, request: pytest.FixtureRequest,
           agents: dict[str, object]) -> Setup:
    pg = None
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("pg_server")
        pg = server.create_database
    return make_setup(tmp_path, backend, agents, pg)


@pytest.fixture
def stopper() -> Iterator[list[Setup]]:
    setups: list[Setup] = []
    yield setups
    for setup in setups:
        setup.stop_all()


def test_guide_full_session_against_two_workers(tmp_path: Path, backend: str,
                                                request: pytest.FixtureRequest,
                                                stopper: list[Setup]) -> None:
    setup = _setup(tmp_path, backend, request, GUIDE_AGENTS)
    stopper.append(setup)
    setup.start_coordinator(2)
    store = JobStore.open(setup.db)
    wait_for(lambda: len(store.workers.live()) == 2, 60, "two workers")
    script = ROOT / "examples" / "delegation" / "full_session.py"
    done = subprocess.run([sys.executable, str(script)], env=setup.env, cwd=setup.project,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "FINAL REPORT" in done.stdout and "Next: run npm test." in done.stdout
    assert "Progress: 100%" in done.stdout
    job = store.list_jobs()[0]
    tasks = store.list_tasks(job.id)
    assert [t.status for t in tasks] == ["completed"] * 6
    assert all(t.attempts == 1 for t in tasks)
    workers_used = {t.worker_id for t in tasks}
    assert len(workers_used) == 2, "both workers should have taken tasks"
    log = setup.job_log(job.job_branch)
    # A task whose tree already held its output (an identical routes/tasks.js merged first)
    # has nothing to commit and nothing to merge; every other task is merged exactly once.
    assert sorted(s for s in log if s.startswith("Merge task")) == sorted(
        f"Merge task {t.id}: {t.prompt[:60]}" for t in tasks if t.commit)
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", job.job_branch],
                           cwd=setup.remote or setup.project, capture_output=True, text=True)
    assert {"server.js", "routes/tasks.js", "tests/tasks.test.js"} <= set(files.stdout.split())
    first = min(tasks, key=lambda t: t.started_at or 0)
    assert first.priority == 10


def test_child_starts_after_its_parent_on_top_of_its_work(tmp_path: Path, backend: str,
                                                          request: pytest.FixtureRequest,
                                                          stopper: list[Setup]) -> None:
    from orchestrator import ClaudeOrchestrator

    agents = {"worker:1": [write_turn("api.py", "API = 1\n", delay=0.5), finish_turn("api")],
              "worker:2": [{"tool_calls": [{"name": "read_file",
                                            "arguments": {"path": "api.py"}}]},
                           write_turn("test_api.py", "from api import API\n"),
                           finish_turn("tests")]}
    setup = _setup(tmp_path, backend, request, agents)
    stopper.append(setup)
    orch = ClaudeOrchestrator("t", project_dir=setup.project, db=setup.db)
    job = orch.create_job("api")
    parent = orch.add_subtask(job, "Implement API", priority=1)
    child = orch.add_subtask(job, "Test API", priority=10, parent_task_id=parent,
                             expected_outputs=["test_api.py"])
    setup.start_worker(0)
    setup.start_worker(1)
    wait_for(lambda: orch.get_job_status(job)["status"] in ("completed", "failed"), 90, "job")
    p, c = orch.queue.get_task(parent), orch.queue.get_task(child)
    assert (p["status"], c["status"]) == ("completed", "completed"), c["error"]
    assert c["started_at"] >= p["finished_at"]
    repo = setup.remote or setup.project
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", p["merge_commit"],
                               c["commit"]], cwd=repo)
    assert ancestor.returncode == 0, "the child's commit must build on its parent's merge"


def test_missing_output_fails_then_retry_completes(tmp_path: Path, backend: str,
                                                  request: pytest.FixtureRequest,
                                                  stopper: list[Setup]) -> None:
    from orchestrator import ClaudeOrchestrator

    agents = {"worker:1-a1": [finish_turn("forgot the file")],
              "worker:1-a2": [write_turn("out.txt", "ok\n"), finish_turn("wrote it")],
              "worker:2": [finish_turn("dependent")]}
    setup = _setup(tmp_path, backend, request, agents)
    stopper.append(setup)
    orch = ClaudeOrchestrator("t", project_dir=setup.project, db=setup.db)
    job = orch.create_job("retry")
    first = orch.add_subtask(job, "Write out.txt", expected_outputs=["out.txt"])
    second = orch.add_subtask(job, "After it", parent_task_id=first)
    setup.start_worker(0)
    results = orch.wait_and_collect(job, timeout=90)
    failed = orch.get_failed_tasks(job)
    assert [t["id"] for t in failed] == [first]
    assert "expected output(s) missing" in failed[0]["error"] and "out.txt" in failed[0]["error"]
    assert results[second]["status"] == "blocked"
    assert sorted(orch.retry_failed_tasks(job)) == [first, second]
    assert "out.txt" in orch.queue.get_task(first)["prompt"]  # the error is in the prompt
    results = orch.wait_and_collect(job, timeout=90)
    assert results[first]["status"] == "completed" and results[second]["status"] == "completed"
    assert orch.get_job_status(job)["progress_pct"] == 100.0


def test_sigkill_worker_mid_task_another_finishes_it_once(tmp_path: Path, backend: str,
                                                         request: pytest.FixtureRequest,
                                                         stopper: list[Setup]) -> None:
    from orchestrator import ClaudeOrchestrator

    agents = {"worker:1": [write_turn("slow.txt", "x\n", delay=4), finish_turn("slow")]}
    setup = _setup(tmp_path, backend, request, agents)
    stopper.append(setup)
    orch = ClaudeOrchestrator("t", project_dir=setup.project, db=setup.db)
    job = orch.create_job("crash")
    task = orch.add_subtask(job, "Slow task", expected_outputs=["slow.txt"])
    victim = setup.start_worker(0)
    wait_for(lambda: orch.queue.get_task(task)["status"] == "running", 60, "claim")
    wait_for(lambda: bool(descendants(victim.pid)), 30, "the agent process")
    agent_pids = descendants(victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() and
                             "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
                             for p in agent_pids), 10, "the agent to die with its worker")
    setup.start_worker(1)
    wait_for(lambda: orch.get_job_status(job)["status"] == "completed", 90, "rerun")
    record = orch.queue.get_task(task)
    assert record["attempts"] == 2 and record["branch"].endswith("1-a2-worker")
    merges = [s for s in setup.job_log(f"jobs/{job}") if s.startswith(f"Merge task {task}:")]
    assert len(merges) == 1


def test_frozen_worker_past_its_lease_is_refused(tmp_path: Path, backend: str,
                                                 request: pytest.FixtureRequest,
                                                 stopper: list[Setup]) -> None:
    from orchestrator import ClaudeOrchestrator

    agents = {"worker:1": [write_turn("f.txt", "x\n", delay=1.5), finish_turn("f")]}
    setup = _setup(tmp_path, backend, request, agents)
    stopper.append(setup)
    orch = ClaudeOrchestrator("t", project_dir=setup.project, db=setup.db)
    job = orch.create_job("freeze")
    task = orch.add_subtask(job, "Freezable task", expected_outputs=["f.txt"])
    frozen = setup.start_worker(0)
    wait_for(lambda: orch.queue.get_task(task)["status"] == "running", 60, "claim")
    wait_for(lambda: bool(descendants(frozen.pid)), 30, "the agent process")
    stopped = [frozen.pid, *descendants(frozen.pid)]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        setup.start_worker(1)
        wait_for(lambda: orch.get_job_status(job)["status"] == "completed", 90, "takeover")
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    store = JobStore.open(setup.db)
    wait_for(lambda: any(e.kind in ("refused", "lease_lost")
                         for e in store.events.recent(job_id=job, limit=50)), 30,
             "the late worker to be refused or to stop its agent")
    record = orch.queue.get_task(task)
    assert record["attempts"] == 2
    assert record["branch"].endswith("1-a2-worker")
    merges = [s for s in setup.job_log(f"jobs/{job}") if s.startswith(f"Merge task {task}:")]
    assert len(merges) == 1
    assert store.get_task(task).status == "completed"


@pytest.mark.timeout(480)
def test_two_worker_processes_race_on_50_tasks(tmp_path: Path, backend: str,
                                               request: pytest.FixtureRequest,
                                               stopper: list[Setup]) -> None:
    from orchestrator import ClaudeOrchestrator

    setup = _setup(tmp_path, backend, request, {"worker": [finish_turn("noop")]})
    stopper.append(setup)
    orch = ClaudeOrchestrator("t", project_dir=setup.project, db=setup.db)
    job = orch.create_job("race")
    ids = [orch.add_subtask(job, f"task {n}", priority=1 + n % 10) for n in range(50)]
    setup.start_worker(0)
    setup.start_worker(1)
    wait_for(lambda: orch.get_job_status(job)["progress_pct"] == 100.0, 420, "50 tasks")
    store = JobStore.open(setup.db)
    tasks = store.list_tasks(job)
    assert not [t.error for t in tasks if t.status != "completed"]
    assert sorted(t.id for t in tasks) == sorted(ids)
    assert all(t.attempts == 1 and t.status == "completed" for t in tasks)
    claims = [e for e in store.events.recent(job_id=job, limit=500) if e.kind == "claimed"]
    assert sorted(e.task_id or 0 for e in claims) == sorted(ids)
    assert len({t.worker_id for t in tasks}) == 2
