"""Job tasks on the core's task step: its records in the job store, its budgets, conflicts
resolved by the manager, merged attempts adopted after a crash, the cap on expired leases and
the timeout of wait_and_collect. On SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import git
import pytest
from agent_team import state_ops
from agent_team.jobs import JobStore, TaskQueue
from agent_team.jobs.errors import WaitTimeout
from agent_team.jobs.execute import execute_job_task
from agent_team.jobs.repo import JobRepository
from agent_team.jobs.run_store import JobRunStore, initial_document
from agent_team.scripted import ScriptedModel

from tests.jobs_helpers import (
    PACKAGE_ROOT,
    Setup,
    descendants,
    finish_turn,
    make_setup,
    wait_for,
    write_turn,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _orch(setup: Setup, db: str, **kwargs: Any) -> Any:
    from orchestrator import ClaudeOrchestrator

    return ClaudeOrchestrator("t", project_dir=setup.project, db=db, **kwargs)


def _show(setup: Setup, ref: str, path: str) -> str:
    return git.Repo(setup.project).git.show(f"{ref}:{path}")


def _commit_on(setup: Setup, branch: str, path: str, content: str) -> None:
    """Land a commit on `branch` as another task's merge would, outside any worktree."""
    repo = git.Repo(setup.project)
    where = setup.project.parent / f"other-{branch.replace('/', '_')}"
    repo.git.worktree("add", str(where), branch)
    (where / path).write_text(content)
    other = git.Repo(where)
    other.git.add("--all")
    other.git.commit("-m", f"Another task changed {path}")
    repo.git.worktree("remove", "--force", str(where))


def test_a_task_runs_on_the_core_step_and_records_into_the_job_store(
        tmp_path: Path, db_url: str) -> None:
    agents = {"worker:1": [
        {"tool_calls": [{"name": "post_update",
                         "arguments": {"status": "in_progress", "message": "writing a.py"}}],
         "usage": {"input_tokens": 100, "output_tokens": 10}},
        write_turn("a.py", "A = 1\n"),
        finish_turn("wrote a.py")]}
    setup = make_setup(tmp_path, "sqlite", agents)
    orch = _orch(setup, db_url)
    job = orch.create_job("core step")
    task = orch.add_subtask(job, "Write a.py", expected_outputs=["a.py"],
                            context_files=["README.md"], metadata={"ticket": "T-7"})
    results = orch.wait_and_collect(job, timeout=180)
    assert results[task]["status"] == "completed", results
    record = orch.store.get_task(task)
    assert record.usage["api_calls"] == 3 and record.usage["input_tokens"] >= 100
    assert orch.store.get_job(job).usage["api_calls"] == 3
    # The commit is the core's: authored by the task's role, the task id in its message.
    head = git.Repo(setup.project).commit(record.commit)
    assert head.author.name == "worker" and "Task: 1" in head.message
    # The attempt's event log holds the core's events; the agent's note is a job event.
    events = [json.loads(line) for line in Path(record.log_path or "").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"run_started", "model_call", "tool_call", "commit", "task_status",
            "run_finished"} <= kinds
    prompt_seen = next(e for e in events if e["kind"] == "model_call")
    assert prompt_seen["task_id"] == "1"
    notes = [e for e in orch.store.events.recent(job_id=job, limit=50)
             if e.kind == "agent:in_progress"]
    assert notes and "writing a.py" in notes[0].message
    # The job's settings are the team's effective settings, rebuilt by the worker.
    settings = orch.store.get_job(job).settings
    assert settings["api_provider"] == "scripted" and "coordination" in settings
    assert "storage" not in settings


