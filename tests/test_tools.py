"""Workspace confinement, the file tools, run_command limits and the Toolbox error contract."""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import ToolError, UsageLimitExceeded
from agent_team.models import ToolCall
from agent_team.sandbox import SandboxPolicy
from agent_team.toolbox import Toolbox, ToolResult, cap_text, define_tool
from agent_team.tools import Workspace, build_toolbox

from tests.conftest import wait_until_gone


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    (path / "src").mkdir(parents=True)
    (path / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (path / ".git").mkdir()
    (path / ".git" / "config").write_text("[core]\n", encoding="utf-8")
    (path / ".ai-agents" / "state").mkdir(parents=True)
    (path / ".ai-agents" / "state" / "team-communication.json").write_text("{}", "utf-8")
    return path


@pytest.fixture
def workspace(root: Path) -> Workspace:
    return Workspace(root)


@pytest.fixture
def toolbox(workspace: Workspace) -> Toolbox:
    return build_toolbox(workspace, command_timeout=30)


def call(box: Toolbox, name: str, **arguments: Any) -> ToolResult:
    return box.call(ToolCall(id="c1", name=name, arguments=arguments))


# -- Workspace.resolve ------------------------------------------------------------------------


def test_resolve_keeps_paths_inside(workspace: Workspace, root: Path) -> None:
    assert workspace.resolve("src/app.py") == root.resolve() / "src" / "app.py"
    assert workspace.resolve("src/../src/new.py", write=True) == root.resolve() / "src" / "new.py"
    assert workspace.resolve(".") == root.resolve()


@pytest.mark.parametrize("path", ["../outside.txt", "src/../../outside.txt", "a/../../.."])
def test_dotdot_escape_refused(workspace: Workspace, path: str) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        workspace.resolve(path)


@pytest.mark.parametrize("path", ["/etc/passwd", "~/secrets"])
def test_absolute_path_refused(workspace: Workspace, path: str) -> None:
    with pytest.raises(ToolError, match="absolute"):
        workspace.resolve(path)


def test_symlink_to_etc_refused(workspace: Workspace, root: Path, toolbox: Toolbox) -> None:
    (root / "etc").symlink_to("/etc")
    (root / "passwd").symlink_to("/etc/passwd")
    for path in ("etc/passwd", "passwd", "etc"):
        with pytest.raises(ToolError, match="symbolic link"):
            workspace.resolve(path)
    result = call(toolbox, "read_file", path="etc/hostname")
    assert result.is_error and "symbolic link" in result.content
    search = call(toolbox, "search_files", pattern="root")
    assert "root:" not in search.content  # the linked /etc/passwd was never read


def test_symlinked_parent_dir_refused_for_write(
    workspace: Workspace, root: Path, tmp_path: Path, toolbox: Toolbox
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    result = call(toolbox, "write_file", path="linked/sub/planted.txt", content="x")
    assert result.is_error and "outside the workspace" in result.content
    assert not (outside / "sub").exists()
    (root / "dangling").symlink_to(outside / "new.txt")
    assert call(toolbox, "write_file", path="dangling", content="x").is_error
    assert not (outside / "new.txt").exists()


def test_symlink_inside_workspace_is_followed(workspace: Workspace, root: Path) -> None:
    (root / "alias").symlink_to(root / "src", target_is_directory=True)
    assert workspace.resolve("alias/app.py") == root.resolve() / "src" / "app.py"


def test_git_internals_refused(toolbox: Toolbox, root: Path) -> None:
    result = call(toolbox, "read_file", path=".git/config")
    assert result.is_error and ".git" in result.content
    (root / "gitconfig").symlink_to(root / ".git" / "config")
    assert call(toolbox, "read_file", path="gitconfig").is_error
    assert call(toolbox, "write_file", path="src/.git/hooks/pre-commit", content="x").is_error
    assert ".git/" not in call(toolbox, "list_files").content


def test_protected_dir_readable_but_not_writable(toolbox: Toolbox, root: Path) -> None:
    state = root / ".ai-agents" / "state" / "team-communication.json"
    read = call(toolbox, "read_file", path=".ai-agents/state/team-communication.json")
    assert read.content == "{}"
    for path in (".ai-agents/state/team-communication.json", ".ai-agents/state/new.json"):
        result = call(toolbox, "write_file", path=path, content="{}")
        assert result.is_error and "protected" in result.content
    (root / "notes").symlink_to(root / ".ai-agents" / "state", target_is_directory=True)
    assert call(toolbox, "write_file", path="notes/x.json", content="{}").is_error
    edit = call(
        toolbox, "edit_file", path=".ai-agents/state/team-communication.json", old="{}", new="[]"
    )
    assert edit.is_error and state.read_text() == "{}"


# -- File tools -------------------------------------------------------------------------------


def test_write_then_read_creates_parents(toolbox: Toolbox, root: Path) -> None:
    result = call(toolbox, "write_file", path="pkg/deep/mod.py", content="x = 1\n")
    assert not result.is_error and "Created" in result.content
    assert (root / "pkg" / "deep" / "mod.py").read_text() == "x = 1\n"
    assert call(toolbox, "read_file", path="pkg/deep/mod.py").content == "x = 1\n"


def test_read_file_pages_long_files(toolbox: Toolbox, root: Path) -> None:
    (root / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 101)))
    first = call(toolbox, "read_file", path="long.txt", limit=10)
    assert first.content.startswith("line 1\n") and "offset=11" in first.content
    rest = call(toolbox, "read_file", path="long.txt", offset=95)
    assert rest.content.startswith("line 95\n") and "95-100" in rest.content


