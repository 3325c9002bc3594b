"""OpenAI-compatible local servers (Ollama, vLLM, llama.cpp) and per-role models, end to end.

The real `openai` SDK talks to a loopback server speaking /v1/chat/completions, as those servers
do; no key is set, as on a machine that only runs a local model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_team.state import TeamState
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.fake_api import fake_api_server, openai_completion  # noqa: F401

FILES = {"README.md": "# app\n", "test_smoke.py": "def test_smoke():\n    assert True\n"}
PLAN = json.dumps({"tasks": [{"task_id": "T1", "description": "Write t1.txt",
                              "assigned_to": "backend-dev", "dependencies": []}],
                   "decisions": []})


def enqueue_run(fake_api: Any) -> None:
    fake_api.enqueue(openai_completion(PLAN))
    fake_api.enqueue(openai_completion(tool_calls=[("write_file", {
        "path": "t1.txt", "content": "from a local model\n"})]))
    fake_api.enqueue(openai_completion(tool_calls=[("finish_task", {
        "status": "completed", "summary": "t1.txt written."})]))
    fake_api.enqueue(openai_completion("T1 is done."))


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_local_server_without_a_key(
    how: str, tmp_path: Path, fake_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    enqueue_run(fake_api)
    kwargs: dict[str, Any] = {"model_name": "qwen2.5-coder:14b"}
    if how == "flag":
        kwargs.update(api_provider="openai", base_url=fake_api.openai_base_url)
    else:
        monkeypatch.setenv("OPENAI_BASE_URL", fake_api.openai_base_url)
    summary = SimpleOrchestrator(project, test_command="python -m pytest -q",
                                 output=lambda _: None, **kwargs).run("Local model feature")

    assert summary["exit_code"] == 0
    fake_api.assert_all_used()
    bodies = fake_api.bodies("/v1/chat/completions")
    assert {b["model"] for b in bodies} == {"qwen2.5-coder:14b"}
    assert all("max_tokens" in b and "max_completion_tokens" not in b for b in bodies)
    assert summary["cost_usd"] == 0.0, "an unpriced model on this machine costs nothing"


def test_each_role_uses_its_own_model(
    tmp_path: Path, fake_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strong model for the manager, a cheaper one for the workers, from the config file."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    (project / "orchestrator-config.json").write_text(json.dumps({
        "api_provider": "openai",
        "base_url": fake_api.openai_base_url,
        "model": "worker-model",
        "agents": {"manager": {"model": "planner-model", "max_tokens": 4000}},
    }))
    enqueue_run(fake_api)
    summary = SimpleOrchestrator(project, test_command="python -m pytest -q",
                                 output=lambda _: None).run("Per-role models")

    assert summary["exit_code"] == 0
    models = [b["model"] for b in fake_api.bodies("/v1/chat/completions")]
    assert models == ["planner-model", "worker-model", "worker-model", "planner-model"]
    first = fake_api.bodies("/v1/chat/completions")[0]
    assert first["max_tokens"] == 4000
    usage = TeamState.for_project(project).read()["usage"]["by_agent"]
    assert usage["manager"]["api_calls"] == 2 and usage["backend-dev"]["api_calls"] == 2
