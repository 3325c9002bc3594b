"""Claude Code (`claude -p PROMPT --output-format json`) as a worker.

The CLI prints one JSON object when it ends (with `--verbose`, a JSON array of every message
whose last element is that object): `type` "result", `subtype` ("success", "error_max_turns",
"error_during_execution", "error_max_budget_usd", ...), `is_error`, `num_turns`, `session_id`,
`total_cost_usd`, `usage` with `input_tokens`, `output_tokens`, `cache_read_input_tokens` and
`cache_creation_input_tokens`, `result` (the final text, absent on error subtypes, which carry
`errors` instead). Older releases called the cost `cost_usd`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..models import Usage
from .spec import CLAUDE_CODE, Backend, CliReport, CliRequest, WorkerSpec

CREDENTIALS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
               "ANTHROPIC_BASE_URL")


def build(spec: WorkerSpec, executable: Sequence[str], request: CliRequest) -> list[str]:
    argv = [*executable, "-p", request.prompt, "--output-format", "json",
            "--max-turns", str(spec.max_turns)]
    if spec.model:
        argv += ["--model", spec.model]
    if request.resume_id:
        argv += ["--resume", request.resume_id]
    elif request.session_id:
        argv += ["--session-id", request.session_id]
    if spec.skip_permissions:
        argv.append("--dangerously-skip-permissions")
    else:
        argv += ["--permission-mode", "acceptEdits"]  # file edits yes, other tools as set
    if spec.verbose:
        argv.append("--verbose")
    return argv + list(spec.args)


def _result_object(stdout: str) -> Mapping[str, Any] | None:
    """The `type: result` object, from one JSON value or, failing that, JSON lines."""
    candidates: list[Any] = []
    try:
        value = json.loads(stdout)
        candidates = value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        for line in stdout.splitlines():
            try:
                candidates.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    for item in reversed(candidates):
        if isinstance(item, Mapping) and item.get("type") == "result":
            return item
    return None


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def parse_result(result: Mapping[str, Any]) -> CliReport:
    """A `type: result` object as a report; an error subtype is an error whatever is_error says."""
    usage_data = result.get("usage")
    usage_map: Mapping[str, Any] = usage_data if isinstance(usage_data, Mapping) else {}
    usage = Usage(
        input_tokens=_count(usage_map, "input_tokens"),
        output_tokens=_count(usage_map, "output_tokens"),
        cache_read_tokens=_count(usage_map, "cache_read_input_tokens"),
        cache_write_tokens=_count(usage_map, "cache_creation_input_tokens"),
    )
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    subtype = str(result.get("subtype") or "")
    text = result.get("result") if isinstance(result.get("result"), str) else ""
    turns = result.get("num_turns") if isinstance(result.get("num_turns"), int) else None
    is_error = bool(result.get("is_error")) or subtype not in ("", "success")
    error = None
    if is_error:
        errors = [str(e) for e in result.get("errors") or [] if str(e).strip()]
        detail = "; ".join(errors) or str(text or "").strip() or "no message"
        error = f"Claude Code ended with {subtype or 'an error'}: {detail}"
    return CliReport(
        text=str(text or ""),
        is_error=is_error,
        error=error,
        turns=turns,
        session_id=result.get("session_id") if isinstance(result.get("session_id"), str) else None,
        usage=usage,
        usage_known=bool(usage_map),
        cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool)
        else None,
        api_calls=turns or 0,
    )


def parse(stdout: str, stderr: str, exit_code: int) -> CliReport:
    result = _result_object(stdout.strip())
    if result is None:
        tail = (stderr.strip() or stdout.strip())[-2000:] or "no output"
        return CliReport(is_error=True,
                         error=f"Claude Code printed no result (exit code {exit_code}): {tail}")
    report = parse_result(result)
    if exit_code != 0 and not report.is_error:
        tail = stderr.strip()[-2000:] or report.text[-2000:] or "no message"
        return replace(report, is_error=True,
                       error=f"Claude Code exited with code {exit_code}: {tail}")
    return report


BACKEND = Backend(
    kind=CLAUDE_CODE,
    name="Claude Code",
    program="claude",
    install="Install it with `npm install -g @anthropic-ai/claude-code`, or set "
            "claude_cli.command (or orchestrator.claude_command) to its path.",
    credentials=lambda spec: CREDENTIALS,
    build=build,
    parse=parse,
    resumable=True,
    chooses_session_id=True,
)