def test_read_file_errors(toolbox: Toolbox, root: Path) -> None:
    (root / "blob.bin").write_bytes(b"\x00\x01\x02")
    assert "binary" in call(toolbox, "read_file", path="blob.bin").content
    assert "does not exist" in call(toolbox, "read_file", path="missing.py").content
    assert "directory" in call(toolbox, "read_file", path="src").content


def test_edit_file_replaces_unique_match(toolbox: Toolbox, root: Path) -> None:
    result = call(toolbox, "edit_file", path="src/app.py", old="a + b", new="a - b")
    assert not result.is_error
    assert "return a - b" in (root / "src" / "app.py").read_text()


def test_edit_file_not_unique_says_how_many(toolbox: Toolbox, root: Path) -> None:
    (root / "dup.py").write_text("x = 1\nx = 1\nx = 1\n")
    result = call(toolbox, "edit_file", path="dup.py", old="x = 1", new="x = 2")
    assert result.is_error and "3 times" in result.content
    assert (root / "dup.py").read_text() == "x = 1\nx = 1\nx = 1\n"


def test_edit_file_missing_text(toolbox: Toolbox) -> None:
    result = call(toolbox, "edit_file", path="src/app.py", old="return a * b", new="")
    assert result.is_error and "not found" in result.content


def test_list_files_sorted_and_filtered(toolbox: Toolbox, root: Path) -> None:
    (root / "node_modules" / "lib").mkdir(parents=True)
    (root / "node_modules" / "lib" / "x.js").write_text("")
    (root / "b.txt").write_text("")
    (root / "src" / "a.py").write_text("")
    listing = call(toolbox, "list_files").content.splitlines()
    assert listing == sorted(listing)
    assert "src/a.py" in listing and "b.txt" in listing
    assert not any(p.startswith((".git/", "node_modules/")) for p in listing)
    assert call(toolbox, "list_files", path="src", pattern="*.py").content == "src/a.py\nsrc/app.py"


def test_search_files_reports_file_and_line(toolbox: Toolbox) -> None:
    assert call(toolbox, "search_files", pattern=r"return \w").content == (
        "src/app.py:2:     return a + b"
    )
    bad = call(toolbox, "search_files", pattern="(")
    assert bad.is_error and "regular expression" in bad.content


