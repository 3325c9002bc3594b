"""What the Anthropic and OpenAI adapters share: loading the SDK, sending one request with
retries, and turning the SDK's exceptions into classified `ModelAPIError`s.

Both official SDKs raise the same four kinds of error (a status error, a timeout, a connection
error, anything else), so one `SdkChatModel` maps them; a `ProviderProfile` holds the words
and header names that differ. Adapters build the request and read the reply.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import MissingDependency, ModelAPIError
from .models import ChatModel, Message, Reply, ToolSpec
from .retry import DEFAULT_RETRY, OnRetry, RetryPolicy, api_error, brief, call_with_retries


def missing_sdk(provider: str, exc: ImportError) -> MissingDependency:
    """The error for a provider whose SDK is not installed, saying how to install it."""
    return MissingDependency(
        f"The {provider} provider needs the {provider} SDK ({exc}). "
        "Run: pip install -r requirements.txt"
    )


def load_sdk(provider: str) -> Any:
    """The provider's SDK module (its name is the provider's), imported only when used."""
    try:
        return importlib.import_module(provider)
    except ImportError as exc:
        raise missing_sdk(provider, exc) from exc


@dataclass(frozen=True)
class ProviderProfile:
    """How one provider's errors read, and how to tell its real replies from a proxy's page.

    Attributes:
        sdk: The SDK module, also the provider's name.
        api: The API as messages name it ("Could not reach the {api} at ...").
        label: Prefix of SDK and status errors ("{label} SDK error", "{label} API error 500").
        base_error: The SDK's root exception class, by name.
        reply_attribute: An attribute every real response has.
        reply_kind: What a real response is, for the message when it is missing.
        request_id_header: The response header carrying the request id.
        code_keys: Keys of the error body naming the error, first non-empty wins.
        hints: What to check, by HTTP status.
        unreachable_hint: Appended when the API cannot be reached at all.
    """

    sdk: str
    api: str
    label: str
    base_error: str
    reply_attribute: str
    reply_kind: str
    request_id_header: str
    code_keys: tuple[str, ...]
    hints: Mapping[int, str] = field(default_factory=dict)
    unreachable_hint: str = ""


def status_error(exc: Any, profile: ProviderProfile) -> ModelAPIError:
    """A ModelAPIError carrying the API's own message (one line, masked), status, retry_after."""
    status = int(exc.status_code)
    headers = exc.response.headers
    body = exc.body
    detail = body.get("error", body) if isinstance(body, dict) else None
    api_message = detail.get("message") if isinstance(detail, dict) else None
    code = None
    if isinstance(detail, dict):
        code = next((detail.get(k) for k in profile.code_keys if detail.get(k)), None)
    message = f"{profile.label} API error {status}"
    if code:
        message += f" ({code})"
    message += f": {brief(api_message or body or exc.message)}"
    if status in profile.hints:
        message += f" {profile.hints[status]}"
    request_id = headers.get(profile.request_id_header)
    if request_id:
        message += f" [request id {request_id}]"
    return api_error(message, status=status, headers=headers)


class SdkChatModel(ChatModel):
    """A model behind an official SDK client built with `max_retries=0`: retries happen here.

    Subclasses set `profile` and implement `make_client`, `build_request`, `create` (the one
    SDK call) and `parse_reply`.
    """

    profile: ClassVar[ProviderProfile]

    def __init__(
        self,
        model: str,
        *,
        client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 8000,
        temperature: float | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 600,
        on_retry: OnRetry | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """Build the adapter around `client`, or around a client made from the other settings.

        Args:
            model: The model id sent with every request.
            client: An SDK client to use as it is (tests, proxies); `api_key`, `base_url` and
                `timeout` are then ignored.
            api_key: The key; by default read from the provider's environment variable.
            base_url: Another endpoint than the provider's own.
            max_tokens: Most tokens of one reply.
            temperature: Sent only when given.
            retry: How transient errors are retried.
            timeout: Seconds the client waits for one answer.
            on_retry: Called before each retry (the orchestrator logs it).
            sleep: Waits between attempts; tests pass a recorder.
        """
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retry = retry
        self.on_retry = on_retry
        self._sleep = sleep
        if client is None:
            client = self.make_client(api_key, base_url, timeout)
        self._client = client

    @abstractmethod
    def make_client(self, api_key: str | None, base_url: str | None, timeout: float) -> Any:
        """The SDK client, with `max_retries=0`; ConfigError when no key can be found."""

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Reply:
        request = self.build_request(system, messages, tools=tools, output_schema=output_schema)
        kwargs: dict[str, Any] = {"on_retry": self.on_retry}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        response = call_with_retries(lambda: self._send(request), self.retry, **kwargs)
        return self.parse_reply(response)

    @abstractmethod
    def build_request(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of the SDK call for one request."""

    @abstractmethod
    def create(self, request: dict[str, Any]) -> Any:
        """Make the SDK call once."""

    @abstractmethod
    def parse_reply(self, response: Any) -> Reply:
        """The neutral Reply of one SDK response."""

    def _send(self, request: dict[str, Any]) -> Any:
        """One attempt; every failure becomes a ModelAPIError that says whether to retry."""
        profile = self.profile
        sdk = load_sdk(profile.sdk)
        try:
            response = self.create(request)
        except sdk.APIStatusError as exc:
            raise status_error(exc, profile) from exc
        except sdk.APITimeoutError as exc:
            raise api_error(
                f"The {profile.api} at {exc.request.url} did not answer within the client "
                f"timeout ({self._timeout()}): {exc.message}",
                status=None,
            ) from exc
        except sdk.APIConnectionError as exc:
            cause = exc.__cause__ or exc.__context__
            raise api_error(
                f"Could not reach the {profile.api} at {exc.request.url}: {exc.message}"
                + (f" ({cause})" if cause else "")
                + profile.unreachable_hint,
                status=None,
            ) from exc
        except getattr(sdk, profile.base_error) as exc:
            raise api_error(
                f"{profile.label} SDK error: {exc}", status=None, retryable=False
            ) from exc
        if isinstance(response, (str, bytes)) or not hasattr(response, profile.reply_attribute):
            # A 200 whose body is not a reply (a proxy's page, a body cut in transit).
            raise api_error(
                f"The {profile.api} answered 200 with a body that is not {profile.reply_kind}: "
                f"{brief(response)!r}",
                status=None,
            )
        return response

    def _timeout(self) -> str:
        timeout = getattr(self._client, "timeout", None)
        seconds = getattr(timeout, "read", timeout)
        return f"{seconds:g} s" if isinstance(seconds, (int, float)) else str(seconds)
