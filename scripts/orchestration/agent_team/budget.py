"""Cost estimates from the provider's own token counts and a dated price table.

A model missing from the table has an unknown cost: it is reported as unknown, never as zero.
Local servers and the scripted model cost nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .models import Usage

PRICES_PATH = Path(__file__).parent / "data" / "prices.json"
FREE_PROVIDERS = ("scripted",)
_DATED = re.compile(r"(?P<family>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2})")


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    return json.loads(PRICES_PATH.read_text(encoding="utf-8"))


def model_names(model: str) -> list[str]:
    """The model id, then the names its price may be listed under.

    A dated id (claude-sonnet-4-5-20250929, gpt-4o-2024-08-06) falls back to its family
    (claude-sonnet-4-5, gpt-4o) and to the family's aliases (claude-opus-4-0,
    claude-3-5-haiku-latest), which is how the providers name undated models.
    """
    names = [model]
    match = _DATED.fullmatch(model)
    if match:
        family = match["family"]
        names += [family, f"{family}-0", f"{family}-latest"]
    return names


def price_for(
    provider: str, model: str, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> Mapping[str, float] | None:
    """Per-million-token prices for a model, from config overrides first, then the table.

    Overrides may be keyed "provider/model" or just "model". Dated model ids fall back to
    their undated family name (see `model_names`), in the overrides and in the table.
    """
    overrides = overrides or {}
    names = model_names(model)
    for name in names:
        for key in (f"{provider}/{name}", name):
            if key in overrides:
                return overrides[key]
    table = price_table()["models"]
    for name in names:
        if f"{provider}/{name}" in table:
            return table[f"{provider}/{name}"]
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
