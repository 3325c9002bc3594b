"""The one secret rule: which variables commands never see, and what text never holds."""

from __future__ import annotations

import json

import pytest
from agent_team.redaction import (
    SECRET_ENV_PATTERNS,
    SECRET_ENV_RULES,
    is_credential_env_name,
    is_secret_env_name,
    redact,
    redact_value,
    safe_environment,
    secret_pattern,
)


@pytest.mark.parametrize(
    "name",
    [
        "ANTHROPIC_BASE_URL",
        "my_secret_value",
        "GITHUB_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_REGION",
        "TOKEN",
        "APIKEY",
        "API_KEY_FILE",
        "SSH_AUTH_SOCK",
        "DEPLOY_PASSWORD",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_env_name(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "TOKENIZERS_PARALLELISM", "KEYBOARD", "PYTHONPATH", "LANG"]
)
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not is_secret_env_name(name) and not is_credential_env_name(name)


def test_provider_settings_are_withheld_but_not_masked() -> None:
    for name in ("ANTHROPIC_BASE_URL", "OPENAI_MODEL", "AWS_REGION", "SSH_AUTH_SOCK"):
        assert is_secret_env_name(name) and not is_credential_env_name(name)
    for name in ("ANTHROPIC_API_KEY", "openai_api_key", "GH_TOKEN", "SIGNING_KEY"):
        assert is_secret_env_name(name) and is_credential_env_name(name)


def test_every_credential_is_also_withheld() -> None:
    """One table: a value redact() masks is never handed to a command either."""
    assert tuple(pattern for pattern, _ in SECRET_ENV_RULES) == SECRET_ENV_PATTERNS
    for pattern, credential in SECRET_ENV_RULES:
        example = pattern.replace("*", "X")
        assert is_secret_env_name(example), pattern
        assert is_credential_env_name(example) == credential, pattern


def test_safe_environment_drops_secrets_only() -> None:
    env = {
        "PATH": "/usr/bin",
        "HARMLESS_SETTING": "visible",
        "FOO_API_KEY": "sk-fake-123",
        "GITHUB_TOKEN": "ghp-fake",
        "db_password": "hunter2",
        "AWS_REGION": "eu-west-1",
    }
    assert safe_environment(env) == {"PATH": "/usr/bin", "HARMLESS_SETTING": "visible"}


def test_safe_environment_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "abcdefgh-123456")
    monkeypatch.setenv("VISIBLE_SETTING", "yes")
    env = safe_environment()
    assert env["VISIBLE_SETTING"] == "yes" and "SOME_SERVICE_TOKEN" not in env


def test_redact_masks_env_secrets_and_key_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-value-1234567890")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok_abcdefgh12345")
    github = "ghp_" + "a1B2" * 9
    text = f"key=fake-key-value-1234567890 tok=tok_abcdefgh12345 gh={github} AKIAABCDEFGHIJKLMNOP"
    masked = redact(text)
    assert "fake-key-value" not in masked and "tok_abcdefgh12345" not in masked
    assert github not in masked and "AKIAABCDEFGHIJKLMNOP" not in masked
    assert "[REDACTED:ANTHROPIC_API_KEY]" in masked and "[REDACTED:MY_SERVICE_TOKEN]" in masked
    assert redact("sk-ant-api03-" + "x9" * 20) == "[REDACTED]"
    assert redact("sk-proj-" + "Ab3" * 10) == "[REDACTED]"
    assert redact("github_pat_" + "1a" * 20) == "[REDACTED]"
    for harmless in ("risk-assessment-for-the-disk-usage-2024", "task-sk-learn", "TASK-001"):
        assert redact(harmless) == harmless
    monkeypatch.delenv("MY_SERVICE_TOKEN")
    assert redact("tok_abcdefgh12345") == "tok_abcdefgh12345"


@pytest.mark.parametrize(
    "sample",
    [
        "sk-ant-api03-" + "x9" * 10,
        "sk-proj-" + "Ab3" * 10,
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "1a" * 20,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "ASIA" + "ABCDEFGHIJKLMNOP",
        "AIza" + "A1b2_" * 7,
        "xoxb-" + "1234567890-abc",
    ],
)
def test_every_key_shape_is_masked_in_text(sample: str) -> None:
    assert redact(f"see {sample}.") == "see [REDACTED]."
    assert redact(f"x{sample}") == f"x{sample}"  # never from inside a word


def test_provider_settings_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "gpt-model-name-x")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert redact("model gpt-model-name-x in eu-central-1") == (
        "model gpt-model-name-x in eu-central-1"
    )


def test_short_values_are_never_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_TOKEN", "abc")
    assert redact("abc abcdef") == "abc abcdef"


def test_redact_value_walks_keys_lists_and_tuples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_PASSWORD", "abcdefgh-123456")
    value = {"abcdefgh-123456": ["abcdefgh-123456", 3, None, ("x", "abcdefgh-123456")]}
    assert redact_value(value) == {
        "[REDACTED:DEPLOY_PASSWORD]": [
            "[REDACTED:DEPLOY_PASSWORD]",
            3,
            None,
            ["x", "[REDACTED:DEPLOY_PASSWORD]"],
        ]
    }


def test_secret_pattern_finds_json_escaped_values(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = 'abc"def\\ghi-123'
    monkeypatch.setenv("DEPLOY_PASSWORD", secret)
    encoded = json.dumps({"note": secret})
    assert secret_pattern(in_json=True).search(encoded)
    assert not secret_pattern().search(encoded)
    assert secret_pattern(in_json=True) is secret_pattern(in_json=True)  # stable until env changes
    before = secret_pattern(in_json=True)
    monkeypatch.setenv("OTHER_PASSWORD", "zyxwvuts-987")
    assert secret_pattern(in_json=True) is not before
