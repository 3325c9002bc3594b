"""Retrying provider calls: exponential backoff with full jitter, honouring `retry-after`.

Provider errors are classified here too, from two tables: which statuses are worth retrying,
and which say the run's setup is wrong (exit code 2). `api_error` builds every adapter's error.

The SDK clients are built with `max_retries=0` so that every retry happens here, where it is
visible (`on_retry`, logging), configurable (`RetryPolicy`) and testable (injected `sleep`).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, ModelAPIError
from .redaction import redact

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying. 408 request timeout, 409 lock conflict, 429 rate limit,
#: 5xx server trouble, 529 Anthropic overloaded. Connection errors and timeouts (no status)
#: are retryable too; adapters mark them with `retryable=True, status=None`.
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

#: Statuses that say the run is set up wrongly (key, permission, model name or base URL):
#: retrying cannot help, and on the planning call they end the run as bad input (exit 2).
BAD_INPUT_STATUSES: frozenset[int] = frozenset({401, 403, 404})

#: Non-standard header both providers use to override the status table.
SHOULD_RETRY_HEADER = "x-should-retry"

#: Most characters of a provider's error body quoted in a message (a proxy's HTML page).
MAX_DETAIL_CHARS = 300

OnRetry = Callable[[int, float, ModelAPIError], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking the provider again.

    Attributes:
        max_retries: Retries after the first attempt; 0 disables retrying.
        base_delay: Backoff of the first retry in seconds, doubled on each further retry.
        max_delay: Upper bound of the exponential backoff.
        retry_after_ceiling: Upper bound on a server-requested `retry-after` wait, so a
            misbehaving proxy cannot park a run for hours.
        jitter: Full jitter (a uniform draw in [0, backoff]) spreads parallel agents apart.
    """

    max_retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    retry_after_ceiling: float = 60.0
    jitter: bool = True

    def delay(
        self,
        retry_number: int,
        retry_after: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        if retry_after is not None and retry_after >= 0:
            return min(float(retry_after), self.retry_after_ceiling)
        backoff = min(self.max_delay, self.base_delay * (2 ** max(retry_number - 1, 0)))
        return backoff * rand() if self.jitter else backoff


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_retries=0)


def is_retryable_status(status: int | None, headers: Mapping[str, str] | None = None) -> bool:
    """Whether a provider error with this status (and these response headers) is transient."""
    if headers is not None:
        override = headers.get(SHOULD_RETRY_HEADER)
        if override == "true":
            return True
        if override == "false":
            return False
    return status in RETRYABLE_STATUSES


def brief(text: object, limit: int = MAX_DETAIL_CHARS) -> str:
    """One line of at most `limit` characters from an error body, secrets masked."""
    line = " ".join(str(text).split())
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return redact(line)


def api_error(
    message: str,
    *,
    status: int | None,
    headers: Mapping[str, str] | None = None,
    retryable: bool | None = None,
) -> ModelAPIError:
    """A ModelAPIError classified by the tables above.

    The message is masked (a proxy or local server may echo the key it was sent); the error
    carries `retry_after` and an `exit_code`: 2 for a status in BAD_INPUT_STATUSES, else 1.
    `retryable` defaults to the status table (None means a connection error: retryable).
    """
    if retryable is None:
        retryable = True if status is None else is_retryable_status(status, headers)
    error = ModelAPIError(redact(message), status=status, retryable=retryable)
    error.retry_after = parse_retry_after(headers)
    error.exit_code = (
        EXIT_BAD_INPUT if status in BAD_INPUT_STATUSES else EXIT_FAILED
    )
    return error


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `retry-after`.

    `retry-after` may be seconds (integer or, non-standard, a float) or an HTTP date.
    Returns None when neither header is present or parseable.
    """
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(float(email.utils.mktime_tz(parsed) - time.time()), 0.0)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """Call `fn`, retrying `ModelAPIError`s marked retryable according to `policy`.

    A `retry_after` attribute (seconds) on the error replaces the computed backoff, capped at
    `policy.retry_after_ceiling`. Errors carry an `attempts` attribute; when retries ran out
    the raised error says so in its message and chains the last provider error. Other
    exceptions propagate at once.

    Args:
        fn: The request; called once per attempt.
        policy: Limits and delays.
        sleep: Waits between attempts; tests pass a recorder.
        on_retry: Called as `on_retry(retry_number, delay, error)` before each wait.
    """
    retry_number = 0
    while True:
        try:
            return fn()
        except ModelAPIError as error:
            if not error.retryable or retry_number >= policy.max_retries:
                if retry_number == 0 or not error.retryable:
                    error.attempts = retry_number + 1
                    raise
                final = ModelAPIError(
                    f"{error} (gave up after {retry_number + 1} attempts)",
                    status=error.status,
                    retryable=error.retryable,
                )
                final.retry_after = getattr(error, "retry_after", None)
                final.attempts = retry_number + 1
                final.exit_code = error.exit_code
                raise final from error
            retry_number += 1
            delay = policy.delay(retry_number, getattr(error, "retry_after", None))
            log.info(
                "model request failed (%s); retry %d of %d in %.1f s",
                error, retry_number, policy.max_retries, delay,
            )
            if on_retry is not None:
                on_retry(retry_number, delay, error)
            sleep(delay)
