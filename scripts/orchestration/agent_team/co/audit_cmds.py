"""`co security-audit`: keys by name, file permissions, and hardcoded secrets in the repository
and on the agents' branches (detect-secrets). Values never reach the output."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from .backlog import open_backlog
from .base import CoContext, errors_as_click, json_option, working_dir_option
from .checkpoint_cmds import owned_branches
from .settings import DEFAULT_CONFIG, ENV_SLACK

#: Expected shapes of the keys `co` uses; a value that does not match is a finding.
KEY_SHAPES = {
    "ANTHROPIC_API_KEY": (re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"), "sk-ant-..."),
    "OPENAI_API_KEY": (re.compile(r"sk-[A-Za-z0-9_-]{20,}"), "sk-..."),
    ENV_SLACK: (re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
                "https://hooks.slack.com/services/..."),
}
CONFIG_FILES = (DEFAULT_CONFIG, Path("orchestrator-config.json"),
                Path(".ai-agents") / "orchestrator-config.json")
MAX_SCAN_BYTES = 1_000_000


@dataclass(frozen=True)
class Finding:
    """One problem: what, where, and what to do. `value` is never part of it."""

    check: str
    where: str
    problem: str
    fix: str


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and `export` allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip("'\"")
    return values


def audit_keys(project: Path) -> tuple[list[dict[str, str]], list[Finding]]:
    from_file = read_env_file(project / ".env")
    rows, findings = [], []
    for name, (shape, looks_like) in KEY_SHAPES.items():
        value = os.environ.get(name) or from_file.get(name) or ""
        source = "environment" if os.environ.get(name) else ".env" if from_file.get(name) else ""
        if not value:
            rows.append({"name": name, "status": "not set"})
        elif shape.fullmatch(value):
            rows.append({"name": name, "status": f"set in {source}, well formed"})
        else:
            rows.append({"name": name, "status": f"set in {source}, malformed"})
            findings.append(Finding("keys", name, f"does not look like {looks_like}",
                                    f"set {name} to the full value the provider gave you"))
    if not any(r["status"] != "not set" for r in rows if r["name"].endswith("_API_KEY")):
        rows.append({"name": "provider keys", "status": "none set (runs need one, or a local "
                                                        "OPENAI_BASE_URL)"})
    return rows, findings


def audit_permissions(project: Path) -> tuple[list[dict[str, str]], list[Finding]]:
    rows, findings = [], []
    for rel, secret in [(Path(".env"), True), *((c, False) for c in CONFIG_FILES)]:
        path = project / rel
        if not path.is_file():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        rows.append({"file": str(rel), "mode": oct(mode)})
        if secret and mode & 0o077:
            findings.append(Finding("permissions", str(rel), f"mode {oct(mode)} lets other "
                                    "users read it", f"chmod 600 {rel}"))
        elif mode & 0o022:
            findings.append(Finding("permissions", str(rel), f"mode {oct(mode)} lets other "
                                    "users change it", f"chmod go-w {rel}"))
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ".env"], cwd=project,
                             capture_output=True, check=False)
    if tracked.returncode == 0:
        findings.append(Finding("permissions", ".env", "is committed to git",
                                "git rm --cached .env, add it to .gitignore, rotate its keys"))
    config = project / DEFAULT_CONFIG
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            url = ((data.get("notifications") or {}).get("slack") or {}).get("webhook_url")
        except (ValueError, AttributeError):
            url = None
        if url:
            findings.append(Finding("config", f"{DEFAULT_CONFIG}: notifications.slack.webhook_url",
                                    "a webhook URL (a secret) is in the config file",
                                    f"move it to the {ENV_SLACK} environment variable"))
    return rows, findings


def _scan(paths: Iterable[tuple[Path, str]]) -> list[Finding]:
    """detect-secrets over files; `paths` pairs a file with the name to report."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = []
    with default_settings():
        for path, shown in paths:
            secrets = SecretsCollection()
            secrets.scan_file(str(path))
            for _, secret in secrets:
                found.append(Finding("secrets", f"{shown}:{secret.line_number}",
                                     f"looks like a hardcoded {secret.type}",
                                     "move it to an environment variable and rotate it"))
    return found


def _files_of_ref(project: Path, ref: str, into: Path, seen: set[str]) -> list[tuple[Path, str]]:
    listing = subprocess.run(["git", "ls-tree", "-r", "-z", "-l", ref], cwd=project,
                             capture_output=True, text=True, check=True).stdout
    out = []
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        _, kind, sha, size = meta.split()
        if kind != "blob" or sha in seen or size == "-" or int(size) > MAX_SCAN_BYTES:
            continue
        seen.add(sha)
        target = into / sha / Path(path).name
        target.parent.mkdir(parents=True)
        target.write_bytes(subprocess.run(["git", "cat-file", "blob", sha], cwd=project,
                                          capture_output=True, check=True).stdout)
        out.append((target, f"{ref}:{path}"))
    return out


def audit_secrets(project: Path, branches: Iterable[str]) -> tuple[int, list[Finding]]:
    """Scan the working tree's tracked files, then every agent branch's new blobs."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=project, capture_output=True,
                             text=True, check=True).stdout
    files = [(project / p, p) for p in filter(None, tracked.split("\0"))
             if p != ".env" and (project / p).is_file()
             and (project / p).stat().st_size <= MAX_SCAN_BYTES]
    seen = set(subprocess.run(["git", "ls-tree", "-r", "--format=%(objectname)", "HEAD"],
                              cwd=project, capture_output=True, text=True,
                              check=False).stdout.split())
    with tempfile.TemporaryDirectory(prefix="co-audit-") as tmp:
        for branch in branches:
            files += _files_of_ref(project, branch, Path(tmp), seen)
        return len(files), _scan(files)


@click.command("security-audit")
@working_dir_option
@json_option
@click.pass_obj
def security_audit(ctx: CoContext, working_dir: Path | None, as_json: bool) -> None:
    """Check keys (by name), file permissions and hardcoded secrets; exit 1 on findings."""
    project = ctx.working_dir(working_dir)
    keys, key_findings = audit_keys(project)
    permissions, permission_findings = audit_permissions(project)
    with errors_as_click():
        branches = owned_branches(project, open_backlog(project))
    scanned, secret_findings = audit_secrets(project, branches)
    findings = key_findings + permission_findings + secret_findings
    if as_json:
        click.echo(json.dumps({"keys": keys, "permissions": permissions,
                               "scanned_files": scanned, "branches": branches,
                               "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for row in keys:
            click.echo(f"key         {row['name']}: {row['status']}")
        for row in permissions:
            click.echo(f"permission  {row['file']}: {row['mode']}")
        click.echo(f"secrets     {scanned} file(s) scanned in the working tree and "
                   f"{len(branches)} agent branch(es)")
        for f in findings:
            click.echo(f"FINDING     {f.where}: {f.problem}. Fix: {f.fix}")
        click.echo(f"\n{len(findings)} finding(s)." if findings else "\nNo findings.")
    if findings:
        raise SystemExit(1)


COMMANDS = [security_audit]
