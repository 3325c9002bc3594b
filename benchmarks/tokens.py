"""Input tokens of a 15-turn agent session, and how much of each request prompt caching can serve.

The real agent loop (`run_agent`) drives the real AnthropicModel and the real `anthropic` SDK
against the loopback fake server of the test suite (tests/fake_api.py, 127.0.0.1 only), which
replies with scripted tool calls. The tools are the real ones, in a temporary workspace holding
a copy of this project's engine, so tool outputs have realistic sizes; one call prints a large
test log. Every request body the server receives is analysed:

- input size per request, with tokens estimated as characters of the JSON / 4 (no tokenizer
  ships offline; real counts differ by some 10-20%, the shares much less);
- the unchanged prefix each request shares with the next one, block by block in Anthropic's
  cache order (tools, system, messages), `cache_control` markers ignored;
- what Anthropic's cache could serve: the longest prefix ending at a breakpoint of an earlier
  request, reachable within 20 blocks of a breakpoint of this one, and at least the model's
  minimum cacheable length (1,024 tokens for Sonnet 4/4.5; 4,096 for Opus 4.5 and Haiku 4.5);
- the same session with tool-output capping off (max_output_chars unlimited).

    python benchmarks/tokens.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, machine_line, parser, table, write_json
from agent_team.agent_loop import run_agent
from agent_team.anthropic_model import AnthropicModel
from agent_team.roles import build_roles, default_agent_types, load_prompt
from agent_team.toolbox import DEFAULT_MAX_OUTPUT_CHARS
from agent_team.tools import Workspace, build_toolbox

from tests.fake_api import FakeAPI, anthropic_message

LOOKBACK_BLOCKS = 20
MIN_CACHEABLE = {"sonnet-4.5": 1024, "opus-4.5": 4096}
UNCAPPED = 10**9
CHARS_PER_TOKEN = 4


def session(turns: int) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """(assistant text, tool calls) per turn; the last turn is always finish_task."""
    big_log = (
        "import sys\n"
        "for i in range(3000):\n"
        "    print(f'tests/test_module_{i // 40:03d}.py::test_case_{i:05d} PASSED "
        "[{i * 100 // 3000:3d}%]')\n"
        "print('3000 passed in 41.20s')\n"
    )
    plan: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
        ("Let me look at the layout.", [("list_files", {"path": ".", "pattern": "*.py"})]),
        ("Reading the scheduler.", [("read_file", {"path": "agent_team/scheduler.py"})]),
        ("Where is run_graph used?", [("search_files", {"pattern": "run_graph"})]),
        ("Now the state module.",
         [("read_file", {"path": "agent_team/state.py", "offset": 1, "limit": 200})]),
        ("Running the existing tests first.",
         [("run_command", {"argv": [sys.executable, "-c", big_log]})]),
        ("Reading the plan module.", [("read_file", {"path": "agent_team/plan.py"})]),
        ("Adjusting the docstring.", [("edit_file", {
            "path": "agent_team/scheduler.py",
            "old": "Dependency-ordered parallel execution",
            "new": "Dependency-ordered parallel execution (benchmarked)"})]),
        ("Checking the toolbox.", [("read_file", {"path": "agent_team/toolbox.py"})]),
        ("Adding the helper module.", [("write_file", {
            "path": "agent_team/levels.py",
            "content": '"""Group jobs by dependency depth."""\n\nfrom __future__ import '
                       "annotations\n\n\ndef levels(deps: dict[str, list[str]]) -> dict[str, "
                       "int]:\n    out: dict[str, int] = {}\n\n    def depth(job: str) -> int:"
                       "\n        if job not in out:\n            out[job] = 1 + max((depth(d)"
                       " for d in deps[job]), default=-1)\n        return out[job]\n\n    for "
                       "job in deps:\n        depth(job)\n    return out\n" * 3})]),
        ("Compiling it.", [("run_command", {
            "argv": [sys.executable, "-m", "py_compile", "agent_team/levels.py"]})]),
        ("Where is critical_path used?", [("search_files", {"pattern": "critical_path"})]),
        ("Reading the agent loop.", [("read_file", {"path": "agent_team/agent_loop.py"})]),
        ("Posting progress.", [("post_update", {
            "status": "in_progress", "message": "levels helper written and compiling"})]),
        ("Quick self-check.", [("run_command", {
            "argv": [sys.executable, "-c", "import ast; print('ok')"]})]),
    ]
    finish = ("Done.", [("finish_task", {
        "status": "completed", "summary": "Added agent_team/levels.py and documented it.",
        "completed_items": ["agent_team/levels.py"], "blockers": [], "notes": ""})])
    return [*plan[: turns - 1], finish]


def make_workspace(root: Path) -> Path:
    """A copy of the engine's sources: realistic files for the agent to read and search."""
    source = ROOT / "scripts" / "orchestration" / "agent_team"
    target = root / "agent_team"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def record_session(turns: int, max_output_chars: int, workdir: Path) -> list[dict[str, Any]]:
    """Run the agent loop through the real SDK against the fake server; the request bodies."""
    import anthropic

    workspace = make_workspace(workdir)
    roles = build_roles(default_agent_types(), {})
    system = roles["backend-dev"].system_prompt + "\n\n" + load_prompt("worker-rules")
    prompt = (
        "Task: TASK-003 - Add a helper that groups scheduler jobs by dependency depth\n"
        "Feature: Show the plan's levels in the run summary\nBranch: feature/levels\n\n"
        "Deliverables:\n- agent_team/levels.py\n\n"
        "Make the changes with the tools, check them, then call finish_task."
    )
    with FakeAPI() as api:
        for text, calls in session(turns):
            api.enqueue(anthropic_message(text, [(name, args) for name, args in calls]))
        client = anthropic.Anthropic(api_key="benchmark", base_url=api.anthropic_base_url,
                                     max_retries=0)
        model = AnthropicModel("claude-sonnet-4-5", client=client)
        toolbox = build_toolbox(Workspace(workspace), max_output_chars=max_output_chars)
        run_agent(model, system, prompt, toolbox, max_turns=turns)
        api.assert_all_used()
        return [request.body for request in api.requests]


