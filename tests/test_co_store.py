"""The job store as the `co` backlog uses it: edits, deletes, ids never reused, opt-in jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from agent_team.jobs import JobStore
from agent_team.jobs.errors import BadTaskInput, TaskNotFound
from agent_team.jobs.queue import TaskQueue
from agent_team.jobs.worker import Worker, WorkerOptions

# `store` (tests/jobs_fixtures.py): each test on SQLite and on PostgreSQL.


def test_update_task_edits_fields_and_dependencies(store: JobStore) -> None:
    job = store.create_job("backlog", job_id="b")
    one, two = store.add_task("b", "one"), store.add_task("b", "two")
    changed = store.update_task(two.id, prompt="two, better", priority="high", role="qa",
                                status="completed", dependencies=[one.id],
                                metadata={"parent": None})
    assert (changed.prompt, changed.priority, changed.role, changed.status) == (
        "two, better", 8, "qa", "completed")
    assert changed.dependencies == [one.id] and changed.metadata == {"parent": None}
    with pytest.raises(BadTaskInput, match="cycle"):
        store.update_task(one.id, dependencies=[two.id])
    with pytest.raises(BadTaskInput, match="itself"):
        store.update_task(one.id, dependencies=[one.id])
    other = store.create_job("other")
    stranger = store.add_task(other.id, "elsewhere")
    with pytest.raises(BadTaskInput, match="not tasks of job b"):
        store.update_task(one.id, dependencies=[stranger.id])
    with pytest.raises(BadTaskInput, match="status"):
        store.update_task(one.id, status="sleeping")
    with pytest.raises(TaskNotFound):
        store.update_task(999, prompt="x")
    assert job.id == "b"


def test_update_refuses_a_task_a_worker_holds(store: JobStore) -> None:
    store.create_job("job", job_id="j")
    task = store.add_task("j", "busy")
    claim = TaskQueue(store).claim("w1")
    assert claim is not None and claim.task_id == task.id
    with pytest.raises(BadTaskInput, match="being run by worker w1"):
        store.update_task(task.id, status="pending")
    assert store.update_task(task.id, prompt="renamed").prompt == "renamed"


def test_delete_refuses_dependents_unless_forced_and_running_tasks(store: JobStore) -> None:
    store.create_job("job", job_id="j")
    base = store.add_task("j", "base")
    needs = store.add_task("j", "needs base", dependencies=[base.id])
    with pytest.raises(BadTaskInput, match=f"task\\(s\\) {needs.id} depend on {base.id}"):
        store.delete_task(base.id)
    assert store.delete_task(base.id, force=True) == [base.id]
    assert store.get_task(needs.id).dependencies == []
    store.update_task(needs.id, status="running")
    with pytest.raises(BadTaskInput, match="running"):
        store.delete_task(needs.id)


def test_ids_are_never_reused_after_the_newest_is_deleted(store: JobStore) -> None:
    """SQLite by AUTOINCREMENT, PostgreSQL by its sequence."""
    store.create_job("job", job_id="j")
    first = store.add_task("j", "first")
    newest = store.add_task("j", "newest")
    store.delete_task(newest.id)
    assert store.add_task("j", "next").id == newest.id + 1
    assert first.id < newest.id


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    """A store written before ids were AUTOINCREMENT: its rows and dependencies survive."""
    path = tmp_path / "old.db"
    store = JobStore.open(path)
    store.create_job("job", job_id="j")
    a = store.add_task("j", "a")
    b = store.add_task("j", "b", dependencies=[a.id])
    store.close()
    with sqlite3.connect(path) as db:  # make it look like version 1
        table_sql = db.execute("SELECT sql FROM sqlite_master WHERE name='tasks'").fetchone()[0]
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("PRAGMA legacy_alter_table=ON")  # keep task_deps pointing at `tasks`
        db.execute("ALTER TABLE tasks RENAME TO tasks_x")
        db.execute(table_sql.replace(" AUTOINCREMENT", ""))
        db.execute("INSERT INTO tasks SELECT * FROM tasks_x")
        db.execute("DROP TABLE tasks_x")
        db.execute("ALTER TABLE jobs DROP COLUMN opt_in")
        db.execute("DELETE FROM schema_version WHERE version >= 2")
        assert "AUTOINCREMENT" not in db.execute(
            "SELECT sql FROM sqlite_master WHERE name='tasks'").fetchone()[0]
    store = JobStore.open(path)
    assert store.get_task(b.id).dependencies == [a.id]
    store.delete_task(b.id, force=True)
    assert store.add_task("j", "c").id == b.id + 1
    assert store.get_job("j").opt_in is False


def test_workers_of_every_job_skip_opt_in_jobs(store: JobStore, tmp_path: Path) -> None:
    store.create_job("the backlog", job_id="backlog", opt_in=True)
    store.add_task("backlog", "only when asked")
    queue = TaskQueue(store)
    assert queue.claim("any") is None
    idle = Worker(store, WorkerOptions(work_dir=tmp_path, exit_when_idle=True, poll_s=0.01))
    assert idle.run() == 0  # nothing it may take: it exits instead of waiting forever
    asked = queue.claim("asked", job_id="backlog")
    assert asked is not None and asked.task.prompt == "only when asked"


def test_replace_tasks_restores_a_snapshot_with_its_ids(store: JobStore) -> None:
    store.create_job("job", job_id="j")
    a = store.add_task("j", "a", metadata={"parent": None})
    b = store.add_task("j", "b", dependencies=[a.id])
    snapshot = [{"id": t.id, "prompt": t.prompt, "role": t.role, "priority": t.priority,
                 "status": t.status, "dependencies": t.dependencies, "metadata": t.metadata,
                 "created_at": t.created_at} for t in store.list_tasks("j")]
    store.delete_task(b.id)
    store.add_task("j", "c")
    store.replace_tasks("j", snapshot)
    assert [(t.id, t.prompt, t.dependencies) for t in store.list_tasks("j")] == [
        (a.id, "a", []), (b.id, "b", [a.id])]
    other = store.create_job("other")
    taken = store.add_task(other.id, "not yours")
    with pytest.raises(BadTaskInput, match="another job"):
        store.replace_tasks("j", [{"id": taken.id, "prompt": "x"}])
