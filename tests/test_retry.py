"""Retry policy: which errors are retried, how long we wait, when we give up."""

from __future__ import annotations

import email.utils
import time

import pytest
from agent_team.errors import ModelAPIError
from agent_team.retry import (
    RETRYABLE_STATUSES,
    RetryPolicy,
    call_with_retries,
    is_retryable_status,
    parse_retry_after,
)


def api_error(status: int | None, *, retryable: bool = True, retry_after: float | None = None):
    error = ModelAPIError(f"status {status}", status=status, retryable=retryable)
    error.retry_after = retry_after
    return error


class Flaky:
    """Raises the given errors in order, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retryable_statuses_table() -> None:
    assert sorted(RETRYABLE_STATUSES) == [408, 409, 429, 500, 502, 503, 504, 529]
    for status in (400, 401, 403, 404, 413, 422, 501):
        assert not is_retryable_status(status)
    assert is_retryable_status(400, {"x-should-retry": "true"})
    assert not is_retryable_status(503, {"x-should-retry": "false"})


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": date}) <= 31


def test_backoff_doubles_and_is_capped_without_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_full_jitter_draws_between_zero_and_backoff() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=30.0)
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(3, rand=lambda: 0.5) == 4.0
    assert all(0 <= policy.delay(3) <= 8.0 for _ in range(100))


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(retry_after_ceiling=60.0)
    assert policy.delay(1, 12.0) == 12.0
    assert policy.delay(1, 3600.0) == 60.0


def test_retries_then_succeeds_with_callback_and_sleep() -> None:
    fn = Flaky(api_error(429, retry_after=3.0), api_error(None), api_error(529))
    slept: list[float] = []
    seen: list[tuple[int, float, int | None]] = []
    result = call_with_retries(
        fn,
        RetryPolicy(jitter=False),
        sleep=slept.append,
        on_retry=lambda n, delay, err: seen.append((n, delay, err.status)),
    )
    assert result == "ok"
    assert fn.calls == 4
    assert slept == [3.0, 2.0, 4.0]
    assert seen == [(1, 3.0, 429), (2, 2.0, None), (3, 4.0, 529)]


def test_non_retryable_error_is_raised_at_once() -> None:
    fn = Flaky(api_error(400, retryable=False))
    slept: list[float] = []
    with pytest.raises(ModelAPIError) as info:
        call_with_retries(fn, RetryPolicy(), sleep=slept.append)
    assert fn.calls == 1 and slept == []
    assert info.value.status == 400 and info.value.attempts == 1


def test_gives_up_after_max_retries() -> None:
    fn = Flaky(*[api_error(503) for _ in range(10)])
    slept: list[float] = []
    with pytest.raises(ModelAPIError) as info:
        call_with_retries(fn, RetryPolicy(max_retries=2), sleep=slept.append)
    assert fn.calls == 3 and len(slept) == 2
    assert info.value.status == 503
    assert info.value.attempts == 3
    assert "gave up after 3 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, ModelAPIError)


def test_other_exceptions_are_not_retried() -> None:
    fn = Flaky(ValueError("bug"))
    with pytest.raises(ValueError):
        call_with_retries(fn, RetryPolicy(), sleep=lambda s: None)
    assert fn.calls == 1
