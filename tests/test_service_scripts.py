"""config.yaml, api_server.py and the shell entry points, run as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from agent_team.errors import ConfigError
from orchestrator.api.config import check_api_key, load_config

from .service_helpers import SCRIPTS, free_port

pytestmark = pytest.mark.timeout(180)
TEMPLATE = SCRIPTS / "config.template.yaml"


def test_template_holds_every_key_of_the_document_and_each_is_honoured(tmp_path: Path) -> None:
    data = yaml.safe_load(TEMPLATE.read_text())
    documented = {"orchestrator": {"execution_mode", "workspace_root"},
                  "workers": {"max_workers", "default_timeout", "max_retries"},
                  "recursion": {"enable", "max_depth"}, "api": {"host", "port", "api_key"},
                  "logging": {"level", "enable_structured", "log_dir"}}
    for section, keys in documented.items():
        assert keys <= set(data[section]), section
    data.update(orchestrator={"execution_mode": "wsl", "workspace_root": "./ws",
                              "claude_command": "/opt/claude"},
                workers={"max_workers": 7, "default_timeout": 42, "max_retries": 0},
                recursion={"enable": False, "max_depth": 1},
                api={"host": "127.0.0.1", "port": 9123, "api_key": "a-secret-key"},
                logging={"level": "DEBUG", "enable_structured": False, "log_dir": "./lg"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path, environ={})
    assert (config.workspace_root, config.max_workers, config.default_timeout,
            config.max_retries, config.recursion_enabled, config.max_depth, config.host,
            config.port, config.api_key, config.log_level, config.structured_logs,
            config.log_dir) == (tmp_path / "ws", 7, 42.0, 0, False, 1, "127.0.0.1", 9123,
                                "a-secret-key", "DEBUG", False, tmp_path / "lg")
    assert any("not applicable" in n for n in config.notes())
    assert load_config(path, environ={"ORCHESTRATOR_API_KEY": "from-env-key"}).api_key == \
        "from-env-key"


def test_unknown_keys_are_refused_with_their_path(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("workers:\n  max_workerz: 3\napi:\n  port: nope\nextra: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    text = str(error.value)
    assert "workers.max_workerz: unknown key" in text
    assert "api.port: 'nope' is not of type 'integer'" in text
    assert "extra: unknown key" in text


def test_server_refuses_to_start_without_a_real_key(tmp_path: Path) -> None:
    for key in ("", "your-secure-api-key", "short"):
        with pytest.raises(ConfigError):
            check_api_key(key)
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_API_KEY"}
    config = tmp_path / "config.yaml"
    config.write_text(TEMPLATE.read_text())
    done = subprocess.run([sys.executable, str(SCRIPTS / "api_server.py"), "--config",
                           str(config)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "No API key" in done.stderr


def test_quick_start_and_check_status_run_offline_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("ORCHESTRATOR_")}
    env.update(ORCHESTRATOR_HOME=str(tmp_path), ORCHESTRATOR_PORT=str(port),
               PYTHON=sys.executable)
    state = tmp_path / ".quick-start"
    try:
        done = subprocess.run([str(SCRIPTS / "quick-start.sh"),
                               "Build a REST API with authentication, user management, and "
                               "data CRUD operations"],
                              capture_output=True, text=True, env=env, timeout=150)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "offline demo" in done.stdout
        assert "completed: 3/3 tasks done" in done.stdout
        job_id = done.stdout.split("Job ", 1)[1].split()[0]
        final = state / "workspace" / f"job_{job_id}" / "FINAL_RESULT.md"
        assert f"Final report: {final}" in done.stdout and final.is_file()
        status = subprocess.run([str(SCRIPTS / "check-status.sh"), job_id], capture_output=True,
                                text=True, env=env, timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"Job {job_id}: completed" in status.stdout
        assert "worker_2_1" in status.stdout and "recursive_success" in status.stdout
        key = (state / "api-key").read_text().strip()
        assert oct((state / "api-key").stat().st_mode & 0o777) == "0o600"
        assert key not in (state / "server.out").read_text()  # the key is never logged
        assert key not in (state / "logs" / "api_server.log").read_text()
        missing = subprocess.run([str(SCRIPTS / "check-status.sh"), "0123456789ab"],
                                 capture_output=True, text=True, env=env, timeout=60)
        assert missing.returncode == 2 and "No job 0123456789ab" in missing.stderr
    finally:
        pid_file = state / "server.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
