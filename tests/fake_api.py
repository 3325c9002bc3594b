"""A local HTTP server speaking the Anthropic Messages and OpenAI Chat Completions wire formats.

The real SDK clients are pointed at it, so tests exercise the same serialisation, headers,
status handling and parsing as production, without the internet (the SDKs use `httpx2`, which
`respx` cannot intercept). Tests script responses in a queue and assert on recorded requests::

    from tests.fake_api import anthropic_message, fake_api_server  # noqa: F401

    def test_reply(fake_api):
        fake_api.enqueue(anthropic_message(text="hi"))
        client = anthropic.Anthropic(api_key="test", base_url=fake_api.anthropic_base_url)
        ...
        assert fake_api.requests[0].body["model"] == "claude-test"

Anthropic clients take the base URL without `/v1`, OpenAI clients with it.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
PATHS = (ANTHROPIC_PATH, OPENAI_PATH)

#: Status sent when a request arrives and nothing is scripted. 501 is not in the retry table,
#: so a test that under-scripts fails at once with a readable message instead of retrying.
EXHAUSTED_STATUS = 501

_ids = itertools.count(1)


@dataclass(frozen=True)
class ScriptedResponse:
    """One response the server will send: status, JSON body (or raw text), headers, delay.

    `drop` closes the connection with a TCP reset instead of answering: `"reset"` before any
    byte of the response, `"partial"` after the headers and half of the body.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    path: str | None = None
    drop: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


class FakeAPI:
    """A threaded loopback server replaying scripted responses and recording requests."""

    def __init__(self) -> None:
        self._queue: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.unscripted: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeAPI:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for `anthropic.Anthropic` (the SDK appends `/v1/messages`)."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """Base URL for `openai.OpenAI` (the SDK appends `/chat/completions`)."""
        return f"{self.url}/v1"

    # -- scripting -----------------------------------------------------------------------------

    def enqueue(
        self,
        body: Any = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        path: str | None = None,
        drop: bool | str = False,
    ) -> None:
        """Queue one response; `path` restricts it to requests to that path.

        `drop=True` (or `"reset"`) resets the connection instead of answering; `"partial"`
        resets it in the middle of the body (see `ScriptedResponse`).
        """
        mode = "reset" if drop is True else (drop or None)
        if mode not in (None, "reset", "partial"):
            raise ValueError(f"drop must be True, 'reset' or 'partial', not {drop!r}")
        with self._lock:
            self._queue.append(
                ScriptedResponse(status, body, dict(headers or {}), delay, path, mode)
            )

    def enqueue_error(
        self,
        status: int,
        message: str,
        *,
        flavor: str = "anthropic",
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue an error response with the provider's real error-body shape."""
        body = (
            anthropic_error(message, status=status, error_type=error_type)
            if flavor == "anthropic"
            else openai_error(message, status=status, error_type=error_type)
        )
        self.enqueue(body, status=status, headers=headers)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._queue)

    def assert_all_used(self) -> None:
        """Fail when scripted responses were left over or requests arrived unscripted."""
        assert not self.unscripted, f"requests with no scripted response: {self.unscripted}"
        assert self.remaining == 0, f"{self.remaining} scripted responses were never requested"

    def bodies(self, path: str | None = None) -> list[Any]:
        """Parsed JSON bodies of the recorded requests, optionally only those to `path`."""
        return [r.body for r in self.requests if path is None or r.path == path]

    # -- serving -------------------------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self.requests.append(request)
            for index, scripted in enumerate(self._queue):
                if scripted.path in (None, request.path):
                    del self._queue[index]
                    return scripted
            self.unscripted.append(request)
        message = f"fake API: no scripted response left for {request.method} {request.path}"
        flavor = "anthropic" if request.path == ANTHROPIC_PATH else "openai"
        body = (
            anthropic_error(message, status=EXHAUSTED_STATUS)
            if flavor == "anthropic"
            else openai_error(message, status=EXHAUSTED_STATUS)
        )
        return ScriptedResponse(EXHAUSTED_STATUS, body)


