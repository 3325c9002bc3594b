"""Any other coding-agent program: `"worker": {"command": [...]}` with placeholders.

Each argument may hold `{prompt}`, `{prompt_file}` (the prompt written to a private file, for
programs that take one, or prompts longer than one argument may be), `{model}`, `{workdir}`,
`{max_turns}` and `{session_id}`; anything else in braces is left as written, so JSON
arguments pass untouched. `output` says how to read what it prints: `text` (the default: the
output is the account, exit code 0 is success, usage and cost unknown), `claude-json` or
`codex-jsonl` for wrappers that print those formats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import claude_code, codex
from .spec import COMMAND, Backend, CliReport, CliRequest, WorkerSpec

PLACEHOLDERS = ("prompt", "prompt_file", "model", "workdir", "max_turns", "session_id")
OUTPUTS = ("text", "claude-json", "codex-jsonl")


def placeholders_in(template: Sequence[str]) -> set[str]:
    return {name for name in PLACEHOLDERS for arg in template if f"{{{name}}}" in arg}


def build(spec: WorkerSpec, executable: Sequence[str], request: CliRequest) -> list[str]:
    values = {
        "prompt": request.prompt,
        "prompt_file": str(request.scratch / "prompt.md"),
        "model": spec.model or "",
        "workdir": str(request.workdir),
        "max_turns": str(spec.max_turns),
        "session_id": request.resume_id or request.session_id or "",
    }
    if "prompt_file" in placeholders_in(spec.command):
        (request.scratch / "prompt.md").write_text(request.prompt, encoding="utf-8")
    argv = []
    for arg in executable:  # the template, its program already found on PATH
        for name, value in values.items():
            arg = arg.replace(f"{{{name}}}", value)
        argv.append(arg)
    return argv + list(spec.args)


def parse_text(stdout: str, stderr: str, exit_code: int) -> CliReport:
    if exit_code != 0:
        tail = (stderr.strip() or stdout.strip())[-2000:] or "no output"
        return CliReport(text=stdout.strip()[-4000:], is_error=True,
                         error=f"the command exited with code {exit_code}: {tail}")
    return CliReport(text=stdout.strip()[-4000:])


def parser_for(output: str) -> Callable[[str, str, int], CliReport]:
    return {"claude-json": claude_code.parse, "codex-jsonl": codex.parse}.get(output, parse_text)


def backend_for(spec: WorkerSpec) -> Backend:
    return Backend(
        kind=COMMAND,
        name=spec.command[0] if spec.command else "command",
        program=spec.command[0] if spec.command else "",
        install="Install the program, or correct the first element of the role's "
                "worker.command.",
        credentials=lambda spec: (),
        build=build,
        parse=parser_for(spec.output),
        resumable=False,
    )
