#!/usr/bin/env python3
"""A custom workflow: an architect reviews the feature before the manager plans it, and a
security scan checks what the team committed once the run is over.

    python examples/custom/review_workflow.py --demo
    python examples/custom/review_workflow.py --feature "..." --project-dir ~/projects/my-app

The architect's decisions go into the state file and into the manager's planning prompt (and
from there into every task prompt). The security scan is a real check, not a model's opinion:
it reads every file the feature branch changed and matches hard-coded credentials, eval/exec,
`shell=True` and similar patterns; a security reviewer then comments on what it found. Findings
are recorded in the state file and make the command exit with status 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from agent_team.cli import (
    common_options,
    max_workers_option,
    orchestrator_options,
    run_cli,
    run_inputs,
)
from agent_team.errors import EXIT_FAILED, EXIT_OK, AgentTeamError
from agent_team.plan import extract_json
from agent_team.redaction import KEY_SHAPES
from agent_team.roles import MANAGER, read_context
from file_based_orchestrator import FileBasedOrchestrator

DEMO_SESSION = "review-workflow-demo.json"
ARCHITECT = "architect"
SECURITY_REVIEWER = "security-reviewer"
SCANNER = "security-scan"

ARCHITECT_SYSTEM = (
    "You are the team's software architect. Before the manager plans a feature, you decide how "
    "it fits the existing code: where new code belongs, which interfaces it needs, and what must "
    "not go wrong (security, data loss, compatibility). Be concrete and brief: name files and "
    "functions. Answer with one JSON object: {\"summary\": \"...\", \"decisions\": "
    "[{\"decision\": \"...\", \"rationale\": \"...\", \"affected_agents\": [\"role\", ...]}]}."
)
SECURITY_SYSTEM = (
    "You are the team's security reviewer. An automated scan has read every file the team "
    "changed on the feature branch. Comment on its findings: which are real problems, how to "
    "fix each, and whether the branch can be merged. Do not invent findings that neither the "
    "scan nor the diff shows. Answer in one short paragraph."
)


# -- the scanner -------------------------------------------------------------------------------

SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b[\w-]*(?:api[_-]?key|secret|passw(?:or)?d|token|access[_-]?key|private[_-]?key)"
    r"[\w-]*[\"']?\s*(?::\s*[\w.\[\], |]+?\s*)?[:=]\s*([\"'])(?P<value>[^\"'\s]{8,})\1"
)
KEY_SHAPE = re.compile("|".join(f"(?:{pattern})" for _, pattern in KEY_SHAPES))
RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("hardcoded-secret", SECRET_ASSIGNMENT,
     "a credential is assigned a literal value; read it from the environment instead"),
    ("key-shaped-literal", KEY_SHAPE, "text shaped like a provider key or token"),
    ("eval-exec", re.compile(r"(?<![\w.])(?:eval|exec)\s*\("),
     "eval()/exec() runs whatever code the string holds"),
    ("shell-true", re.compile(r"\bshell\s*=\s*True\b"),
     "shell=True hands the command line to a shell, so input can inject commands"),
    ("os-system", re.compile(r"\bos\.(?:system|popen)\s*\("),
     "os.system/os.popen run a shell command line"),
    ("pickle-load", re.compile(r"\bpickle\.loads?\s*\("),
     "unpickling data runs code chosen by whoever wrote the data"),
)
MAX_SCAN_BYTES = 1_000_000
EXCERPT_CHARS = 120


@dataclass(frozen=True)
class Finding:
    """One line of a changed file that matched a rule; the excerpt has secrets masked."""

    path: str
    line: int
    rule: str
    message: str
    excerpt: str

    def describe(self) -> str:
        return f"{self.path}:{self.line} [{self.rule}] {self.message}: {self.excerpt}"


def mask_secrets(line: str) -> str:
    """The line with credential values and key-shaped text replaced by ***."""
    line = SECRET_ASSIGNMENT.sub(
        lambda m: m.group(0)[: m.start("value") - m.start()] + "***" + m.group(1), line
    )
    return KEY_SHAPE.sub("***", line)


def scan_text(path: str, text: str) -> list[Finding]:
    """Every rule match in one file, at most one per rule and line."""
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        matched = {name for name, pattern, _ in RULES if pattern.search(line)}
        if "hardcoded-secret" in matched:
            matched.discard("key-shaped-literal")
        excerpt = mask_secrets(line.strip())[:EXCERPT_CHARS]
        findings += [
            Finding(path, number, name, message, excerpt)
            for name, _, message in RULES
            if name in matched
        ]
    return findings


def format_design(design: Mapping[str, Any]) -> str:
    lines = [str(design.get("summary", "")).strip()]
    lines += [
        f"- {d['decision']}" + (f" ({d['rationale']})" if d.get("rationale") else "")
        for d in design.get("decisions", [])
    ]
    return "\n".join(line for line in lines if line)


def parse_design(reply: str) -> dict[str, Any]:
    """The architect's JSON answer; a prose answer becomes the summary and one decision."""
    try:
        data = extract_json(reply)
    except AgentTeamError:
        data = None
    if not isinstance(data, dict):
        text = reply.strip() or "(the architect gave no answer)"
        return {"summary": text, "decisions": [{"decision": text}]}
    decisions = [
        {
            "decision": str(d["decision"]),
            "rationale": str(d.get("rationale", "")),
            "affected_agents": [str(a) for a in d.get("affected_agents") or []],
        }
        for d in data.get("decisions") or []
        if isinstance(d, dict) and str(d.get("decision", "")).strip()
    ]
    summary = str(data.get("summary", "")).strip()
    return {"summary": summary, "decisions": decisions or [{"decision": summary or reply}]}