def test_the_task_prompt_has_the_jobs_context_files_and_metadata(tmp_path: Path) -> None:
    model = ScriptedModel({"worker:1": [finish_turn("read it")]})
    setup = make_setup(tmp_path, "sqlite", {})
    orch = _orch(setup, setup.db)
    job = orch.create_job("Prompt goal")
    task = orch.add_subtask(job, "Look at the readme", context_files=["README.md", "none.md"],
                            metadata={"ticket": "T-7"}, expected_outputs=["README.md"])
    claim = orch.queue.claim("w1")
    outcome = execute_job_task(orch.queue, claim, work_dir=setup.project, model=model)
    assert outcome.status == "completed", outcome.error
    prompt = model.calls[0].messages[0].content
    for text in ("Task: 1 - Look at the readme", "Feature: Prompt goal", "- README.md",
                 "Context file README.md:", "# test project", "none.md does not exist yet",
                 '"ticket": "T-7"'):
        assert text in prompt
    assert orch.store.get_task(task).status == "completed"


def test_the_jobs_budget_stops_its_agent(tmp_path: Path) -> None:
    agents = {"worker:1": [write_turn("a.py", "A = 1\n"), finish_turn("done")]}
    setup = make_setup(tmp_path, "sqlite", agents)
    config = json.loads((setup.project / "orchestrator-config.json").read_text())
    config["limits"] = {"max_api_calls": 1}
    (setup.project / "orchestrator-config.json").write_text(json.dumps(config))
    orch = _orch(setup, setup.db)
    job = orch.create_job("budget")
    task = orch.add_subtask(job, "Write a.py")
    results = orch.wait_and_collect(job, timeout=180)
    assert results[task]["status"] == "failed"
    error = orch.store.get_task(task).error or ""
    assert error.startswith("stopped:") and "max_api_calls" in error
    # The work done before the stop is kept on the attempt's branch.
    branch = orch.store.get_task(task).branch or ""
    assert _show(setup, branch, "a.py") == "A = 1"


def test_a_late_attempts_writes_stop_its_run(tmp_path: Path, db_url: str) -> None:
    setup = make_setup(tmp_path, "sqlite", {})
    store = JobStore.open(db_url)
    job = store.create_job("fence", project_dir=setup.project, base_branch="main")
    task = store.add_task(job.id, "t")
    queue = TaskQueue(store, lease_s=0.5)
    first = queue.claim("slow")
    assert first is not None
    run_store = JobRunStore(queue, first, initial_document(
        store.get_job(job.id), first.task, [], run_id="r", fence=first.fence))
    lost: list[bool] = []
    run_store.on_lost = lambda: lost.append(True)

    def spend(state: dict[str, Any]) -> None:
        state_ops.add_usage_to(state, "worker", {"input_tokens": 5}, task_id=str(task.id))

    run_store.update(spend)
    assert store.get_task(task.id).usage["input_tokens"] == 5 and not lost
    time.sleep(1.0)
    second = queue.claim("fast")
    assert second is not None
    run_store.update(spend)
    assert lost == [True] and run_store.lost
    assert store.get_task(task.id).usage == {}  # the new attempt's row is untouched
    assert store.get_job(job.id).usage["input_tokens"] == 5


@pytest.mark.parametrize("manager_status", ["completed", "blocked"])
def test_a_merge_conflict_goes_to_the_manager(tmp_path: Path, db_url: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              manager_status: str) -> None:
    resolution = [write_turn("x.txt", "merged\n"), finish_turn("kept both", manager_status)]
    model = ScriptedModel({"worker:1": [write_turn("x.txt", "ours\n"), finish_turn("ours")],
                           "manager:merge": resolution})
    setup = make_setup(tmp_path, "sqlite", {})
    orch = _orch(setup, db_url)
    job = orch.create_job("conflict")
    task = orch.add_subtask(job, "Write x.txt", expected_outputs=["x.txt"])
    job_branch = orch.store.get_job(job).job_branch
    start_task = JobRepository.start_task

    def start_then_another_merge(self: JobRepository, branch: str) -> tuple[Path, str]:
        started = start_task(self, branch)
        _commit_on(setup, job_branch, "x.txt", "theirs\n")  # lands while the agent works
        return started

    monkeypatch.setattr(JobRepository, "start_task", start_then_another_merge)
    claim = orch.queue.claim("w1")
    outcome = execute_job_task(orch.queue, claim, work_dir=setup.project, model=model)
    kinds = [e.kind for e in orch.store.events.recent(job_id=job, limit=20)]
    record = orch.store.get_task(task)
    if manager_status == "completed":
        assert outcome.status == "completed", outcome.error
        assert outcome.result["merge"] == {"status": "conflict_resolved",
                                           "conflicts": ["x.txt"]}
        assert _show(setup, job_branch, "x.txt") == "merged"
        assert record.status == "completed" and record.merge_commit
        assert "merge_conflict_resolved" in kinds
    else:
        assert outcome.status == "failed"
        assert "the manager could not resolve it" in (record.error or "")
        assert _show(setup, job_branch, "x.txt") == "theirs"  # the merge was aborted
        assert _show(setup, record.branch or "", "x.txt") == "ours"  # the branch is kept
        assert "merge_conflict_unresolved" in kinds
    assert orch.store.get_job(job).merge_task_id is None  # the merge lock is free again


