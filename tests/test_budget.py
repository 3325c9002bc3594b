"""Cost estimates: table prices, overrides, dated model ids, unknown models, free providers."""

from __future__ import annotations

import datetime
import json

import pytest
from agent_team.budget import PRICES_PATH, estimate_cost, model_names, price_for, price_table
from agent_team.config import validate_config
from agent_team.models import Usage

MILLION = 1_000_000


def test_price_table_is_dated_and_complete() -> None:
    table = json.loads(PRICES_PATH.read_text(encoding="utf-8"))
    datetime.date.fromisoformat(table["as_of"])
    assert table["models"]
    for key, prices in table["models"].items():
        provider, _, model = key.partition("/")
        assert provider in ("anthropic", "openai"), key
        assert model, key
        assert {"input", "output"} <= set(prices), key
        assert all(isinstance(v, (int, float)) and v >= 0 for v in prices.values()), key
        assert prices["output"] >= prices["input"], key
    validate_config({"prices": table["models"]}, source="prices.json")


def test_arithmetic_with_every_token_kind() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=200_000,
        cache_read_tokens=500_000,
        cache_write_tokens=100_000,
    )
    cost = estimate_cost("anthropic", "claude-sonnet-4-5", usage)
    # 1.0 M x $3 + 0.2 M x $15 + 0.5 M x $0.30 + 0.1 M x $3.75
    assert cost == pytest.approx(3.0 + 3.0 + 0.15 + 0.375)


def test_guide_cost_calculation() -> None:
    """The guide: ~24,000 input and ~24,000 output tokens at $15 / $75 per million = $2.16."""
    cost = estimate_cost("anthropic", "claude-opus-4-1", Usage(24_000, 24_000))
    assert cost == pytest.approx(0.36 + 1.80)


def test_each_token_kind_uses_its_own_price() -> None:
    prices = price_table()["models"]["anthropic/claude-sonnet-5-5"]
    for field, key in (
        ("input_tokens", "input"),
        ("output_tokens", "output"),
        ("cache_read_tokens", "cache_read"),
        ("cache_write_tokens", "cache_write"),
    ):
        usage = Usage(**{field: MILLION})
        assert estimate_cost("anthropic", "claude-sonnet-5-5", usage) == pytest.approx(
            prices[key]), field


def test_openai_cache_writes_are_billed_as_input() -> None:
    """OpenAI publishes no separate cache-write rate: those tokens cost the input price."""
    prices = price_table()["models"]["openai/gpt-6.1-sol"]
    usage = Usage(cache_write_tokens=MILLION)
    assert estimate_cost("openai", "gpt-6.1-sol", usage) == pytest.approx(prices["input"])


def test_zero_usage_costs_zero_for_a_known_model() -> None:
    assert estimate_cost("openai", "gpt-4.1", Usage()) == 0.0


def test_unknown_model_is_none_never_zero() -> None:
    assert estimate_cost("openai", "llama3.1:8b", Usage(1000, 1000)) is None
    assert estimate_cost("openai", "llama3.1:8b", Usage()) is None
    assert estimate_cost("anthropic", "gpt-4o", Usage(10, 10)) is None, "provider is part of key"
    assert estimate_cost("mistral", "mistral-large", Usage(10, 10)) is None
    assert price_for("openai", "") is None


def test_scripted_and_local_are_free() -> None:
    usage = Usage(5 * MILLION, MILLION, MILLION, MILLION)
    assert estimate_cost("scripted", "scripted", usage) == 0.0
    assert estimate_cost("openai", "llama3.1:8b", usage, local=True) == 0.0
    # A priced model behind a local proxy is still priced: the proxy forwards to the real API.
    assert estimate_cost("openai", "gpt-4o", usage, local=True) == estimate_cost(
        "openai", "gpt-4o", usage)


def test_override_by_provider_and_model() -> None:
    overrides = {"openai/gpt-4.1": {"input": 1.0, "output": 2.0}}
    assert estimate_cost("openai", "gpt-4.1", Usage(MILLION, MILLION), overrides) == 3.0


def test_override_by_model_name_alone() -> None:
    overrides = {"llama3.1:8b": {"input": 0.1, "output": 0.2}}
    assert estimate_cost("openai", "llama3.1:8b", Usage(MILLION, MILLION), overrides) == (
        pytest.approx(0.3)
    )


def test_provider_key_beats_bare_model_key() -> None:
    overrides = {
        "gpt-4.1": {"input": 9.0, "output": 9.0},
        "openai/gpt-4.1": {"input": 1.0, "output": 1.0},
    }
    assert price_for("openai", "gpt-4.1", overrides) == {"input": 1.0, "output": 1.0}


def test_override_beats_the_table() -> None:
    overrides = {"claude-sonnet-4-5": {"input": 2.0, "output": 10.0}}
    assert estimate_cost("anthropic", "claude-sonnet-4-5", Usage(MILLION, 0), overrides) == 2.0


def test_override_without_cache_prices_charges_cache_at_input_price() -> None:
    overrides = {"my-model": {"input": 2.0, "output": 4.0}}
    usage = Usage(cache_read_tokens=MILLION, cache_write_tokens=MILLION)
    assert estimate_cost("openai", "my-model", usage, overrides) == 4.0


@pytest.mark.parametrize(
    ("provider", "dated", "family"),
    [
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4-0"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "gpt-4.1-2025-04-14", "gpt-4.1"),
        ("openai", "gpt-5-2025-08-07", "gpt-5"),
    ],
)
def test_dated_model_ids_fall_back_to_their_family(provider: str, dated: str, family: str) -> None:
    expected = price_table()["models"][f"{provider}/{family}"]
    assert price_for(provider, dated) == expected
    usage = Usage(123_456, 7_890, 1_000, 0)
    assert estimate_cost(provider, dated, usage) == estimate_cost(provider, family, usage)


def test_exact_dated_entry_wins_over_the_family() -> None:
    table = price_table()["models"]
    assert price_for("anthropic", "claude-sonnet-4-20250514") == (
        table["anthropic/claude-sonnet-4-20250514"]
    )


def test_override_for_the_family_applies_to_dated_ids() -> None:
    overrides = {"claude-sonnet-4-5": {"input": 1.0, "output": 1.0}}
    assert price_for("anthropic", "claude-sonnet-4-5-20250929", overrides) == overrides[
        "claude-sonnet-4-5"
    ]


def test_model_names() -> None:
    assert model_names("gpt-4.1") == ["gpt-4.1"]
    assert model_names("claude-sonnet-4-5-20250929")[:2] == [
        "claude-sonnet-4-5-20250929", "claude-sonnet-4-5",
    ]
    assert model_names("gpt-4o-2024-08-06")[1] == "gpt-4o"
    assert model_names("model-123") == ["model-123"], "only 8-digit or ISO dates are dates"
    assert model_names("20250929") == ["20250929"]


def test_unknown_dated_model_is_still_unknown() -> None:
    assert estimate_cost("anthropic", "claude-future-9-20300101", Usage(1, 1)) is None


def test_usage_addition_and_totals() -> None:
    total = Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40)
    assert total == Usage(11, 22, 33, 44)
    assert total.total_tokens == 110
    assert Usage.from_dict(total.to_dict()) == total


def test_usage_from_partial_or_null_counts() -> None:
    assert Usage.from_dict(None) == Usage()
    assert Usage.from_dict({"input_tokens": 7}) == Usage(7, 0, 0, 0)
    assert Usage.from_dict({"input_tokens": 7, "cache_read_tokens": None}) == Usage(7, 0, 0, 0)