# -- analysis -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    key: str
    tokens: float
    breakpoint: bool


def blocks(body: Mapping[str, Any]) -> list[Block]:
    """A request in cache order, each block keyed by where it sits and what it holds."""
    out: list[Block] = []

    def add(where: str, block: Mapping[str, Any]) -> None:
        clean = {k: v for k, v in block.items() if k != "cache_control"}
        text = json.dumps(clean, ensure_ascii=False)
        out.append(Block(f"{where}|{text}", len(text) / CHARS_PER_TOKEN, "cache_control" in block))

    for tool in body.get("tools", []):
        add("tools", tool)
    system = body.get("system", [])
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system:
        add("system", block)
    for index, message in enumerate(body["messages"]):
        content = message["content"]
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in items:
            add(f"messages[{index}].{message['role']}", block)
    return out


def common_prefix(a: Sequence[Block], b: Sequence[Block]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n].key == b[n].key:
        n += 1
    return n


def served_from_cache(history: Sequence[Sequence[Block]], now: Sequence[Block],
                      minimum: int) -> float:
    """Tokens of `now` Anthropic could read from cache entries written by earlier requests."""
    marks = [i for i, block in enumerate(now) if block.breakpoint]
    best = 0.0
    for earlier in history:
        shared = common_prefix(earlier, now)
        for end, block in enumerate(earlier[:shared]):
            if not block.breakpoint:
                continue
            if not any(0 <= mark - end <= LOOKBACK_BLOCKS for mark in marks):
                continue
            tokens = sum(b.tokens for b in now[: end + 1])
            if tokens >= minimum:
                best = max(best, tokens)
    return best


def placement(body: Mapping[str, Any]) -> dict[str, bool]:
    """Whether the breakpoints sit on the last tool, the system prompt and the last block."""
    tools = body.get("tools", [])
    system = body.get("system", [])
    messages = body["messages"]
    last = messages[-1]["content"] if messages else []
    count = sum(b.breakpoint for b in blocks(body))
    return {
        "last_tool": bool(tools) and "cache_control" in tools[-1]
        and not any("cache_control" in t for t in tools[:-1]),
        "system": isinstance(system, list) and bool(system) and "cache_control" in system[-1],
        "last_message_block": isinstance(last, list) and bool(last)
        and "cache_control" in last[-1],
        "at_most_4": count <= 4,
    }


def analyse(bodies: Sequence[Mapping[str, Any]], minimum: int) -> list[dict[str, Any]]:
    parsed = [blocks(body) for body in bodies]
    rows = []
    for i, request in enumerate(parsed):
        total = sum(b.tokens for b in request)
        following = parsed[i + 1] if i + 1 < len(parsed) else None
        stable = (sum(b.tokens for b in request[: common_prefix(request, following)])
                  if following is not None else None)
        cached = served_from_cache(parsed[:i], request, minimum)
        rows.append({
            "turn": i + 1,
            "input_tokens": round(total),
            "blocks": len(request),
            "prefix_of_next_tokens": None if stable is None else round(stable),
            "cacheable_tokens": round(cached),
            "cacheable_share": cached / total if total else 0.0,
            "placement": placement(bodies[i]),
        })
    return rows