def _make_handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep test output clean."""

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parsed: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                parsed = None
            path = self.path.split("?", 1)[0]
            request = RecordedRequest(
                "POST", path, {k.lower(): v for k, v in self.headers.items()}, parsed, raw
            )
            if path not in PATHS:
                self._send(404, openai_error(f"fake API: unknown path {path}", status=404), {})
                return
            scripted = api._next(request)
            if scripted.delay:
                time.sleep(scripted.delay)
            if scripted.drop == "reset":
                self._reset()
                return
            self._send(scripted.status, scripted.body, scripted.headers,
                       cut=scripted.drop == "partial")

        def _send(
            self, status: int, body: Any, headers: Mapping[str, str], *, cut: bool = False
        ) -> None:
            if isinstance(body, bytes):
                payload, content_type = body, "application/octet-stream"
            elif isinstance(body, str):
                payload, content_type = body.encode(), "text/plain"
            else:
                payload, content_type = json.dumps(body).encode(), "application/json"
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if cut:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def _reset(self) -> None:
            """Close the socket with an RST (linger 0), as a crashed proxy or peer does."""
            self.close_connection = True
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            except OSError:
                pass

    return Handler


# -- response builders -------------------------------------------------------------------------


def anthropic_message(
    text: str = "",
    tool_uses: Sequence[Mapping[str, Any] | tuple[str, Mapping[str, Any]]] = (),
    *,
    usage: Mapping[str, Any] | None = None,
    stop_reason: str | None = None,
    model: str = "claude-test",
) -> dict[str, Any]:
    """A Messages API response body.

    `tool_uses` items: {"name", "input", "id"?} or (name, input); ids are generated when absent.
    """
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for item in tool_uses:
        if isinstance(item, tuple):
            item = {"name": item[0], "input": item[1]}
        content.append(
            {
                "type": "tool_use",
                "id": item.get("id") or f"toolu_{next(_ids):04d}",
                "name": item["name"],
                "input": item.get("input", {}),
            }
        )
    return {
        "id": f"msg_{next(_ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            **(usage or {}),
        },
    }


def anthropic_error(
    message: str, *, status: int = 400, error_type: str | None = None
) -> dict[str, Any]:
    """An Anthropic error body: {"type": "error", "error": {"type", "message"}}."""
    default_types = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    return {
        "type": "error",
        "error": {"type": error_type or default_types.get(status, "api_error"), "message": message},
        "request_id": f"req_{next(_ids):04d}",
    }


def openai_completion(
    text: str | None = None,
    tool_calls: Sequence[Mapping[str, Any] | tuple[str, Any]] = (),
    *,
    finish_reason: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int | None = None,
    usage: Mapping[str, Any] | None = None,
    model: str = "gpt-test",
) -> dict[str, Any]:
    """A Chat Completions response body.

    `tool_calls` items: {"name", "arguments", "id"?} or (name, arguments); dict arguments are
    JSON-encoded, string arguments are sent verbatim (to script malformed JSON). `usage`
    replaces the computed usage object; pass {} to omit it entirely, as some servers do.
    """
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        calls = []
        for item in tool_calls:
            if isinstance(item, tuple):
                item = {"name": item[0], "arguments": item[1]}
            arguments = item.get("arguments", {})
            calls.append(
                {
                    "id": item.get("id") or f"call_{next(_ids):04d}",
                    "type": "function",
                    "function": {
                        "name": item["name"],
                        "arguments": arguments
                        if isinstance(arguments, str)
                        else json.dumps(arguments),
                    },
                }
            )
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": f"chatcmpl-{next(_ids):04d}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
                "logprobs": None,
            }
        ],
    }
    if usage is None:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if usage:
        body["usage"] = dict(usage)
    return body


def openai_error(
    message: str, *, status: int = 400, error_type: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
    default_types = {401: "invalid_request_error", 429: "rate_limit_exceeded"}
    return {
        "error": {
            "message": message,
            "type": error_type or default_types.get(status, "invalid_request_error"),
            "param": None,
            "code": code,
        }
    }


@pytest.fixture(name="fake_api")
def fake_api_server() -> Iterator[FakeAPI]:
    """A started fake API server, shut down after the test.

    Import `fake_api_server` (the fixture is named `fake_api`) so that ruff does not read the
    test's `fake_api` argument as a redefinition of the import.
    """
    with FakeAPI() as api:
        yield api


fake_api = fake_api_server
