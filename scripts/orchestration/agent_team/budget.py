"""Cost estimates from the provider's own token counts and a dated price table.

A model missing from the table has an unknown cost: it is reported as unknown, never as zero.
Local servers and the scripted model cost nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UsageLimitExceeded
from .models import Usage
from .settings import Limits

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
    """USD estimate of one call, or None when the price is unknown.

    `local` means the base URL is on this machine: a model without a published price there is
    a local model (Ollama, vLLM, llama.cpp) and costs nothing; a priced model behind a local
    proxy is still priced.
    """
    if provider in FREE_PROVIDERS:
        return 0.0
    prices = price_for(provider, model, overrides)
    if prices is None:
        return 0.0 if local else None
    per_token = 1 / 1_000_000
    return (
        usage.input_tokens * prices["input"]
        + usage.output_tokens * prices["output"]
        + usage.cache_read_tokens * prices.get("cache_read", prices["input"])
        + usage.cache_write_tokens * prices.get("cache_write", prices["input"])
    ) * per_token


LIMIT_NAMES = ("max_api_calls", "token_budget", "cost_limit_usd")


class BudgetGuard:
    """Refuses a model call that would go over a run's limits; counts what was spent.

    Totals start from what the state file already records for the feature, so a resumed run
    counts the money spent before it. Token and cost checks add an estimate of the next
    request's input (4 characters a token) to what was spent, so the call that would cross
    the line is the one refused. Once a limit is hit the guard stays tripped: every agent
    stops at its next turn.
    """

    def __init__(self, limits: Limits, spent: Mapping[str, Any] | None = None):
        self.limits = limits.as_dict()
        spent = spent or {}
        self.api_calls = int(spent.get("api_calls", 0))
        self.tokens = sum(int(spent.get(k, 0) or 0) for k in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"))
        self.cost: float | None = spent.get("cost_usd", 0.0)
        if spent and spent.get("cost_known") is False:
            self.cost = None
        self.tripped: UsageLimitExceeded | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return any(value is not None for value in self.limits.values())

    def record(self, usage: Usage, cost: float | None, *, calls: int = 1) -> None:
        """Count finished calls (one model call, or every turn a coding-agent CLI reported)."""
        with self._lock:
            self.api_calls += calls
            self.tokens += usage.total_tokens
            self.cost = None if cost is None or self.cost is None else self.cost + cost

    def check(self, *, request_chars: int = 0, input_price: float | None = None) -> None:
        """Raise UsageLimitExceeded when the next call would exceed a limit."""
        with self._lock:
            if self.tripped is not None:
                raise self.tripped
            estimate = request_chars // 4
            maximum = self.limits["max_api_calls"]
            if maximum is not None and self.api_calls + 1 > maximum:
                self._trip("max_api_calls", self.api_calls, maximum,
                           f"{self.api_calls} API calls made, limit {maximum}")
            maximum = self.limits["token_budget"]
            if maximum is not None and self.tokens + estimate > maximum:
                self._trip("token_budget", self.tokens, maximum,
                           f"{self.tokens:,} tokens used and the next request needs about "
                           f"{estimate:,} more, budget {maximum:,}")
            maximum = self.limits["cost_limit_usd"]
            if maximum is not None and self.cost is not None:
                next_cost = estimate * (input_price or 0.0) / 1_000_000
                if self.cost + next_cost > maximum:
                    self._trip("cost_limit_usd", self.cost, maximum,
                               f"${self.cost:.4f} spent and the next request costs about "
                               f"${next_cost:.4f}, limit ${maximum:.2f}")

    def _trip(self, limit: str, value: float, maximum: float, detail: str) -> None:
        self.tripped = UsageLimitExceeded(
            f"Budget reached ({limit}): {detail}.", limit=limit, value=value, maximum=maximum
        )
        raise self.tripped
