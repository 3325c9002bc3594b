"""A real uvicorn server of the orchestration service on 127.0.0.1, for the service tests."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from agent_team.models import ChatModel
from agent_team.scripted import ScriptedModel
from orchestrator.api.app import create_app
from orchestrator.api.config import ServiceConfig
from orchestrator.api.runner import JobRunner

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "orchestration"
DEMO_SESSION = SCRIPTS / "orchestrator" / "api" / "demo-session.json"
KEY = "your-api-key"  # the key of the reference document's examples


def demo_agents(delay: float | None = None) -> dict[str, Any]:
    agents = json.loads(DEMO_SESSION.read_text(encoding="utf-8"))["agents"]
    agents = copy.deepcopy(agents)
    if delay is not None:
        for turns in agents.values():
            for turn in turns:
                turn["delay"] = delay
    return agents


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    config: ServiceConfig
    runner: JobRunner

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while True:
                status = http.get(f"/api/v1/jobs/{job_id}/status").json()
                if status["status"] in ("completed", "partial", "failed", "cancelled"):
                    return status
                assert time.monotonic() < deadline, f"job {job_id} still {status['status']}"
                time.sleep(0.2)


def service_config(tmp: Path, **overrides: Any) -> ServiceConfig:
    values: dict[str, Any] = {"workspace_root": tmp / "workspace", "api_provider": "scripted",
                              "session": DEMO_SESSION, "api_key": KEY, "max_workers": 5}
    values.update(overrides)
    return ServiceConfig(**values)


@contextlib.contextmanager
def serve(config: ServiceConfig,
          model_factory: Callable[[], ChatModel | None] | None = None) -> Iterator[Service]:
    """Run the app under uvicorn in a thread; stop it and its jobs at the end."""
    runner = JobRunner(config, model_factory=model_factory)
    app = create_app(config, runner=runner)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", config, runner)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        runner.shutdown(wait=True)


def scripted(agents: dict[str, Any]) -> Callable[[], ChatModel]:
    return lambda: ScriptedModel(copy.deepcopy(agents))