def test_one_merge_at_a_time_per_job_and_a_dead_holders_lock_frees_itself(
        db_url: str) -> None:
    store = JobStore.open(db_url)
    job = store.create_job("locks")
    for name in ("a", "b", "c"):
        store.add_task(job.id, name)
    long_lease = TaskQueue(store, lease_s=60)
    first, second = long_lease.claim("wa"), long_lease.claim("wb")
    assert first is not None and second is not None
    entered = threading.Event()

    def merge_second() -> None:
        with long_lease.merge_lock(second, poll_s=0.05):
            entered.set()

    with long_lease.merge_lock(first):
        assert store.get_job(job.id).merge_task_id == first.task_id
        waiter = threading.Thread(target=merge_second)
        waiter.start()
        assert not entered.wait(1.0)  # the second merge waits for the first
    assert entered.wait(30)
    waiter.join()
    assert store.get_job(job.id).merge_task_id is None
    # A holder whose worker died: the lock is free once its lease has expired.
    short_lease = TaskQueue(store, lease_s=0.3)
    dead = short_lease.claim("dead")
    assert dead is not None and short_lease._take_merge_lock(dead)
    time.sleep(0.6)
    with long_lease.merge_lock(second, poll_s=0.05):
        assert store.get_job(job.id).merge_task_id == second.task_id


class Crash(BaseException):
    """A worker dying between its merge and its database commit."""