# -- run_command ------------------------------------------------------------------------------


def test_run_command_reports_exit_code_and_cwd(toolbox: Toolbox, root: Path) -> None:
    result = call(
        toolbox,
        "run_command",
        argv=[sys.executable, "-c", "import os,sys; print(os.getcwd()); sys.exit(3)"],
    )
    assert not result.is_error
    assert "[exit code 3" in result.content and str(root.resolve()) in result.content


def test_run_command_timeout_kills_process_group(toolbox: Toolbox, root: Path) -> None:
    started = time.monotonic()
    result = call(
        toolbox,
        "run_command",
        timeout_seconds=1,
        argv=["sh", "-c", "sleep 100.2171 & echo started > child.txt; sleep 100"],
    )
    elapsed = time.monotonic() - started
    assert result.is_error and "timed out after 1 s" in result.content
    assert elapsed < 5
    assert (root / "child.txt").read_text() == "started\n"
    assert wait_until_gone("sleep 100.2171") == []


def test_tool_output_capped_centrally(toolbox: Toolbox, workspace: Workspace) -> None:
    result = call(
        toolbox, "run_command", argv=[sys.executable, "-c", "print('a' * 100_000); print('END')"]
    )
    assert len(result.content) <= toolbox.max_output_chars
    assert result.content.rstrip().endswith("END") and "cut" in result.content
    chatty = define_tool("chatty", "x", {}, lambda: "BEGIN" + "y" * 50_000 + "END")
    box = build_toolbox(workspace, max_output_chars=2_000, extra_tools=[chatty])
    capped = call(box, "chatty").content
    assert len(capped) <= 2_000 and capped.startswith("BEGIN") and capped.endswith("END")
    assert "48,0" in capped  # says how much was cut


def toolbox_workspace(box: Toolbox) -> Workspace:
    handler = box._tools["run_command"].handler
    assert isinstance(handler, partial)
    return handler.args[0]


def test_secrets_scrubbed_from_environment(
    toolbox: Toolbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOO_API_KEY", "sk-fake-123")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-fake")
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    monkeypatch.setenv("NOT_ALLOWED", "hidden")
    allowing = SandboxPolicy(env_allow=("HARMLESS_SETTING", "DB_PASSWORD", "AWS_REGION"))
    box = build_toolbox(toolbox_workspace(toolbox), command_timeout=30, sandbox=allowing)
    result = call(box, "run_command", argv=["env"])
    assert "HARMLESS_SETTING=visible" in result.content
    assert "HOME=/tmp/home" in result.content
    for secret in ("sk-fake-123", "ghp-fake", "hunter2", "AWS_REGION", "NOT_ALLOWED"):
        assert secret not in result.content


def test_run_command_rejects_shell_string(toolbox: Toolbox) -> None:
    result = call(toolbox, "run_command", argv="ls -la && rm -rf /")
    assert result.is_error and "argv" in result.content and "array" in result.content
    assert call(toolbox, "run_command", argv=[]).is_error
    missing = call(toolbox, "run_command", argv=["definitely-not-a-command-xyz"])
    assert missing.is_error and "Command not found" in missing.content


def test_run_command_reports_a_program_that_cannot_start(toolbox: Toolbox, root: Path) -> None:
    (root / "not-executable.sh").write_text("echo hi\n", encoding="utf-8")
    result = call(toolbox, "run_command", argv=["./not-executable.sh"])
    assert result.is_error and "Could not start './not-executable.sh'" in result.content


def test_the_tools_module_exports_only_its_own_names() -> None:
    """No re-export shims: the toolbox, process and secret rules come from their modules."""
    from agent_team import tools

    for name in ("run_process", "CommandOutcome", "safe_environment", "Toolbox", "cap_text"):
        assert name not in tools.__all__
    assert {getattr(tools, name).__module__ for name in tools.__all__
            if callable(getattr(tools, name)) and hasattr(getattr(tools, name), "__module__")
            } <= {"agent_team.tools", "typing", "collections.abc"}