def summary(rows: Sequence[Mapping[str, Any]], start_turn: int = 3) -> dict[str, Any]:
    later = [r for r in rows if r["turn"] >= start_turn]
    total = sum(r["input_tokens"] for r in rows)
    later_total = sum(r["input_tokens"] for r in later)
    later_cached = sum(r["cacheable_tokens"] for r in later)
    uncached = total - sum(r["cacheable_tokens"] for r in rows)
    return {
        "total_input_tokens": total,
        "from_turn_3_tokens": later_total,
        "from_turn_3_cacheable_share": later_cached / later_total if later_total else 0.0,
        "min_share_from_turn_3": min((r["cacheable_share"] for r in later), default=0.0),
        "placement_ok": all(all(r["placement"].values()) for r in rows),
        # Cache writes cost 1.25x, reads 0.1x the input price (5-minute cache).
        "cost_weighted_tokens": round(uncached * 1.25
                                      + sum(r["cacheable_tokens"] for r in rows) * 0.1),
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    args = ap.parse_args()
    turns = 6 if args.quick else 15
    minimum = MIN_CACHEABLE["sonnet-4.5"]
    print(machine_line())
    print(f"A {turns}-turn agent session through AnthropicModel and the anthropic SDK against "
          "the loopback fake server; tokens estimated as JSON characters / 4.\n")
    runs: dict[str, list[dict[str, Any]]] = {}
    bodies: dict[str, list[dict[str, Any]]] = {}
    for name, cap in (("capped", DEFAULT_MAX_OUTPUT_CHARS), ("uncapped", UNCAPPED)):
        with tempfile.TemporaryDirectory(prefix="agent-team-tokens-") as tmp:
            bodies[name] = record_session(turns, cap, Path(tmp))
        runs[name] = analyse(bodies[name], minimum)
    capped, uncapped = runs["capped"], runs["uncapped"]
    rows = []
    for on, off in zip(capped, uncapped, strict=True):
        ok = "yes" if all(on["placement"].values()) else "NO"
        rows.append([
            on["turn"], on["input_tokens"],
            "-" if on["prefix_of_next_tokens"] is None else on["prefix_of_next_tokens"],
            on["cacheable_tokens"], f"{on['cacheable_share']:.0%}", ok,
            off["input_tokens"], f"{off['cacheable_share']:.0%}",
        ])
    print(f"Per request (max_output_chars {DEFAULT_MAX_OUTPUT_CHARS:,} vs unlimited; cacheable "
          f"= servable from Anthropic's cache with a {minimum:,}-token minimum):")
    print(table(["turn", "input tokens", "prefix shared with next", "cacheable",
                 "cacheable share", "breakpoints ok", "uncapped: input", "uncapped: share"],
                rows))
    first = blocks(bodies["capped"][0])
    tools_tokens = sum(b.tokens for b in first if b.key.startswith("tools|"))
    system_tokens = sum(b.tokens for b in first if b.key.startswith("system|"))
    print(f"\nStable head: tools {tools_tokens:,.0f} tokens, system {system_tokens:,.0f} tokens "
          f"(the last-tool breakpoint alone is {'above' if tools_tokens >= minimum else 'below'}"
          f" the {minimum:,}-token minimum; tools+system is "
          f"{'above' if tools_tokens + system_tokens >= minimum else 'below'} it).")
    results = {name: {"turns": rows_, "summary": summary(rows_)} for name, rows_ in runs.items()}
    print()
    print(table(
        ["session", "total input tokens", "from turn 3", "cacheable share from turn 3",
         "lowest share from turn 3", "cost-weighted tokens", "breakpoints ok"],
        [[name, r["summary"]["total_input_tokens"], r["summary"]["from_turn_3_tokens"],
          f"{r['summary']['from_turn_3_cacheable_share']:.0%}",
          f"{r['summary']['min_share_from_turn_3']:.0%}", r["summary"]["cost_weighted_tokens"],
          "yes" if r["summary"]["placement_ok"] else "NO"]
         for name, r in results.items()],
    ))
    for label, threshold in MIN_CACHEABLE.items():
        share = summary(analyse(bodies["capped"], threshold))["from_turn_3_cacheable_share"]
        print(f"Cacheable share from turn 3 with the {label} minimum ({threshold:,} tokens): "
              f"{share:.0%}")
    cut = 1 - results["capped"]["summary"]["total_input_tokens"] / max(
        1, results["uncapped"]["summary"]["total_input_tokens"])
    share = results["capped"]["summary"]["from_turn_3_cacheable_share"]
    print(f"\nCapping tool output cuts the session's input tokens by {cut:.0%}.")
    print(f"Target >= 70% of input tokens cacheable from turn 3 on: "
          f"{'met' if share >= 0.70 else 'missed'} ({share:.0%}).")
    write_json(args.json, "tokens", args, {"turns": turns, "chars_per_token": CHARS_PER_TOKEN,
                                           "min_cacheable_tokens": minimum, "runs": results})


if __name__ == "__main__":
    main()
