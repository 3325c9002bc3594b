"""The REST service against a real uvicorn server: the document's examples, auth,
validation, recursion, cancellation, live events and the hierarchical results."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from orchestrator.api.client import (
    AuthenticationError,
    NotFoundError,
    OrchestratorClient,
    ValidationError,
)

from .conftest import make_repo
from .service_helpers import KEY, demo_agents, scripted, serve, service_config

pytestmark = pytest.mark.timeout(180)

DOC_BODY = {
    "request": "Build a complete e-commerce site with frontend and backend",
    "config": {"max_workers": 5, "enable_recursion": True, "max_recursion_depth": 2},
}


def curl(*args: str) -> tuple[int, dict]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body)


def test_curl_example_runs_a_recursive_job_to_the_documented_output(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service:
        code, started = curl("-X", "POST", f"{service.url}/api/v1/orchestrate",
                             "-H", "Content-Type: application/json", "-H", f"X-API-Key: {KEY}",
                             "-d", json.dumps(DOC_BODY))
        assert code == 202 and started["status"] == "pending", started
        job_id = started["job_id"]
        code, refused = curl(f"{service.url}/api/v1/jobs/{job_id}/status")  # as in the doc
        assert code == 401 and "X-API-Key" in refused["error"]
        service.wait(job_id)
        code, status = curl(f"{service.url}/api/v1/jobs/{job_id}/status",
                            "-H", f"X-API-Key: {KEY}")
    assert code == 200 and status["job_id"] == job_id and status["status"] == "completed"
    tasks = {t["worker_id"]: t for t in status["results"]["tasks"]}
    assert tasks["worker_1"]["status"] == "success"
    assert tasks["worker_1"]["files_created"] == ["web/index.html"]
    backend = tasks["worker_2"]
    assert backend["status"] == "recursive_success" and backend["child_job_id"]
    assert [c["worker_id"] for c in backend["child_results"]] == ["worker_2_1", "worker_2_2"]
    assert backend["child_results"][0]["files_created"] == ["services/auth.py"]
    assert {"services/auth.py", "services/orders.py"} <= set(backend["files_created"])
    every = [f for t in [*tasks.values(), *backend["child_results"]] for f in t["files_modified"]]
    assert not [f for f in every if f.startswith(".ai-agents")]  # run files never committed
    workspace = Path(status["results"]["workspace"])
    assert workspace == tmp_path / "workspace" / f"job_{job_id}"
    assert status["results"]["final_report"] == str(workspace / "FINAL_RESULT.md")
    repo = Path(status["results"]["repository"])
    shown = subprocess.run(["git", "-C", str(repo), "show", f"{status['results']['branch']}:"
                            "services/auth.py"], capture_output=True, text=True, check=True)
    assert "def login" in shown.stdout


def test_hierarchical_layout_and_final_result(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service, service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json=DOC_BODY).json()["job_id"]
        status = service.wait(job_id)
        report = http.get(f"/api/v1/jobs/{job_id}/report").json()
    root = Path(status["results"]["workspace"])
    for path in ("depth_0/worker_1/transcript.md", "depth_0/worker_1/diff.patch",
                 "depth_0/worker_1/worker.log", "depth_0/worker_2_recursive/transcript.md",
                 "depth_0/worker_3/diff.patch", "depth_0/LEVEL_0_REPORT.md",
                 "depth_1/worker_2_1/diff.patch", "depth_1/worker_2_2/transcript.md",
                 "depth_1/LEVEL_1_REPORT.md", "logs/orchestrator.log",
                 "logs/depth_0_worker_1.log", "logs/depth_1_worker_2_1.log",
                 f"reports/job_{job_id}.md", f"reports/job_{job_id}_timeline.svg",
                 "FINAL_RESULT.md"):
        assert (root / path).is_file(), path
    assert "+def login" in (root / "depth_1/worker_2_1/diff.patch").read_text()
    assert "delegate" in (root / "depth_0/worker_2_recursive/transcript.md").read_text()
    final = (root / "FINAL_RESULT.md").read_text()
    assert "| `services/auth.py` | worker_2_1 | 1 | TASK-101 |" in final
    # Which lane takes which top-level task depends on timing; the attribution must not.
    assert re.search(r"\| `web/index.html` \| worker_\d+ \| 0 \| TASK-001 \|", final), final
    assert report["markdown"] == final
    job_md = (root / f"reports/job_{job_id}.md").read_text()
    for phrase in ("Parallelization efficiency", "Critical path", "Bottleneck tasks",
                   "Tokens", f"![Execution timeline](job_{job_id}_timeline.svg)"):
        assert phrase in job_md
    assert "<svg" in (root / f"reports/job_{job_id}_timeline.svg").read_text()
    assert "LEVEL" not in (root / "depth_1/LEVEL_1_REPORT.md").read_text()[:0]
    log_lines = (root / "logs/depth_1_worker_2_1.log").read_text().splitlines()
    assert all(json.loads(line)["worker"] == "2_1" for line in log_lines)


def test_python_client_example(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service:
        client = OrchestratorClient(api_url=service.url, api_key="your-api-key")
        result = client.orchestrate(
            request="Create a machine learning pipeline with data preprocessing, training, "
                    "and evaluation",
            max_workers=4,
            enable_recursion=True,
        )
        assert set(result) == {"job_id", "status"}
        done = client.wait(result["job_id"], timeout=120)
        assert done["status"] == "completed"
        assert result["job_id"] in {j["job_id"] for j in client.list_jobs()}
        assert client.cancel(result["job_id"])["cancelled_jobs"] == []  # already finished
        assert "Final result" in client.report(result["job_id"])
        with pytest.raises(AuthenticationError, match="X-API-Key"):
            OrchestratorClient(service.url, "wrong-key-123").list_jobs()
        with pytest.raises(NotFoundError, match="No job 0123456789ab"):
            client.get_status("0123456789ab")
        with pytest.raises(ValidationError) as invalid:
            client.orchestrate("x", max_workers=0)
        assert invalid.value.detail[0]["field"] == "config.max_workers"
        client.close()


def test_every_endpoint_but_health_needs_the_key(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service:
        routes = [("GET", "/api/v1/jobs"), ("POST", "/api/v1/orchestrate"),
                  ("GET", "/api/v1/jobs/0123456789ab/status"),
                  ("POST", "/api/v1/jobs/0123456789ab/cancel"),
                  ("GET", "/api/v1/jobs/0123456789ab/report"),
                  ("GET", "/api/v1/jobs/0123456789ab/events"),
                  ("GET", "/api/v1/jobs/0123456789ab/timeline"),
                  ("GET", "/api/v1/openapi.json")]
        for key in (None, "", "your-api-kez", "your-api-key-and-more"):
            with service.client(key) as http:
                for method, path in routes:
                    response = http.request(method, path, json=DOC_BODY)
                    assert response.status_code == 401, (key, path)
                    assert response.json()["error"].startswith("Missing or wrong API key")
        with service.client(None) as http:
            assert http.get("/api/v1/health").json()["status"] == "ok"
        with service.client() as http:
            assert http.get("/api/v1/openapi.json").json()["openapi"].startswith("3.")
        assert service.runner.registry.all() == []  # nothing ran without a key


def test_bad_bodies_get_422_with_the_field_and_big_ones_413(tmp_path: Path) -> None:
    with serve(service_config(tmp_path, max_body_bytes=65_536)) as service, \
            service.client() as http:
        cases = [({"request": "x", "config": {"max_workers": 0}}, "config.max_workers"),
                 ({"request": ""}, "request"),
                 ({"request": "x", "config": {"surprise": 1}}, "config.surprise"),
                 ({"config": {}}, "request"),
                 ({"request": "x", "config": {"execution_mode": "dos"}},
                  "config.execution_mode")]
        for body, field in cases:
            response = http.post("/api/v1/orchestrate", json=body)
            assert response.status_code == 422, body
            assert response.json()["detail"][0]["field"] == field
        assert http.post("/api/v1/orchestrate",
                         json={"request": "x" * 20_001, "config": {}}).status_code == 422
        big = http.post("/api/v1/orchestrate", content=b"{" + b" " * 70_000 + b"}",
                        headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and "too large" in big.json()["error"]
        deep = http.post("/api/v1/orchestrate",
                         json={"request": "x", "config": {"current_depth": 3,
                                                          "max_recursion_depth": 2}})
        assert deep.status_code == 403 and "Max recursion depth reached" in deep.json()["error"]
        assert http.get("/api/v1/jobs/not-an-id/status").status_code == 422


def test_project_dir_only_under_an_allowed_root(tmp_path: Path) -> None:
    allowed = tmp_path / "projects"
    make_repo(allowed / "shop", {"README.md": "# shop\n"})
    make_repo(tmp_path / "elsewhere", {"README.md": "# other\n"})
    (allowed / "escape").symlink_to(tmp_path / "elsewhere")
    config = service_config(tmp_path, project_roots=(allowed.resolve(),))
    with serve(config) as service, service.client() as http:
        for path in (str(tmp_path / "elsewhere"), str(allowed / "escape"),
                     str(allowed / ".." / "elsewhere"), "/etc"):
            response = http.post("/api/v1/orchestrate",
                                 json={"request": "x", "config": {"project_dir": path}})
            assert response.status_code == 403, path
            assert response.json()["detail"][0]["field"] == "config.project_dir"
        ok = http.post("/api/v1/orchestrate", json={
            "request": "Build it", "config": {"project_dir": str(allowed / "shop"),
                                              "enable_recursion": False}})
        assert ok.status_code == 202
        status = service.wait(ok.json()["job_id"])
    assert status["results"]["repository"] == str((allowed / "shop").resolve())
    branches = subprocess.run(["git", "-C", str(allowed / "shop"), "branch", "--list"],
                              capture_output=True, text=True, check=True).stdout
    assert f"feature/job-{status['job_id']}" in branches


def test_depth_limit_tells_the_agent_and_the_job_goes_on(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service, service.client() as http:
        body = {"request": "shop", "config": {"max_recursion_depth": 0}}
        status = service.wait(http.post("/api/v1/orchestrate", json=body).json()["job_id"])
    assert status["status"] == "completed"
    backend = status["results"]["tasks"][1]
    assert backend["status"] == "success" and backend["child_job_id"] is None
    transcript = Path(status["results"]["workspace"], "depth_0/worker_2/transcript.md")
    assert "Max recursion depth reached" in transcript.read_text()
    assert not Path(status["results"]["workspace"], "depth_1").exists()


def test_one_worker_parent_waiting_for_its_child_does_not_deadlock(tmp_path: Path) -> None:
    with serve(service_config(tmp_path, max_workers=1)) as service, service.client() as http:
        body = {"request": "shop", "config": {"max_workers": 1, "max_recursion_depth": 1}}
        status = service.wait(http.post("/api/v1/orchestrate", json=body).json()["job_id"],
                              timeout=150)
    assert status["status"] == "completed"
    assert [t["status"] for t in status["results"]["tasks"]] == [
        "success", "recursive_success", "success"]
    child = status["results"]["tasks"][1]["child_results"]
    assert [t["status"] for t in child] == ["success", "success"]


def test_cancel_stops_the_whole_tree(tmp_path: Path) -> None:
    agents = demo_agents(delay=0.6)
    with serve(service_config(tmp_path, max_workers=1), scripted(agents)) as service, \
            service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json={"request": "shop"}).json()["job_id"]
        deadline = time.monotonic() + 60
        while not any(r.depth == 1 for r in service.runner.registry.all()):
            assert time.monotonic() < deadline, "the child job never started"
            time.sleep(0.1)
        child = next(r for r in service.runner.registry.all() if r.depth == 1)
        cancelled = http.post(f"/api/v1/jobs/{child.job_id}/cancel").json()
        assert set(cancelled["cancelled_jobs"]) == {job_id, child.job_id}
        status = service.wait(job_id)
        child_status = http.get(f"/api/v1/jobs/{child.job_id}/status").json()
    assert status["status"] == "cancelled" and child_status["status"] == "cancelled"
    assert "cancelled" in [t["status"] for t in status["results"]["tasks"]] or any(
        t["status"] == "failed" for t in status["results"]["tasks"])


def test_budget_covers_the_tree(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service, service.client() as http:
        body = {"request": "shop", "config": {"max_api_calls": 4, "max_workers": 1}}
        status = service.wait(http.post("/api/v1/orchestrate", json=body).json()["job_id"])
    assert status["status"] in ("partial", "failed")
    assert "max_api_calls" in (status["error"] or "")
    records = service.runner.registry.all()
    child = [r for r in records if r.depth == 1]
    assert len(child) == 1 and child[0].status == "failed"  # refused its plan call
    assert "max_api_calls" in (child[0].error or "")
    assert sum(r.usage["api_calls"] for r in records) == 4


def test_live_events_stream_until_the_tree_ends(tmp_path: Path) -> None:
    with serve(service_config(tmp_path)) as service, service.client() as http:
        job_id = http.post("/api/v1/orchestrate", json=DOC_BODY).json()["job_id"]
        kinds, jobs, last_id = [], set(), 0
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("id: "):
                    assert int(line[4:]) > last_id
                    last_id = int(line[4:])
                if line.startswith("data: ") and line != "data: {}":
                    event = json.loads(line[6:])
                    kinds.append(event["kind"])
                    jobs.add(event["job_id"])
        again = http.get(f"/api/v1/jobs/{job_id}/events", params={"after": last_id})
    assert kinds[:2] == ["job_created", "job_submitted"] and kinds[-1] == "job_finished"
    assert {"job_started", "task_status", "model_call", "delegated", "claimed",
            "completed"} <= set(kinds)  # the engine's events and the queue's, in one stream
    assert len(jobs) == 2  # the child's events come with the root's
    assert again.text.strip() == "event: end\ndata: {}"
