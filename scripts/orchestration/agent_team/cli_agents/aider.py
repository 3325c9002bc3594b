"""aider (`aider --message PROMPT --yes-always --no-auto-commits`) as a worker.

aider prints no JSON. After each model reply it prints a usage line, which this module reads:
`Tokens: 2.3k sent, 1.1k cache write, 512 cache hit, 640 received.` then, when the model has
a price, `Cost: $0.01 message, $0.03 session.` (on the same line, or the next one when both
cache figures are present). Token counts above 999 are rounded ("2.3k", "12k"), so the
figures are aider's, to its precision; "sent" includes the cache writes. No cost line means
the cost is unknown. Only the orchestrator commits: auto and dirty commits are off, and the
chat history files go to a private directory, not the worktree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..models import Usage
from .spec import AIDER, Backend, CliReport, CliRequest, WorkerSpec

_NUMBER = r"[\d.,]+[kKmM]?"
TOKENS = re.compile(
    rf"Tokens:\s*(?P<sent>{_NUMBER}) sent"
    rf"(?:,\s*(?P<write>{_NUMBER}) cache write)?"
    rf"(?:,\s*(?P<hit>{_NUMBER}) cache hit)?"
    rf",\s*(?P<received>{_NUMBER}) received\."
)
COST = re.compile(r"Cost:\s*\$(?P<message>[\d.]+) message,\s*\$(?P<session>[\d.]+) session\.")
ERROR_LINE = re.compile(r"^\s*(?:litellm\.\w+|\w*Error)\b.*", re.MULTILINE)


def credentials(spec: WorkerSpec) -> tuple[str, ...]:
    """The key of the provider the role's model comes from (OpenAI unless set otherwise)."""
    if spec.provider == "anthropic" or (spec.model or "").startswith(("claude", "anthropic/")):
        return ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    return ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")


def build(spec: WorkerSpec, executable: Sequence[str], request: CliRequest) -> list[str]:
    argv = [*executable, "--message", request.prompt, "--yes-always", "--no-auto-commits",
            "--no-dirty-commits", "--no-gitignore", "--no-pretty", "--no-stream",
            "--no-check-update", "--no-show-release-notes", "--no-analytics",
            "--chat-history-file", str(request.scratch / "aider.chat.history.md"),
            "--input-history-file", str(request.scratch / "aider.input.history")]
    if spec.model:
        argv += ["--model", spec.model]
    return argv + list(spec.args)


def tokens(value: str | None) -> int:
    """aider's printed count as a number: "512" -> 512, "2.3k" -> 2300, "1.2M" -> 1200000."""
    if not value:
        return 0
    text = value.replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    number = text[:-1] if scale != 1 else text
    return round(float(number) * scale)


def parse(stdout: str, stderr: str, exit_code: int) -> CliReport:
    output = f"{stdout}\n{stderr}"
    usage = Usage()
    calls = 0
    for match in TOKENS.finditer(output):
        write = tokens(match["write"])
        usage += Usage(max(tokens(match["sent"]) - write, 0), tokens(match["received"]),
                       tokens(match["hit"]), write)
        calls += 1
    costs = list(COST.finditer(output))
    cost = float(costs[-1]["session"]) if costs else None
    error = None
    if exit_code != 0:
        error = f"aider exited with code {exit_code}: {output.strip()[-2000:] or 'no output'}"
    elif calls == 0:
        found = ERROR_LINE.findall(output)
        if found:
            error = f"aider reported an error: {found[-1].strip()[:2000]}"
    return CliReport(
        text=stdout.strip()[-4000:],
        is_error=error is not None,
        error=error,
        turns=calls or None,
        usage=usage,
        usage_known=calls > 0,
        cost_usd=cost,
        api_calls=calls,
    )


BACKEND = Backend(
    kind=AIDER,
    name="aider",
    program="aider",
    install="Install it with `pip install aider-chat` (or `python -m pip install aider-install "
            "&& aider-install`), or set the role's worker.executable to its path.",
    credentials=credentials,
    build=build,
    parse=parse,
    litter=(".aider.tags.cache.v*", ".aider.chat.history.md", ".aider.input.history",
            ".aider.llm.history"),
)
