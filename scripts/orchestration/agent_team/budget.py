"""Cost estimates from the provider's own token counts and a dated price table.

A model missing from the table has an unknown cost: it is reported as unknown, never as zero.
Local servers and the scripted model cost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .models import Usage

PRICES_PATH = Path(__file__).parent / "data" / "prices.json"
FREE_PROVIDERS = ("scripted",)


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    return json.loads(PRICES_PATH.read_text(encoding="utf-8"))


def price_for(
    provider: str, model: str, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> Mapping[str, float] | None:
    """Per-million-token prices for a model, from config overrides first, then the table.

    Overrides may be keyed "provider/model" or just "model". Dated model ids such as
    claude-sonnet-4-5-20250929 fall back to their undated family name.
    """
    overrides = overrides or {}
    for key in (f"{provider}/{model}", model):
        if key in overrides:
            return overrides[key]
    table = price_table()["models"]
    candidates = [f"{provider}/{model}"]
    parts = model.split("-")
    if len(parts) > 1 and parts[-1].isdigit() and len(parts[-1]) == 8:
        candidates.append(f"{provider}/{'-'.join(parts[:-1])}")
    for key in candidates:
        if key in table:
            return table[key]
    return None


def estimate_cost(
    provider: str,
    model: str,
    usage: Usage,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    *,
    local: bool = False,
) -> float | None:
    """USD estimate of one call, or None when the price is unknown."""
    if provider in FREE_PROVIDERS or local:
        return 0.0
    prices = price_for(provider, model, overrides)
    if prices is None:
        return None
    per_token = 1 / 1_000_000
    return (
        usage.input_tokens * prices["input"]
        + usage.output_tokens * prices["output"]
        + usage.cache_read_tokens * prices.get("cache_read", prices["input"])
        + usage.cache_write_tokens * prices.get("cache_write", prices["input"])
    ) * per_token