def test_an_attempt_that_merged_then_died_is_recorded_not_rerun(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ScriptedModel({"worker:1": [write_turn("m.txt", "merged once\n"),
                                        finish_turn("wrote m.txt")]})
    setup = make_setup(tmp_path, "sqlite", {})
    orch = _orch(setup, db_url)
    job = orch.create_job("crash after merge")
    task = orch.add_subtask(job, "Write m.txt", expected_outputs=["m.txt"])
    queue = TaskQueue(orch.store, lease_s=0.5)
    complete = TaskQueue.complete

    def die(*args: Any, **kwargs: Any) -> None:
        raise Crash()

    monkeypatch.setattr(TaskQueue, "complete", die)
    first = queue.claim("w1")
    with pytest.raises(Crash):
        execute_job_task(queue, first, work_dir=setup.project, model=model)
    job_branch = orch.store.get_job(job).job_branch
    assert _show(setup, job_branch, "m.txt") == "merged once"
    assert orch.store.get_task(task).status == "running"
    monkeypatch.setattr(TaskQueue, "complete", complete)
    time.sleep(1.0)  # the dead worker's lease expires
    second = queue.claim("w2")
    assert second is not None and second.fence == 2
    outcome = execute_job_task(queue, second, work_dir=setup.project, model=model)
    assert outcome.status == "completed", outcome.error  # the model was not asked again
    record = orch.store.get_task(task)
    assert record.status == "completed" and record.attempts == 2
    assert outcome.result["recovered_from_attempt"] == 1
    assert outcome.result["summary"] == "wrote m.txt"
    merges = [s for s in setup.job_log(job_branch) if s.startswith(f"Merge task {task}:")]
    assert len(merges) == 1
    assert record.merge_commit == git.Repo(setup.project).commit(job_branch).hexsha
    assert "recovered" in [e.kind for e in orch.store.events.recent(job_id=job, limit=10)]


def test_expired_leases_are_capped_then_the_task_fails_with_the_reason(db_url: str) -> None:
    store = JobStore.open(db_url)
    job = store.create_job("crashy")
    task = store.add_task(job.id, "kills its worker")
    child = store.add_task(job.id, "after it", parent_task_id=task.id)
    queue = TaskQueue(store, lease_s=0.3, max_attempts=3)
    for attempt in (1, 2, 3):
        claim = queue.claim(f"w{attempt}")
        assert claim is not None and claim.fence == attempt
        time.sleep(0.6)  # the worker dies: its lease expires
    assert queue.claim("w4") is None
    record = store.get_task(task.id)
    assert record.status == "failed" and record.attempts == 3
    assert "expired 3 time(s) in a row" in (record.error or "")
    assert "last worker w3" in (record.error or "")
    assert store.get_task(child.id).status == "blocked"
    assert store.job_status(job.id).status == "failed"
    # A retry starts the count again.
    assert sorted(store.retry_failed(job.id)) == [task.id, child.id]
    claim = queue.claim("w5")
    assert claim is not None and claim.task_id == task.id
    queue.complete(claim, {"summary": "fixed"})
    assert store.get_task(task.id).lease_expiries == 0


def test_a_task_that_keeps_killing_its_worker_fails_after_max_attempts(tmp_path: Path) -> None:
    agents = {"worker:1": [write_turn("slow.txt", "x\n", delay=60), finish_turn("slow")]}
    setup = make_setup(tmp_path, "sqlite", agents)
    config = json.loads((setup.project / "orchestrator-config.json").read_text())
    config["storage"] = {"max_attempts": 2}
    (setup.project / "orchestrator-config.json").write_text(json.dumps(config))
    orch = _orch(setup, setup.db)
    job = orch.create_job("worker killer")
    task = orch.add_subtask(job, "Slow task")
    for attempt in (1, 2):
        worker = setup.start_worker(0)
        wait_for(lambda a=attempt: orch.store.get_task(task).attempts == a
                 and orch.store.get_task(task).status == "running", 60, "a claim")
        wait_for(lambda w=worker: bool(descendants(w.pid)), 30, "the agent process")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    last = setup.start_worker(0)
    wait_for(lambda: orch.store.get_task(task).status == "failed", 60, "the cap")
    record = orch.store.get_task(task)
    assert record.attempts == 2 and "expired 2 time(s) in a row" in (record.error or "")
    assert "max_attempts = 2" in (record.error or "")
    last.send_signal(signal.SIGTERM)
    assert last.wait(timeout=30) == 0


def test_wait_and_collect_raises_on_timeout_with_the_partial_results(tmp_path: Path) -> None:
    agents = {"worker:1": [write_turn("fast.txt", "x\n"), finish_turn("fast")],
              "worker:2": [write_turn("slow.txt", "x\n", delay=600), finish_turn("slow")]}
    setup = make_setup(tmp_path, "sqlite", agents)
    orch = _orch(setup, setup.db)
    job = orch.create_job("timeout")
    fast = orch.add_subtask(job, "Fast task", priority=10)
    slow = orch.add_subtask(job, "Slow task", priority=1)
    with pytest.raises(WaitTimeout) as caught:
        orch.wait_and_collect(job, timeout=20)
    error = caught.value
    assert isinstance(error, TimeoutError) and error.job_id == job
    assert "is not finished after 20s" in str(error)
    assert slow not in error.results and set(error.results) <= {fast}
    assert all(r["status"] == "completed" for r in error.results.values())
    # The task this process was running went back to the queue: nothing is lost.
    record = orch.store.get_task(slow)
    assert record.status == "pending" and record.attempts == 1
    assert not [p for p in descendants(os.getpid())
                if "task_runner" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def test_the_coordinator_refuses_a_bad_max_attempts(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, "sqlite", {})
    done = subprocess.run([sys.executable, str(PACKAGE_ROOT / "claude_coordinator.py"), "1",
                           "--project-dir", str(setup.project)],
                          env={**setup.env, "AGENT_TEAM_MAX_ATTEMPTS": "none"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "max_attempts 'none' is not valid" in done.stderr
