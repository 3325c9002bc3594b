"""Models per role: built once per configuration, shared by that role's agents.

The factory belongs to the team (it holds no run state); retry notices go to whoever
listens, which is the run in progress.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from .budget import FREE_PROVIDERS, price_for
from .errors import ConfigError
from .models import ChatModel, create_model, detect_provider
from .recording import RecordingModel, SessionRecorder
from .roles import Role
from .settings import Settings

LOCAL_HOSTS = ("localhost", "::1", "0.0.0.0")

#: (role, attempt, delay in seconds, error) of one retried API call.
RetryListener = Callable[[str, int, float, Exception], None]


def resolve_provider(settings: Settings, injected: ChatModel | None) -> str:
    """The run's provider: the injected model's, the config's, or the one whose key is set."""
    if injected is not None:
        return injected.provider
    provider = settings.api_provider or detect_provider()
    if provider is None:
        raise ConfigError(
            "No model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY in the environment, "
            "or pass --api-provider (anthropic, openai, or scripted with --session FILE). "
            "To try the tool offline without a key, run with --demo."
        )
    return provider


class ModelFactory:
    """Builds and caches the model adapter of each role."""

    def __init__(
        self,
        settings: Settings,
        roles: Mapping[str, Role],
        *,
        injected: ChatModel | None = None,
        recorder: SessionRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.roles = roles
        self.recorder = recorder
        self.provider = resolve_provider(settings, injected)
        if injected is not None and recorder is not None:
            injected = RecordingModel(injected, recorder)
        self._injected = injected
        self._models: dict[str, ChatModel] = {}
        self._lock = threading.Lock()
        self._listeners: list[RetryListener] = []

    def add_retry_listener(self, listener: RetryListener) -> None:
        self._listeners.append(listener)

    def remove_retry_listener(self, listener: RetryListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def for_role(self, role: str) -> ChatModel:
        """The model adapter of a role, built on first use."""
        if self._injected is not None:
            return self._injected
        spec = self.roles.get(role) or Role(role, "")
        provider = spec.provider or self.provider
        if provider == "scripted":  # one replay shared by every role: each queue read once
            key = "scripted"
        else:
            key = f"{provider}|{spec.model}|{spec.base_url}|{spec.max_tokens}|{spec.temperature}"
        with self._lock:
            if key not in self._models:
                self._models[key] = self._create(role, spec, provider)
            return self._models[key]

    def _create(self, role: str, spec: Role, provider: str) -> ChatModel:
        retry = self.settings.retry
        created = create_model(
            provider,
            model=spec.model or self.settings.model,
            base_url=spec.base_url or self.settings.base_url,
            session=self.settings.session,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            retry=retry.as_dict(),
            timeout=retry.request_timeout_seconds,
            on_retry=lambda attempt, delay, error: self._on_retry(role, attempt, delay, error),
        )
        if self.recorder is not None:
            created = RecordingModel(created, self.recorder)
        return created

    def _on_retry(self, role: str, attempt: int, delay: float, error: Exception) -> None:
        for listener in list(self._listeners):
            listener(role, attempt, delay, error)

    def is_local(self, role: str) -> bool:
        """Whether the role's model is served from this machine (a local server or proxy)."""
        spec = self.roles.get(role)
        url = (spec.base_url if spec else None) or self.settings.base_url or os.environ.get(
            "OPENAI_BASE_URL", "")
        host = urlsplit(url).hostname or ""
        return host in LOCAL_HOSTS or host.startswith("127.")

    def input_price(self, role: str) -> float | None:
        model = self.for_role(role)
        prices = price_for(model.provider, model.model, self.settings.prices)
        return prices["input"] if prices else None

    def check_prices_for_cost_limit(self) -> None:
        """A cost limit needs a price for every model in use: refuse to start without one."""
        if self.settings.limits.cost_limit_usd is None:
            return
        for role in self.roles:
            model = self.for_role(role)
            if model.provider in FREE_PROVIDERS or self.is_local(role):
                continue
            if price_for(model.provider, model.model, self.settings.prices) is None:
                raise ConfigError(
                    f"cost_limit_usd is set, but model {model.model!r} ({model.provider}) used "
                    f"by {role} has no price in the table, so its cost cannot be counted. Add "
                    f"\"prices\": {{\"{model.provider}/{model.model}\": {{\"input\": ..., "
                    "\"output\": ...}}} (USD per million tokens) to orchestrator-config.json."
                )
