"""The job store and its queue on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from agent_team.errors import BadPriority
from agent_team.jobs import (
    BadTaskInput,
    FenceRejected,
    JobNotFound,
    JobStore,
    JobStoreError,
    TaskQueue,
    parse_priority,
    resolve_db_url,
)
from agent_team.jobs.schema import SCHEMA_VERSION, schema_version

pytestmark = pytest.mark.timeout(120)


def test_priority_words_and_numbers_are_one_scale() -> None:
    assert parse_priority("high") == 8 and parse_priority("LOW") == 2
    assert parse_priority(10) == 10 and parse_priority("7") == 7 and parse_priority(None) == 5
    for bad in (0, 11, "urgentish", True, 2.5):
        with pytest.raises(BadPriority, match="integer from 1 to 10"):
            parse_priority(bad)


def test_url_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_TEAM_DB", raising=False)
    assert resolve_db_url(None, tmp_path) == f"sqlite:///{tmp_path / '.ai-agents/jobs.db'}"
    (tmp_path / "orchestrator-config.json").write_text(
        json.dumps({"storage": {"url": "postgresql://u@db.example/jobs"}}))
    assert resolve_db_url(None, tmp_path) == "postgresql+psycopg://u@db.example/jobs"
    monkeypatch.setenv("AGENT_TEAM_DB", "other.db")
    assert resolve_db_url(None, tmp_path) == f"sqlite:///{tmp_path / 'other.db'}"
    assert resolve_db_url("postgres://x@h/d", tmp_path) == "postgresql+psycopg://x@h/d"
    with pytest.raises(JobStoreError, match="not supported"):
        resolve_db_url("mysql://root:secret@h/d", tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    opened = JobStore.open(tmp_path / "j.db")
    with opened.engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=0))
    with pytest.raises(JobStoreError, match="newer than this code supports"):
        JobStore.open(tmp_path / "j.db")


def test_claims_follow_priority_then_dependencies(store: JobStore) -> None:
    job = store.create_job("goal")
    low = store.add_task(job.id, "low", priority="low")
    high = store.add_task(job.id, "high", priority=9)
    child = store.add_task(job.id, "child", priority=10, parent_task_id=high.id)
    mid = store.add_task(job.id, "mid", priority="medium")
    queue = TaskQueue(store, lease_s=30)
    order = []
    while (claim := queue.claim("w")) is not None:
        order.append(claim.task_id)
        queue.complete(claim, {"summary": claim.task.prompt})
    assert order == [high.id, child.id, mid.id, low.id]
    assert store.get_task(child.id).dependencies == [high.id]
    status = store.job_status(job.id)
    assert (status.status, status.completed, status.progress_pct) == ("completed", 4, 100.0)


def test_fence_refuses_a_late_writer_after_reclaim(store: JobStore) -> None:
    job = store.create_job("goal")
    task = store.add_task(job.id, "t")
    queue = TaskQueue(store, lease_s=0.5)
    first = queue.claim("slow")
    assert first is not None and queue.claim("fast") is None  # leased
    time.sleep(1.0)
    second = queue.claim("fast")
    assert second is not None and second.fence == first.fence + 1
    assert not queue.renew(first)
    with pytest.raises(FenceRejected):
        queue.complete(first, {"summary": "late"})
    with pytest.raises(FenceRejected), queue.job_lock(first):
        pass
    with queue.job_lock(second) as conn:
        queue.complete(second, {"summary": "on time"}, conn=conn)
    record = store.get_task(task.id)
    assert json.loads(record.result or "")["summary"] == "on time" and record.attempts == 2
    assert [e.kind for e in store.events.recent(job_id=job.id, limit=2)] == [
        "completed", "refused"]


def test_failure_blocks_dependents_and_retry_requeues_with_the_error(store: JobStore) -> None:
    job = store.create_job("goal")
    parent = store.add_task(job.id, "parent")
    child = store.add_task(job.id, "child", dependencies=[parent.id])
    queue = TaskQueue(store)
    claim = queue.claim("w")
    assert claim is not None
    queue.fail(claim, "expected output missing: a.txt")
    assert store.get_task(child.id).status == "blocked"
    assert store.job_status(job.id).status == "failed"
    assert sorted(store.retry_failed(job.id)) == [parent.id, child.id]
    again = store.get_task(parent.id)
    assert again.status == "pending" and "expected output missing: a.txt" in again.prompt
    assert store.job_status(job.id).pending == 2


def test_bad_input_is_refused_with_a_reason(store: JobStore) -> None:
    job = store.create_job("goal")
    other = store.create_job("other")
    foreign = store.add_task(other.id, "x")
    with pytest.raises(BadTaskInput, match="not tasks of job"):
        store.add_task(job.id, "y", dependencies=[foreign.id])
    with pytest.raises(BadTaskInput, match="relative to the repository"):
        store.add_task(job.id, "y", expected_outputs=["/etc/passwd"])
    with pytest.raises(JobNotFound):
        store.add_task("nope", "y")


def test_concurrent_claims_hand_out_each_task_once(store: JobStore) -> None:
    job = store.create_job("goal")
    ids = {store.add_task(job.id, f"t{i}", priority=1 + i % 10).id for i in range(40)}
    queue = TaskQueue(store, lease_s=60)
    seen: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (claim := queue.claim(name)) is not None:
            with lock:
                seen.append(claim.task_id)
            queue.complete(claim, {"summary": "ok"})

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted(ids)
    assert store.job_status(job.id).completed == 40


def test_cancel_and_workers_and_kv(store: JobStore) -> None:
    job = store.create_job("goal")
    store.add_task(job.id, "a")
    claim = TaskQueue(store).claim("w")
    assert claim is not None
    assert store.cancel_job(job.id) == 1
    with pytest.raises(FenceRejected):
        TaskQueue(store).complete(claim, {"summary": "too late"})
    worker = store.workers.register()
    store.workers.heartbeat(worker, status="busy", current_task_id=claim.task_id)
    assert [w.id for w in store.workers.live()] == [worker]
    store.workers.heartbeat(worker, status="stopped")
    assert store.workers.live() == []
    store.kv.save("k", {"a": [1, 2]})
    assert store.kv.load("k") == {"a": [1, 2]} and store.kv.load("missing", 3) == 3


def test_manager_plans_accept_numeric_priorities() -> None:
    from agent_team.plan import parse_plan

    plan = {"tasks": [
        {"task_id": "T1", "description": "a", "assigned_to": "backend-dev", "priority": 5},
        {"task_id": "T2", "description": "b", "assigned_to": "backend-dev", "priority": 9},
        {"task_id": "T3", "description": "c", "assigned_to": "backend-dev", "priority": "low"},
    ], "decisions": []}
    parsed = parse_plan(plan, ["backend-dev"])
    assert [t["priority"] for t in parsed.tasks] == ["medium", "high", "low"]
