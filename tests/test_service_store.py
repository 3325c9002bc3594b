"""The service's jobs live in the job store: tasks claimed through the queue, the tree of
jobs with depth and parent task, and a restarted server that still answers for them."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_team.jobs import JobStore
from orchestrator.api.records import DIED, JobSettings, ServiceJobs

from .service_helpers import serve, service_config

pytestmark = pytest.mark.timeout(180)
BODY = {"request": "Build a shop", "config": {"max_workers": 2, "max_recursion_depth": 1}}


def test_tasks_and_child_jobs_are_rows_of_the_store(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service, service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json=BODY).json()["job_id"]
        status = service.wait(job_id)
    assert status["status"] == "completed"
    store = JobStore.open(tmp_path / "workspace" / "jobs.db")
    root = store.get_job(job_id)
    assert (root.orchestrator_id, root.depth, root.job_branch) == (
        "service", 0, f"feature/job-{job_id}")
    assert root.status == "completed" and root.usage["api_calls"] == status["usage"]["api_calls"]
    tasks = store.list_tasks(job_id)
    assert [t.metadata["task_id"] for t in tasks] == ["TASK-001", "TASK-002", "TASK-003"]
    for task in tasks:  # each claimed once through the queue by a lane, then fenced-completed
        assert task.status == "completed" and task.attempts == 1
        assert task.worker_id and task.worker_id.startswith(f"service-{job_id}-lane-")
        assert task.commit and task.merge_commit and task.branch
        assert task.result_data()["files_modified"]
    assert sum(t.usage["input_tokens"] for t in tasks) > 0
    child = next(j for j in store.list_jobs() if j.parent_job_id == job_id)
    assert child.depth == 1 and child.parent_task_id == tasks[1].id
    assert [t.metadata["label"] for t in store.list_tasks(child.id)] == ["2_1", "2_2"]
    kinds = {e.kind for e in store.events.recent(limit=500, job_id=job_id)}
    assert {"claimed", "completed", "job_finished"} <= kinds


def test_a_restarted_server_answers_from_the_store_and_fails_orphans(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    with serve(config) as service, service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json=BODY).json()["job_id"]
        before = service.wait(job_id)
    # A job the previous server was running when it died: in the store, never finished.
    jobs = ServiceJobs.open(config.workspace_root)
    settings = JobSettings(max_workers=1, default_timeout=60, max_retries=0,
                           enable_recursion=False, max_depth=0)
    orphan = jobs.create("half done", settings, depth=0,
                         workspace=str(config.workspace_root / "job_orphan"))
    jobs.set_outcome(orphan.job_id, status="running")
    jobs.store.add_task(orphan.job_id, "a task that was running")
    with serve(config) as service, service.client() as http:
        after = http.get(f"/api/v1/jobs/{job_id}/status").json()
        listed = {j["job_id"]: j for j in http.get("/api/v1/jobs").json()["jobs"]}
        dead = http.get(f"/api/v1/jobs/{orphan.job_id}/status").json()
        report = http.get(f"/api/v1/jobs/{job_id}/report")
        running = http.get("/api/v1/health").json()["jobs_running"]
    assert after == before
    assert listed[job_id]["status"] == "completed" and listed[orphan.job_id]["status"] == "failed"
    assert dead["status"] == "failed" and dead["error"] == DIED
    assert [t["status"] for t in dead["results"]["tasks"]] == ["cancelled"]
    assert report.status_code == 200 and "Final result" in report.json()["markdown"]
    assert running == 0


def test_the_store_can_be_named_in_the_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'service.db'}"
    with serve(service_config(tmp_path, job_store=url)) as service, service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json={"request": "x"}).json()["job_id"]
        assert http.get(f"/api/v1/jobs/{job_id}/status").status_code == 200
        service.wait(job_id)
    assert JobStore.open(url).get_job(job_id).orchestrator_id == "service"
    assert not (tmp_path / "workspace" / "jobs.db").exists()