# -- the orchestrator --------------------------------------------------------------------------


class ReviewedOrchestrator(FileBasedOrchestrator):
    """The file-based workflow with an architect review before it and a security scan after."""

    orchestrator_name = "reviewed"

    def __init__(self, project_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(project_dir, **kwargs)
        self.design: dict[str, Any] | None = None

    def run(self, feature: str) -> dict[str, Any]:
        """Design review, the base run, security scan; exit code 1 when the scan finds issues."""
        self.design = self.architect_review(feature)
        summary = super().run(feature)
        security = self.security_scan(summary)
        exit_code = summary["exit_code"] or (EXIT_FAILED if security["findings"] else EXIT_OK)
        return {"design": self.design, "security": security, "summary": summary,
                "exit_code": exit_code}

    # -- phase 1: architect review ---------------------------------------------------------

    def architect_review(self, feature: str) -> dict[str, Any]:
        """One call to the architect; returns {"summary": ..., "decisions": [...]}."""
        self.log("Calling the architect for a design review...")
        files = self.git.history.tracked_files(limit=200)
        context = read_context(self.project_dir)
        prompt = (
            f"Feature to review before the team plans it:\n{feature}\n\n"
            f"Files in the repository ({len(files)} shown):\n"
            + "\n".join(f"- {f}" for f in files)
            + (f"\n\nProject context:\n{context}" if context else "")
            + "\n\nDecide where the code goes, which interfaces it needs and what must not go "
            "wrong. Address decisions to these roles: "
            + ", ".join(name for name in self.team.roles if name != MANAGER) + "."
        )
        reply = self.call_agent(ARCHITECT, ARCHITECT, prompt, ARCHITECT_SYSTEM)
        design = parse_design(reply)
        self.log(f"Architect: {len(design['decisions'])} decision(s).")
        return design

    def manager_create_tasks(self, feature: str) -> list[dict[str, Any]]:
        """Record the architect's decisions once the run has started, then let the manager plan.

        The task prompts list every team decision, so each agent sees the architect's too.
        """
        if self.design is not None:
            self.state.add_decisions(self.design["decisions"], made_by=ARCHITECT)
        return super().manager_create_tasks(feature)

    def _build_plan_prompt(self, feature: str) -> str:
        prompt = super()._build_plan_prompt(feature)
        if self.design is None:
            return prompt
        return (
            f"{prompt}\n\nThe architect reviewed this feature before you. Plan within the "
            f"review:\n{format_design(self.design)}"
        )

    # -- phase 3: security scan ------------------------------------------------------------

    def branch_files(self) -> Iterator[tuple[str, str]]:
        """(path, text) of every text file the feature branch added or changed."""
        ref = self.feature_branch
        present = set(self.git.history.tracked_files(ref))
        tree = self.git.repo.commit(ref).tree
        for path in self.git.history.changed_files(self.current.base_commit, ref):
            if path not in present:
                continue
            blob = tree / path
            if blob.size > MAX_SCAN_BYTES:
                self.log(f"Security scan: skipped {path} ({blob.size} bytes).")
                continue
            data = blob.data_stream.read()
            if b"\0" not in data[:8192]:
                yield path, data.decode("utf-8", errors="replace")

    def security_scan(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Scan the branch's changed files, have the security reviewer comment, record both."""
        files = dict(self.branch_files())
        findings = [f for path, text in files.items() for f in scan_text(path, text)]
        self.log(f"Security scan: {len(findings)} finding(s) in {len(files)} changed file(s).")
        for finding in findings:
            self.state.append_update(SCANNER, None, "security_finding", finding.describe(),
                                     asdict(finding))
        review = self.call_agent(SECURITY_REVIEWER, SECURITY_REVIEWER,
                                 self._build_security_prompt(summary, files, findings),
                                 SECURITY_SYSTEM).strip()
        self.state.append_update(SECURITY_REVIEWER, None, "security_review", review,
                                 {"findings": len(findings), "files_scanned": len(files)})
        if findings:
            flagged = sorted({f.path for f in findings})
            authors = sorted({t["assigned_to"] for t in summary["tasks"]
                              if set(t["files_modified"]) & set(flagged)})
            self.state.add_decisions([{
                "decision": f"Fix {len(findings)} security finding(s) in {', '.join(flagged)} "
                            f"before merging {self.feature_branch}",
                "rationale": review,
                "affected_agents": authors,
            }], made_by=SECURITY_REVIEWER)
        return {
            "files_scanned": sorted(files),
            "findings": [asdict(f) for f in findings],
            "review": review,
            "passed": not findings,
        }

    def _build_security_prompt(self, summary: Mapping[str, Any], files: Mapping[str, str],
                               findings: list[Finding]) -> str:
        diff = (self.git.history.diff_stat(self.current.base_commit, self.feature_branch)
                or "(no changes)")
        return (
            f"Feature: {summary['feature']}\nBranch: {self.feature_branch} "
            f"(run status: {summary['status']})\n\nChanged files scanned ({len(files)}):\n"
            + ("\n".join(f"- {p}" for p in files) or "- none")
            + f"\n\nDiff against {self.current.base_branch}:\n{diff}\n\nScanner findings:\n"
            + ("\n".join(f"- {f.describe()}" for f in findings) or "- none")
        )


def render_security(security: Mapping[str, Any]) -> str:
    findings = security["findings"]
    lines = [f"Security scan: {len(findings)} finding(s) in "
             f"{len(security['files_scanned'])} changed file(s)"]
    lines += [f"  {f['path']}:{f['line']} [{f['rule']}] {f['message']}" for f in findings]
    lines.append(f"Security reviewer: {security['review']}")
    return "\n".join(lines)


@click.command()
@common_options
@max_workers_option
def main(max_workers: int | None, **options: Any) -> None:
    """Build a feature with an architect review before planning and a security scan after."""

    def run() -> int:
        feature, project_dir, provider, session = run_inputs(options, DEMO_SESSION)
        orchestrator = ReviewedOrchestrator(
            project_dir, max_workers=max_workers,
            **orchestrator_options(options, provider, session),
        )
        result = orchestrator.run(feature)
        click.echo(render_security(result["security"]))
        click.echo(f"[Orchestrator] Result: branch {result['summary']['feature_branch']} in "
                   f"{project_dir}")
        return int(result["exit_code"])

    run_cli(run)


if __name__ == "__main__":
    main()