def test_stdin_is_devnull(toolbox: Toolbox) -> None:
    check = (
        "import os; a, b = os.fstat(0), os.stat(os.devnull); "
        "print('devnull' if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) else 'inherited')"
    )
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)  # a stdin the command could inherit and block on
    try:
        result = call(
            toolbox, "run_command", timeout_seconds=10, argv=[sys.executable, "-c", check]
        )
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert result.content.splitlines()[-1] == "devnull" and not result.is_error


# -- Toolbox contract -------------------------------------------------------------------------


def test_unknown_tool_and_bad_arguments_are_error_results(toolbox: Toolbox) -> None:
    unknown = call(toolbox, "delete_everything")
    assert unknown.is_error and "read_file" in unknown.content
    broken = toolbox.call(ToolCall("c", "read_file", {}, arguments_error="not JSON"))
    assert broken.is_error and "not JSON" in broken.content
    missing = call(toolbox, "write_file", path="a.txt")
    assert missing.is_error and "'content' is a required property" in missing.content
    extra = call(toolbox, "read_file", path="src/app.py", mode="rb")
    assert extra.is_error and "mode" in extra.content


def test_handler_exceptions_become_error_results(workspace: Workspace) -> None:
    def explode() -> str:
        raise RuntimeError("disk on fire")

    box = build_toolbox(workspace, extra_tools=[define_tool("explode", "x", {}, explode)])
    result = call(box, "explode")
    assert result.is_error and "RuntimeError: disk on fire" in result.content


def test_engine_errors_from_callbacks_propagate(workspace: Workspace) -> None:
    def refuse(status: str, message: str, details: dict[str, Any] | None) -> None:
        raise UsageLimitExceeded("budget spent")

    box = build_toolbox(workspace, on_update=refuse)
    with pytest.raises(UsageLimitExceeded):
        call(box, "post_update", status="working", message="hi")


def test_post_update_calls_callback(workspace: Workspace) -> None:
    seen: list[tuple[str, str, Any]] = []
    box = build_toolbox(workspace, on_update=lambda *args: seen.append(args))
    assert not call(
        box, "post_update", status="testing", message="running tests", details={"n": 1}
    ).is_error
    assert seen == [("testing", "running tests", {"n": 1})]


def test_finish_task_validates_report(toolbox: Toolbox) -> None:
    bad = call(toolbox, "finish_task", status="done", summary="")
    assert bad.is_error and not bad.finished
    assert "status" in bad.content and "summary" in bad.content
    good = call(toolbox, "finish_task", status="completed", summary=" Added add(). ")
    assert good.finished and good.report == {
        "status": "completed",
        "summary": "Added add().",
        "completed_items": [],
        "blockers": [],
        "notes": "",
    }
    wrapped = call(toolbox, "finish_task", report={"status": "blocked", "summary": "No DB."})
    assert wrapped.finished and wrapped.report is not None
    assert wrapped.report["status"] == "blocked"


def test_specs_forbid_extra_properties(toolbox: Toolbox) -> None:
    names = [spec.name for spec in toolbox.specs]
    assert names == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search_files",
        "run_command",
        "post_update",
        "finish_task",
    ]
    for spec in toolbox.specs:
        assert spec.parameters["additionalProperties"] is False
        assert "$schema" not in spec.parameters
    assert toolbox.select(["read_file"]).names == ("read_file",)


def test_cap_text_keeps_head_and_tail() -> None:
    text = "HEAD" + "x" * 10_000 + "TAIL"
    capped = cap_text(text, 1000)
    assert len(capped) <= 1000 and capped.startswith("HEAD") and capped.endswith("TAIL")
    assert "characters cut" in capped and cap_text("short", 1000) == "short"
