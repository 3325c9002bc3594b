"""OpenAI Codex (`codex exec --json PROMPT`) as a worker.

`--json` prints one event per line: `thread.started` (`thread_id`, the id `codex exec resume`
takes), `turn.started`, `item.started` / `item.updated` / `item.completed` (an `item` whose
`type` is agent_message, reasoning, command_execution, file_change, ...), `turn.completed`
with `usage` {input_tokens, cached_input_tokens, output_tokens}, `turn.failed` with
`error.message`, and a top-level `error` with `message`. Codex reports no cost: unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..models import Usage
from .spec import CODEX, Backend, CliReport, CliRequest, WorkerSpec

CREDENTIALS = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL")


def build(spec: WorkerSpec, executable: Sequence[str], request: CliRequest) -> list[str]:
    argv = [*executable, "exec", "--json"]
    if spec.skip_permissions:
        argv.append("--dangerously-bypass-approvals-and-sandbox")
    else:
        argv += ["--sandbox", "workspace-write"]
    argv += list(spec.args)
    if request.resume_id:  # a resumed session keeps its model
        return [*argv, "resume", request.resume_id, request.prompt]
    if spec.model:
        argv += ["--model", spec.model]
    return [*argv, request.prompt]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def parse(stdout: str, stderr: str, exit_code: int) -> CliReport:
    session_id: str | None = None
    usage = Usage()
    turns = 0
    text = ""
    error: str | None = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            session_id = event["thread_id"]
        elif kind == "turn.completed":
            counts = _mapping(event.get("usage"))
            cached = _int(counts, "cached_input_tokens")
            usage += Usage(max(_int(counts, "input_tokens") - cached, 0),
                           _int(counts, "output_tokens"), cached, 0)
            turns += 1
        elif kind == "turn.failed":
            failure = _mapping(event.get("error"))
            error = str(failure.get("message") or "the turn failed")
            turns += 1
        elif kind == "error":
            error = str(event.get("message") or "error")
        elif kind == "item.completed":
            item = _mapping(event.get("item"))
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                text = item["text"]
    if error is None and exit_code != 0:
        error = (stderr.strip() or stdout.strip())[-2000:] or "no message"
        error = f"exited with code {exit_code}: {error}"
    return CliReport(
        text=text,
        is_error=error is not None,
        error=f"Codex failed: {error}" if error is not None else None,
        turns=turns or None,
        session_id=session_id,
        usage=usage,
        usage_known=turns > 0,
        cost_usd=None,
        api_calls=turns,
    )


BACKEND = Backend(
    kind=CODEX,
    name="Codex",
    program="codex",
    install="Install it with `npm install -g @openai/codex`, or set the role's "
            "worker.executable to its path.",
    credentials=lambda spec: CREDENTIALS,
    build=build,
    parse=parse,
    resumable=True,
)
