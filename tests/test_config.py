"""Run configuration: defaults, the config file, flags, and what is refused (with where)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from agent_team.config import (
    DEFAULTS,
    Config,
    build_config,
    config_schema,
    find_config_file,
    load_config_file,
    validate_config,
)
from agent_team.errors import ConfigError, UserError

# The usage guide's "Production Deployment" example, verbatim.
GUIDE_CONFIG = """{
  "project_dir": "/app/my-project",
  "api_provider": "anthropic",
  "model": "claude-sonnet-4-20250514",

  "agents": {
    "manager": {
      "max_tokens": 8000,
      "temperature": 0.7
    },
    "backend-dev": {
      "max_tokens": 8000,
      "temperature": 0.3
    },
    "frontend-dev": {
      "max_tokens": 8000,
      "temperature": 0.3
    }
  },

  "coordination": {
    "check_interval_seconds": 30,
    "max_iterations": 50,
    "auto_merge": false,
    "parallel_execution": true
  },

  "limits": {
    "max_api_calls": 100,
    "token_budget": 500000,
    "cost_limit_usd": 50
  }
}
"""


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def refused(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(data, source="orchestrator-config.json")
    return str(info.value)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = build_config(project_dir=tmp_path)
    assert config.source is None
    assert config.data == DEFAULTS
    assert config["api_provider"] is None
    assert config.coordination["max_workers"] == 3
    assert config.coordination["auto_merge"] is False
    assert config.limits == {"max_api_calls": None, "token_budget": None, "cost_limit_usd": None}
    assert config.agents == {}


def test_defaults_validate_against_the_schema() -> None:
    defaults = {k: v for k, v in DEFAULTS.items() if v is not None}
    defaults["limits"] = {}
    validate_config(defaults, source="defaults")


def test_configs_do_not_share_mutable_defaults(tmp_path: Path) -> None:
    first = build_config(project_dir=tmp_path)
    first.coordination["max_workers"] = 9
    first.agents["backend-dev"] = {"model": "x"}
    second = build_config(project_dir=tmp_path)
    assert second.coordination["max_workers"] == 3
    assert second.agents == {}
    assert Config().coordination["max_workers"] == 3
    assert DEFAULTS["coordination"]["max_workers"] == 3


def test_guide_example_validates_and_merges_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-config.json"
    path.write_text(GUIDE_CONFIG, encoding="utf-8")

    config = build_config(project_dir=tmp_path)

    assert config.source == path
    assert config["api_provider"] == "anthropic"
    assert config["model"] == "claude-sonnet-4-20250514"
    assert config.agents["backend-dev"] == {"max_tokens": 8000, "temperature": 0.3}
    assert config.coordination["check_interval_seconds"] == 30
    assert config.coordination["max_iterations"] == 50
    assert config.coordination["parallel_execution"] is True
    assert config.coordination["max_workers"] == 3, "keys the file omits keep their default"
    assert config.coordination["test_timeout_seconds"] == 900
    assert config.limits == {"max_api_calls": 100, "token_budget": 500000, "cost_limit_usd": 50}
    assert config["retry"]["max_retries"] == 4


def test_file_then_flags_precedence(tmp_path: Path) -> None:
    write_json(
        tmp_path / "orchestrator-config.json",
        {
            "api_provider": "openai",
            "model": "gpt-4.1",
            "coordination": {"max_workers": 5, "auto_merge": True},
            "limits": {"cost_limit_usd": 10},
        },
    )
    config = build_config(
        project_dir=tmp_path,
        overrides={
            "api_provider": "anthropic",
            "model": None,
            "coordination": {"max_workers": 2, "auto_merge": None, "max_task_attempts": None},
            "limits": {"cost_limit_usd": None, "max_api_calls": 40},
        },
    )
    assert config["api_provider"] == "anthropic", "a flag beats the file"
    assert config["model"] == "gpt-4.1", "a None flag leaves the file's value"
    assert config.coordination["max_workers"] == 2
    assert config.coordination["auto_merge"] is True
    assert config.coordination["max_task_attempts"] == 1, "a None flag leaves the default"
    assert config.limits["cost_limit_usd"] == 10
    assert config.limits["max_api_calls"] == 40


def test_flags_without_a_file(tmp_path: Path) -> None:
    config = build_config(project_dir=tmp_path, overrides={"test_command": "pytest -x"})
    assert config["test_command"] == "pytest -x"
    assert config.source is None


def test_invalid_flag_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the effective configuration .*\$\.coordination"):
        build_config(project_dir=tmp_path, overrides={"coordination": {"max_workers": 0}})


def test_explicit_config_path_beats_the_project_file(tmp_path: Path) -> None:
    write_json(tmp_path / "orchestrator-config.json", {"model": "from-project"})
    explicit = write_json(tmp_path / "elsewhere" / "ci.json", {"model": "from-flag"})
    config = build_config(project_dir=tmp_path, config_path=explicit)
    assert config.source == explicit
    assert config["model"] == "from-flag"


def test_unknown_top_level_key_is_refused_with_its_path() -> None:
    message = refused({"modle": "gpt-4.1"})
    assert message.startswith("orchestrator-config.json is not a valid orchestrator config")
    assert "at $.modle: unknown key 'modle'" in message
    assert "model" in message


def test_unknown_nested_key_is_refused_with_its_path() -> None:
    message = refused({"coordination": {"max_worker": 4}})
    assert "at $.coordination.max_worker: unknown key 'max_worker'" in message
    assert "max_workers" in message


def test_unknown_key_in_an_agent_entry() -> None:
    message = refused({"agents": {"backend-dev": {"temprature": 0.2}}})
    assert "at $.agents.backend-dev.temprature: unknown key" in message


def test_wrong_type_names_the_path() -> None:
    message = refused({"coordination": {"max_workers": "four"}})
    assert "at $.coordination.max_workers: 'four' is not of type 'integer'" in message


def test_out_of_range_value() -> None:
    message = refused({"agents": {"qa-tester": {"temperature": 3}}})
    assert "$.agents.qa-tester.temperature" in message


def test_bad_role_name_in_agents() -> None:
    message = refused({"agents": {"Backend Dev": {"system": "x"}}})
    assert "$.agents" in message
    assert "'Backend Dev'" in message


def test_unknown_provider() -> None:
    assert "$.api_provider" in refused({"api_provider": "gemini"})


def test_price_override_needs_input_and_output() -> None:
    message = refused({"prices": {"my-model": {"input": 1.0}}})
    assert "$.prices.my-model" in message
    assert "'output' is a required property" in message


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"api_key": "sk-ant-xxxxxxxx"}, "$.api_key"),
        ({"agents": {"backend-dev": {"api_key": "x"}}}, "$.agents.backend-dev.api_key"),
        ({"ANTHROPIC_API_KEY": "x"}, "$.ANTHROPIC_API_KEY"),
        ({"coordination": {"openai-api-key": "x"}}, "$.coordination.openai-api-key"),
        ({"agents": {"qa": {"apiKey": "x"}}}, "$.agents.qa.apiKey"),
        ({"extra": [{"nested": {"api_key": "x"}}]}, "$.extra[0].nested.api_key"),
    ],
)
def test_api_keys_are_refused_anywhere(data: dict[str, Any], path: str) -> None:
    message = refused(data)
    assert path in message
    assert "environment" in message
    assert "ANTHROPIC_API_KEY" in message
    assert "export" in message


def test_refused_api_key_is_not_echoed(tmp_path: Path) -> None:
    path = write_json(tmp_path / "orchestrator-config.json", {"api_key": "sk-ant-secret-123456"})
    with pytest.raises(ConfigError) as info:
        build_config(project_dir=tmp_path)
    assert "sk-ant-secret-123456" not in str(info.value)
    assert str(path) in str(info.value)


def test_token_budget_is_not_mistaken_for_a_secret() -> None:
    validate_config({"limits": {"token_budget": 1000}}, source="x")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-config.json"
    path.write_text('{\n  "model": "gpt-4.1",\n  "limits": {,}\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid JSON" in message
    assert "line 3, column 14" in message


def test_config_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"model": "gpt-4.1"}).encode())
    assert load_config_file(path) == {"model": "gpt-4.1"}


def test_config_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", ["model"])
    with pytest.raises(ConfigError, match=r"at \$: .* is not of type 'object'"):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        build_config(project_dir=tmp_path, config_path=missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert isinstance(info.value, UserError)
    assert info.value.exit_code == 2


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-config.json"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config_file(path)


def test_find_config_file_lookup_order(tmp_path: Path) -> None:
    assert find_config_file(tmp_path) is None

    nested = write_json(tmp_path / ".ai-agents" / "orchestrator-config.json", {})
    assert find_config_file(tmp_path) == nested

    top = write_json(tmp_path / "orchestrator-config.json", {})
    assert find_config_file(tmp_path) == top

    top.unlink()
    top.mkdir()
    assert find_config_file(tmp_path) == nested, "a directory of that name is not a config"


def test_project_file_in_ai_agents_is_used(tmp_path: Path) -> None:
    write_json(tmp_path / ".ai-agents" / "orchestrator-config.json", {"model": "nested"})
    assert build_config(project_dir=tmp_path)["model"] == "nested"


def test_invalid_project_file_is_refused_when_found(tmp_path: Path) -> None:
    path = write_json(tmp_path / "orchestrator-config.json", {"coordination": {"bogus": 1}})
    with pytest.raises(ConfigError) as info:
        build_config(project_dir=tmp_path)
    assert str(path) in str(info.value)
    assert "$.coordination.bogus" in str(info.value)
