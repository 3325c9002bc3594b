"""The document's classes and extension points, used as the document shows them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agent_team.scripted import ScriptedModel
from claude_orchestrator.config_manager import ConfigurationManager
from claude_orchestrator.exceptions import ConfigurationError, OrchestrationError, WorkerError
from claude_orchestrator.manager import OpusManager
from claude_orchestrator.notifications import NotificationInterface
from claude_orchestrator.orchestrator import ClaudeOrchestrator
from claude_orchestrator.rollback_manager import RollbackManager
from claude_orchestrator.storage import StorageInterface
from claude_orchestrator.worker import BaseWorker, SonnetWorker, WorkerTask

from tests.co_helpers import co, make_project
from tests.orchestration_helpers import (
    file_at,
    integration_turn,
    plan_turn,
    task,
    write_and_finish,
)


class CustomWorker(BaseWorker):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[str] = []

    def process_task(self, task: WorkerTask) -> WorkerTask:
        self.seen.append(task.task_id)
        (task.working_dir / f"{task.task_id}.txt").write_text(task.description + "\n")
        task.status = "completed"
        task.result = {"summary": f"custom worker wrote {task.task_id}.txt"}
        return task


class DatabaseStorage(StorageInterface):
    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    def save(self, key: str, value: Any) -> None:
        self.rows[key] = json.dumps(value)

    def load(self, key: str) -> Any:
        return json.loads(self.rows[key]) if key in self.rows else None


class EmailNotifier(NotificationInterface):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_notification(self, message: str, level: str) -> None:
        self.sent.append((message, level))


class BrokenNotifier(NotificationInterface):
    def send_notification(self, message: str, level: str) -> None:
        raise ConnectionError("mail server down")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "app")


def test_custom_worker_storage_and_notifier_plug_in(project: Path) -> None:
    co("add", "Write the report", "-d", str(project))
    model = ScriptedModel({"manager:plan": [plan_turn([task("T1", "backend-dev")])],
                           "manager:integration": [integration_turn()]})
    worker, storage, email = CustomWorker(working_dir=project), DatabaseStorage(), EmailNotifier()
    orchestrator = ClaudeOrchestrator(None, str(project), worker=worker, storage=storage,
                                      notifiers=[BrokenNotifier(), email], model=model)
    assert orchestrator.run() is True
    assert worker.seen == ["T1"]
    branch = json.loads(co("show", "1", "--json", "-d", str(project)).output)["runs"][0]["branch"]
    assert file_at(project, branch, "T1.txt") == "Work item T1 for backend-dev\n"
    assert any(key.startswith("checkpoints/") for key in storage.rows)  # pre-run, pre-merge
    assert email.sent and email.sent[-1][1] == "success" and "1/1 task(s) done" in email.sent[-1][0]
    assert RollbackManager(working_dir=project, storage=storage).list_checkpoints()
    orchestrator.shutdown()


def test_opus_manager_and_sonnet_worker(project: Path) -> None:
    co("add", "First", "-d", str(project))
    co("add", "Second", "--depends-on", "1", "-d", str(project))
    model = ScriptedModel({"manager:plan": [plan_turn([task("T1", "backend-dev"),
                                                       task("T2", "qa-tester")])],
                           "manager:review": [{"text": "Not yet."}, {"text": "Both fine."}],
                           "backend-dev:T1": write_and_finish("one.txt", "1\n")})
    manager = OpusManager(None, project, model=model)
    planned = manager.analyze_and_plan()
    assert [t.task_id for t in planned] == ["T1", "T2"]
    assert planned[1].dependencies == ("T1",)  # the backlog's dependency, kept
    manager.delegate_task(planned[0])
    done = SonnetWorker(0, project, model=model).process_task(planned[0])
    assert done.status == "completed" and (project / "one.txt").read_text() == "1\n"
    assert manager.review_results() is False  # the backlog task is still in progress
    co("update", "1", "--status", "done", "-d", str(project))
    assert manager.review_results() is True and manager.last_review == "Both fine."


def test_configuration_manager_and_exceptions(tmp_path: Path) -> None:
    manager = ConfigurationManager()
    good = tmp_path / "config.json"
    good.write_text(json.dumps({"execution": {"max_workers": 5}}))
    assert manager.load_config(str(good)).max_workers == 5
    result = manager.validate_config({"execution": {"max_workers": "many"}, "x": 1})
    assert not result.is_valid
    assert any(e.startswith("$.execution.max_workers") for e in result.errors)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"execution": {"task_queue_timeout": 5}}))
    with pytest.raises(ConfigurationError) as caught:
        manager.load_config(str(bad))
    assert "$.execution.task_queue_timeout" in str(caught.value)
    assert isinstance(caught.value, OrchestrationError)
    assert issubclass(WorkerError, OrchestrationError)


def test_a_failing_custom_worker_fails_its_task_not_the_process(project: Path) -> None:
    class Failing(BaseWorker):
        def process_task(self, task: WorkerTask) -> WorkerTask:
            raise WorkerError("the build server is down")

    co("add", "Doomed", "-d", str(project))
    model = ScriptedModel({"manager:plan": [plan_turn([task("T1", "backend-dev")])],
                           "manager:integration": [integration_turn()]})
    orchestrator = ClaudeOrchestrator(None, project, worker=Failing(), model=model)
    assert orchestrator.run() is False and orchestrator.exit_code == 1
    shown = json.loads(co("show", "1", "--json", "-d", str(project)).output)
    assert shown["status"] == "failed"
    assert "the build server is down" in shown["runs"][0]["plan_tasks"][0]["error"]


# -- Slack against a local receiver -----------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.bodies, Receiver.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXX"
    server.shutdown()
    server.server_close()


def run_backlog_cli(project: Path, tmp_path: Path, agents: dict[str, Any],
                    env: dict[str, str]) -> Any:
    from tests.co_helpers import scripted

    return co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(project), env=env)


def test_slack_gets_completion_through_the_env_webhook(project: Path, tmp_path: Path,
                                                       receiver: str) -> None:
    co("add", "Ship it", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("a.txt", "a\n"),
              "manager:integration": [integration_turn()]}
    result = run_backlog_cli(project, tmp_path, agents, {"SLACK_WEBHOOK_URL": receiver})
    assert result.exit_code == 0, result.output
    assert len(Receiver.bodies) == 1
    assert "co run completed: 1/1 task(s) done" in Receiver.bodies[0]["text"]


def test_slack_failures_are_logged_and_never_fail_the_run(project: Path, tmp_path: Path,
                                                          receiver: str) -> None:
    Receiver.status = 500
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"notifications": {"slack": {
        "enabled": True, "webhook_url": receiver, "notify_on_completion": True}}}))
    co("add", "Ship it", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("a.txt", "a\n"),
              "manager:integration": [integration_turn()]}
    result = run_backlog_cli(project, tmp_path, agents, {"ORCHESTRATOR_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert len(Receiver.bodies) == 1


def test_failure_notification_respects_notify_on_error(project: Path, tmp_path: Path,
                                                       receiver: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"notifications": {"slack": {
        "enabled": True, "notify_on_error": False}}}))
    co("add", "Will fail", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "manager:integration": [integration_turn()]}
    env = {"ORCHESTRATOR_CONFIG": str(config), "SLACK_WEBHOOK_URL": receiver}
    assert run_backlog_cli(project, tmp_path, agents, env).exit_code == 1
    assert Receiver.bodies == []


def test_a_stuck_agent_is_notified_as_it_happens_and_a_nudge_is_not() -> None:
    from agent_team.co.notify import Notifications

    email = EmailNotifier()
    on_event = Notifications([BrokenNotifier(), email]).listener("co run 7")

    on_event({"kind": "stuck", "action": "nudge", "role": "backend-dev", "task_id": "T1"})
    on_event({"kind": "stuck", "action": "escalate", "role": "backend-dev", "task_id": "T1",
              "reason": "the same read_file call 3 times"})

    assert email.sent == [("co run 7: agent backend-dev on T1 is stuck (the same read_file "
                           "call 3 times); action: escalate.", "warning")]
