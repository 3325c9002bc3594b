"""GitWorkspace against real repositories in tmp_path; the user's worktree must never change."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git
import pytest
from agent_team.errors import GitError, NotAGitRepository
from agent_team.git_merge import MergeResult
from agent_team.git_workspace import GitWorkspace, is_inside_work_tree, slugify

from tests.conftest import make_repo

BACKEND = {"author_name": "backend-dev", "author_email": "backend-dev@agents.invalid"}
FRONTEND = {"author_name": "frontend-dev", "author_email": "frontend-dev@agents.invalid"}
MANAGER = {"author_name": "manager", "author_email": "manager@agents.invalid"}


@pytest.fixture
def ws(git_repo: git.Repo) -> GitWorkspace:
    return GitWorkspace(git_repo.working_tree_dir)


def _user_state(repo: git.Repo) -> tuple[str, str, str]:
    return (
        repo.git.rev_parse("HEAD"),
        repo.git.symbolic_ref("HEAD"),
        repo.git.status("--porcelain", "--untracked-files=all"),
    )


def _parents(repo: git.Repo, rev: str) -> list[str]:
    return repo.git.rev_list("--parents", "-n1", rev).split()[1:]


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _diverge(
    ws: GitWorkspace, tmp_path: Path, ours: dict[str, str | bytes], theirs: dict[str, str | bytes]
) -> Path:
    """A feature branch in an integration worktree and an agent branch, both changed."""
    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "wt" / "integration", "feature/x")
    agent = ws.worktrees.add(tmp_path / "wt" / "agent", "agent/x/a", start_point="feature/x")
    for name, content in theirs.items():
        _write(agent / name, content)
    assert ws.commit_all(agent, "agent work", **BACKEND)
    for name, content in ours.items():
        _write(integration / name, content)
    assert ws.commit_all(integration, "other work", **FRONTEND)
    return integration


# -- opening ------------------------------------------------------------------------------


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAGitRepository, match="does not exist"):
        GitWorkspace(tmp_path / "nope")


def test_plain_directory_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepository, match="git init"):
        GitWorkspace(plain)
    assert not is_inside_work_tree(plain)


def test_repository_without_commits_is_refused(tmp_path: Path) -> None:
    git.Repo.init(tmp_path / "empty")
    with pytest.raises(NotAGitRepository, match="initial commit first"):
        GitWorkspace(tmp_path / "empty")


def test_bare_repository_is_refused(tmp_path: Path) -> None:
    git.Repo.init(tmp_path / "bare.git", bare=True)
    with pytest.raises(NotAGitRepository, match="bare"):
        GitWorkspace(tmp_path / "bare.git")


def test_subdirectory_opens_the_enclosing_repository(git_repo: git.Repo) -> None:
    sub = Path(git_repo.working_tree_dir) / "src"
    sub.mkdir()
    ws = GitWorkspace(sub)
    assert ws.root == Path(git_repo.working_tree_dir).resolve()
    assert is_inside_work_tree(sub)


# -- refs ---------------------------------------------------------------------------------


def test_branches_are_created_without_checkout(ws: GitWorkspace, git_repo: git.Repo) -> None:
    before = _user_state(git_repo)
    sha = ws.create_branch("feature/login", "main")
    assert sha == ws.head_commit() == ws.resolve("feature/login")
    assert ws.branch_exists("feature/login")
    assert not ws.branch_exists("feature/nope")
    assert ws.resolve("feature/nope") is None
    assert ws.current_branch() == "main"
    with pytest.raises(GitError, match="already exists"):
        ws.create_branch("feature/login", "main")
    with pytest.raises(GitError, match="not a valid branch name"):
        ws.create_branch("bad..name", "main")
    with pytest.raises(GitError, match="cannot coexist"):
        ws.create_branch("feature/login/agent/backend", "main")
    with pytest.raises(GitError, match="cannot coexist"):
        ws.worktrees.add(Path(ws.root).parent / "wt", "feature")
    with pytest.raises(GitError, match="does not name a commit"):
        ws.head_commit("missing-branch")
    assert _user_state(git_repo) == before


def test_detached_head_has_no_current_branch(ws: GitWorkspace, git_repo: git.Repo) -> None:
    git_repo.git.checkout("--detach")
    assert ws.current_branch() is None
    assert ws.head_commit() == git_repo.git.rev_parse("HEAD")


@pytest.mark.parametrize(
    "text",
    [
        "JWT-based user authentication with login and registration",
        "  Ünïcödé façade: ÆØÅ ~^:?*[\\ @{-1} ..lock/.. ",
        "feature.lock",
        "---",
        "",
        "a" * 200,
    ],
)
def test_slugify_produces_valid_branch_names(text: str, git_repo: git.Repo) -> None:
    slug = slugify(text)
    assert slug and len(slug) <= 40
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not slug.startswith("-") and not slug.endswith("-")
    for name in (slug, f"agent/{slug}/backend-dev/{slugify(text, max_len=12)}"):
        assert git_repo.git.check_ref_format("--branch", name) == name


def test_slugify_examples() -> None:
    assert slugify("JWT-based user Auth!") == "jwt-based-user-auth"
    assert slugify("Crème brûlée", max_len=5) == "creme"
    assert slugify("ab cd", max_len=3) == "ab"
    assert slugify("!!!") == "untitled"


def test_update_branch_ref_is_compare_and_swap(ws: GitWorkspace, tmp_path: Path) -> None:
    ws.create_branch("feature/x", "main")
    wt = ws.worktrees.add(tmp_path / "wt" / "x", "feature/x")
    _write(wt / "a.txt", "a\n")
    new = ws.commit_all(wt, "a", **BACKEND)
    old = ws.head_commit("main")

    with pytest.raises(GitError, match="checked out in"):
        ws.update_branch_ref("main", new, expected_old=old)
    assert ws.branch_checked_out_in("main") == ws.root
    assert ws.branch_checked_out_in("feature/x") == wt

    ws.create_branch("release", old)
    with pytest.raises(GitError):
        ws.update_branch_ref("release", new, expected_old=new)
    assert ws.head_commit("release") == old
    ws.create_branch("ahead", new)
    with pytest.raises(GitError, match="not a fast-forward"):
        ws.update_branch_ref("ahead", old, expected_old=new)
    assert ws.head_commit("ahead") == new
    ws.update_branch_ref("release", new, expected_old=old)
    assert ws.head_commit("release") == new
    assert ws.branch_checked_out_in("release") is None


# -- worktrees ----------------------------------------------------------------------------


def test_worktree_commit_with_role_author(ws: GitWorkspace, tmp_path: Path) -> None:
    base = ws.head_commit()
    wt = ws.worktrees.add(tmp_path / "deep" / "wt" / "task-1", "agent/x/backend/t1")
    assert wt.is_dir() and (wt / "README.md").is_file()
    assert ws.commit_all(wt, "nothing yet", **BACKEND) is None

    _write(wt / "src" / "api.py", "def login():\n    return True\n")
    (wt / "README.md").write_text("# changed\n", encoding="utf-8")
    sha = ws.commit_all(wt, "Add login endpoint", **BACKEND)

    assert sha and sha == ws.head_commit("agent/x/backend/t1")
    commit = git.Repo(wt).commit(sha)
    assert (commit.author.name, commit.author.email) == (
        BACKEND["author_name"],
        BACKEND["author_email"],
    )
    assert (commit.committer.name, commit.committer.email) == (
        BACKEND["author_name"],
        BACKEND["author_email"],
    )
    assert ws.history.changed_files(base, sha) == ["README.md", "src/api.py"]
    assert "2 files changed" in ws.history.diff_stat(base, sha)
    entries = ws.history.log(sha, 5)
    assert [e.subject for e in entries] == ["Add login endpoint", "initial commit"]
    assert entries[0].author_name == "backend-dev" and entries[0].sha == sha
    assert not ws.history.is_merged("agent/x/backend/t1", "main")
    assert ws.history.is_merged("main", "agent/x/backend/t1")
    assert ws.history.unmerged_commits("agent/x/backend/t1", "main") == 1


def test_commit_works_without_configured_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "p")
    with repo.config_writer() as cw:
        cw.remove_section("user")
        cw.set_value("user", "useConfigOnly", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)
    ws = GitWorkspace(tmp_path / "p")
    wt = ws.worktrees.add(tmp_path / "wt", "agent")
    _write(wt / "x.txt", "x\n")
    with pytest.raises(git.exc.GitCommandError):
        git.Repo(wt).git.commit("-am", "no identity", "--allow-empty")
    sha = ws.commit_all(wt, "with identity", **BACKEND)
    assert git.Repo(wt).commit(sha).committer.email == BACKEND["author_email"]


def test_rename_is_listed_once(ws: GitWorkspace, tmp_path: Path) -> None:
    base = ws.head_commit()
    wt = ws.worktrees.add(tmp_path / "wt", "agent")
    (wt / "README.md").rename(wt / "DOCS.md")
    sha = ws.commit_all(wt, "rename", **BACKEND)
    assert ws.history.changed_files(base, sha) == ["DOCS.md"]


def test_worktree_work_never_touches_the_user_checkout(
    ws: GitWorkspace, git_repo: git.Repo, tmp_path: Path
) -> None:
    root = Path(git_repo.working_tree_dir)
    (root / "README.md").write_text("user's unsaved edit\n", encoding="utf-8")
    _write(root / "staged.txt", "staged by the user\n")
    git_repo.git.add("staged.txt")
    _write(root / "scratch.txt", "untracked\n")
    before = _user_state(git_repo)
    dirty_bytes = (root / "README.md").read_bytes()
    index_bytes = (Path(git_repo.git_dir) / "index").read_bytes()

    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "wt" / "int", "feature/x")
    agent = ws.worktrees.add(tmp_path / "wt" / "a", "agent/a", start_point="feature/x")
    _write(agent / "new.py", "print('hi')\n")
    ws.commit_all(agent, "agent", **BACKEND)
    assert ws.merges.merge(integration, "agent/a", "merge a", **MANAGER).status == "merged"
    ws.worktrees.remove(agent)

    assert _user_state(git_repo) == before
    assert (root / "README.md").read_bytes() == dirty_bytes
    assert (Path(git_repo.git_dir) / "index").read_bytes() == index_bytes
    assert not (root / "new.py").exists()


def test_exclude_is_idempotent_and_shared(ws: GitWorkspace, git_repo: git.Repo) -> None:
    root = Path(git_repo.working_tree_dir)
    wt = ws.worktrees.add(root / ".ai-agents" / "worktrees" / "t1", "agent/t1")
    assert ".ai-agents/" in git_repo.git.status("--porcelain")

    from_linked = GitWorkspace(wt)
    assert from_linked.common_dir == ws.common_dir == Path(git_repo.git_dir).resolve()
    assert from_linked.exclude("/.ai-agents/") is True
    assert ws.exclude("/.ai-agents/") is False
    assert ws.exclude("/.orchestrator-run.json") is True

    lines = (ws.common_dir / "info" / "exclude").read_text(encoding="utf-8").splitlines()
    assert lines.count("/.ai-agents/") == 1 and lines.count("/.orchestrator-run.json") == 1
    assert git_repo.git.status("--porcelain") == ""
    assert not (root / ".gitignore").exists()


def test_remove_worktree_refuses_dirty_and_keeps_branch(ws: GitWorkspace, tmp_path: Path) -> None:
    wt = ws.worktrees.add(tmp_path / "wt", "agent/t1")
    _write(wt / "unsaved.py", "work in progress\n")
    with pytest.raises(GitError, match="unsaved.py"):
        ws.worktrees.remove(wt)
    assert (wt / "unsaved.py").is_file()

    ws.worktrees.remove(wt, force=True)
    assert not wt.exists()
    assert ws.branch_exists("agent/t1")
    assert [w.path for w in ws.worktrees.entries()] == [ws.root]

    again = ws.worktrees.add(tmp_path / "wt2", "agent/t1", start_point="ignored-for-existing")
    assert ws.branch_checked_out_in("agent/t1") == again
    ws.worktrees.remove(again)
    assert not again.exists()


def test_list_and_prune_worktrees(ws: GitWorkspace, git_repo: git.Repo, tmp_path: Path) -> None:
    gone = ws.worktrees.add(tmp_path / "wt" / "gone", "agent/gone")
    kept = ws.worktrees.add(tmp_path / "wt" / "kept", "agent/kept")
    git_repo.git.worktree("add", "--detach", str(tmp_path / "wt" / "detached"))
    git_repo.git.worktree("lock", "--reason", "in use", str(tmp_path / "wt" / "detached"))
    for directory in sorted(gone.rglob("*"), reverse=True):
        directory.unlink() if directory.is_file() or directory.is_symlink() else directory.rmdir()
    gone.rmdir()

    infos = {w.path: w for w in ws.worktrees.entries()}
    assert infos[ws.root].branch == "main"
    assert infos[gone].prunable and infos[gone].branch == "agent/gone"
    assert not infos[kept].prunable and infos[kept].head == ws.head_commit()
    detached = infos[(tmp_path / "wt" / "detached").resolve()]
    assert detached.detached and detached.locked and detached.branch is None

    pruned = ws.worktrees.prune()
    assert len(pruned) == 1 and "gone" in pruned[0]
    assert gone not in {w.path for w in ws.worktrees.entries()}
    assert ws.worktrees.prune() == []
    assert ws.branch_exists("agent/gone")


def test_stale_worktrees_report_what_would_be_lost(ws: GitWorkspace, tmp_path: Path) -> None:
    root = tmp_path / "run" / "worktrees"
    committed = ws.worktrees.add(root / "committed", "agent/committed")
    _write(committed / "done.py", "x = 1\n")
    ws.commit_all(committed, "done", **BACKEND)
    dirty = ws.worktrees.add(root / "dirty", "agent/dirty")
    _write(dirty / "wip.py", "y = 2\n")
    ws.worktrees.add(tmp_path / "elsewhere", "agent/elsewhere")

    stale = {w.path.name: w for w in ws.worktrees.stale(root, into="main")}
    assert set(stale) == {"committed", "dirty"}
    assert (stale["committed"].unmerged, stale["committed"].dirty) == (1, False)
    assert (stale["dirty"].unmerged, stale["dirty"].dirty) == (0, True)


def test_concurrent_add_worktree(ws: GitWorkspace, tmp_path: Path) -> None:
    def add(i: int) -> Path:
        return ws.worktrees.add(tmp_path / "wt" / f"t{i}", f"agent/t{i}", start_point="main")

    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(add, range(4)))
    assert all((p / "README.md").is_file() for p in paths)
    branches = {w.branch for w in ws.worktrees.entries()}
    assert branches == {"main", "agent/t0", "agent/t1", "agent/t2", "agent/t3"}


# -- commits and hooks --------------------------------------------------------------------


def test_failing_pre_commit_hook_reports_its_output(
    ws: GitWorkspace, git_repo: git.Repo, tmp_path: Path
) -> None:
    hook = Path(git_repo.git_dir) / "hooks" / "pre-commit"
    _write(hook, "#!/bin/sh\necho 'lint failed: trailing whitespace in app.py'\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    ws = GitWorkspace(ws.root)  # hooks are taken when the workspace opens the repository
    wt = ws.worktrees.add(tmp_path / "wt", "agent/t1")
    _write(wt / "app.py", "x = 1 \n")
    with pytest.raises(GitError, match="lint failed: trailing whitespace in app.py"):
        ws.commit_all(wt, "blocked", **BACKEND)
    assert ws.head_commit("agent/t1") == ws.head_commit("main")
    assert ws.commit_all(wt, "skip hooks", **BACKEND, verify=False)


def test_a_commits_files_are_known_without_asking_git_again(
    ws: GitWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wt = ws.worktrees.add(tmp_path / "wt", "agent/t1")
    (wt / "README.md").rename(wt / "READ.md")  # a rename is listed once, by its new path
    _write(wt / "src" / "app.py", "x = 1\n")
    parent = ws.head_commit("agent/t1")
    sha = ws.commit_all(wt, "work", **BACKEND)
    assert sha is not None
    real, commands = ws._run, []

    def counting(cmd: str, *args: str, **options: object) -> str:
        commands.append(cmd)
        return real(cmd, *args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "_run", counting)
    assert sorted(ws.history.changed_files(parent, sha)) == ["READ.md", "src/app.py"]
    assert commands == []
    monkeypatch.undo()
    ws.history._changed_memo.clear()
    assert sorted(ws.history.changed_files(parent, sha)) == ["READ.md", "src/app.py"]


# -- merging ------------------------------------------------------------------------------


def test_clean_merge_makes_a_merge_commit(ws: GitWorkspace, tmp_path: Path) -> None:
    integration = _diverge(ws, tmp_path, {"ui.js": "ui\n"}, {"api.py": "api\n"})
    before = ws.head_commit("feature/x")
    result = ws.merges.merge(integration, "agent/x/a", "Merge agent a", **MANAGER)
    assert result.status == "merged" and result.conflicts == []
    assert result.commit == ws.head_commit("feature/x")
    repo = git.Repo(integration)
    assert _parents(repo, result.commit) == [before, ws.head_commit("agent/x/a")]
    assert repo.commit(result.commit).author.name == "manager"
    assert repo.commit(result.commit).message.strip() == "Merge agent a"
    assert (integration / "api.py").is_file() and (integration / "ui.js").is_file()
    again = ws.merges.merge(integration, "agent/x/a", "again", **MANAGER)
    assert again == MergeResult("up_to_date")


def test_conflict_then_resolve(ws: GitWorkspace, tmp_path: Path) -> None:
    integration = _diverge(
        ws, tmp_path, {"README.md": "# ours\n", "ui.js": "ui\n"}, {"README.md": "# theirs\n"}
    )
    result = ws.merges.merge(integration, "agent/x/a", "Merge a", **MANAGER)
    assert result == MergeResult("conflict", None, ["README.md"])
    assert ws.merges.in_progress(integration)

    sides = ws.merges.conflict_sides(integration, "README.md")
    assert sides == {
        "path": "README.md",
        "binary": False,
        "base": "# test project\n",
        "ours": "# ours\n",
        "theirs": "# theirs\n",
    }
    with pytest.raises(GitError, match="not in conflict"):
        ws.merges.conflict_sides(integration, "ui.js")

    with pytest.raises(GitError, match=r"README\.md \(conflict markers\)"):
        ws.merges.conclude(integration, "Merge a", **MANAGER)
    (integration / "README.md").write_text("# ours and theirs\n", encoding="utf-8")
    _write(integration / "notes" / "bad.txt", "<<<<<<< HEAD\nleft behind\n>>>>>>> x\n")
    with pytest.raises(GitError, match=r"bad\.txt \(conflict markers\)"):
        ws.merges.conclude(integration, "Merge a", **MANAGER)
    (integration / "notes" / "bad.txt").unlink()

    sha = ws.merges.conclude(integration, "Merge a (resolved)", **MANAGER)
    repo = git.Repo(integration)
    assert len(_parents(repo, sha)) == 2
    assert repo.commit(sha).author.name == "manager"
    assert not ws.merges.in_progress(integration)
    assert repo.git.show(f"{sha}:README.md") == "# ours and theirs"
    assert repo.git.status("--porcelain") == ""


def test_abort_merge_restores(ws: GitWorkspace, tmp_path: Path) -> None:
    integration = _diverge(ws, tmp_path, {"README.md": "# ours\n"}, {"README.md": "# theirs\n"})
    head = ws.head_commit("feature/x")
    assert ws.merges.merge(integration, "agent/x/a", "m", **MANAGER).status == "conflict"
    assert ws.merges.abort(integration) is True
    assert ws.merges.abort(integration) is False
    assert not ws.merges.in_progress(integration)
    assert ws.head_commit("feature/x") == head
    assert (integration / "README.md").read_text(encoding="utf-8") == "# ours\n"
    assert git.Repo(integration).git.status("--porcelain") == ""
    with pytest.raises(GitError, match="no merge in progress"):
        ws.merges.conclude(integration, "m", **MANAGER)


def test_binary_conflict_is_reported_not_decoded(ws: GitWorkspace, tmp_path: Path) -> None:
    ours, theirs = b"\x89PNG\0ours\xff", b"\x89PNG\0theirs\xfe"
    integration = _diverge(ws, tmp_path, {"logo.png": ours}, {"logo.png": theirs})
    result = ws.merges.merge(integration, "agent/x/a", "m", **MANAGER)
    assert result.conflicts == ["logo.png"]

    sides = ws.merges.conflict_sides(integration, "logo.png")
    assert sides["binary"] is True
    assert (sides["base"], sides["ours"], sides["theirs"]) == (None, ours, theirs)
    with pytest.raises(GitError, match=r"logo\.png \(unmerged binary\)"):
        ws.merges.conclude(integration, "m", **MANAGER)

    ws.merges.take_side(integration, "logo.png", "theirs")
    sha = ws.merges.conclude(integration, "m", **MANAGER)
    assert (integration / "logo.png").read_bytes() == theirs
    assert len(_parents(git.Repo(integration), sha)) == 2


def test_merge_failure_without_conflict_raises(ws: GitWorkspace, tmp_path: Path) -> None:
    integration = _diverge(ws, tmp_path, {"ui.js": "ui\n"}, {"api.py": "api\n"})
    _write(integration / "api.py", "untracked file in the way\n")
    with pytest.raises(GitError, match="api.py"):
        ws.merges.merge(integration, "agent/x/a", "m", **MANAGER)
    assert not ws.merges.in_progress(integration)


def test_merge_never_fast_forwards(ws: GitWorkspace, tmp_path: Path) -> None:
    ws.create_branch("feature/x", "main")
    integration = ws.worktrees.add(tmp_path / "wt" / "integration", "feature/x")
    agent = ws.worktrees.add(tmp_path / "wt" / "agent", "agent/x/a", start_point="feature/x")
    _write(agent / "api.py", "api\n")
    agent_sha = ws.commit_all(agent, "agent work", **BACKEND)
    before = ws.head_commit("feature/x")
    result = ws.merges.merge(integration, "agent/x/a", "Merge agent a", **MANAGER)
    assert result.status == "merged" and result.commit != agent_sha
    assert _parents(git.Repo(integration), result.commit) == [before, agent_sha]


def test_refusing_merge_hook_aborts_and_raises(
    ws: GitWorkspace, git_repo: git.Repo, tmp_path: Path
) -> None:
    integration = _diverge(ws, tmp_path, {"ui.js": "ui\n"}, {"api.py": "api\n"})
    head = ws.head_commit("feature/x")
    hook = Path(git_repo.git_dir) / "hooks" / "pre-merge-commit"
    _write(hook, "#!/bin/sh\necho 'merge policy: no merges on fridays' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    ws = GitWorkspace(ws.root)  # hooks are taken when the workspace opens the repository
    with pytest.raises(GitError, match="no merges on fridays"):
        ws.merges.merge(integration, "agent/x/a", "m", **MANAGER)
    assert not ws.merges.in_progress(integration)
    assert ws.head_commit("feature/x") == head
    assert git.Repo(integration).git.status("--porcelain") == ""


def test_a_prune_in_another_process_holds_back_new_worktrees(ws: GitWorkspace,
                                                             tmp_path: Path) -> None:
    """git's prune deletes the admin directory of a worktree being added (before it is marked
    "initializing"); job workers are processes of their own, so the lock is a file lock."""
    import fcntl
    import os
    import threading

    lock = os.open(ws.common_dir / "agent-team-worktrees.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a pruning process would hold it
    started = threading.Event()
    made: list[Path] = []

    def add() -> None:
        started.set()
        made.append(ws.worktrees.add(tmp_path / "wt-held", "held"))

    thread = threading.Thread(target=add)
    thread.start()
    assert started.wait(10)
    thread.join(0.5)
    blocked = thread.is_alive() and not made
    os.close(lock)
    thread.join(30)
    assert blocked, "the add ran while a prune held the lock"
    assert made == [(tmp_path / "wt-held").resolve()]


def test_an_add_that_read_a_half_made_worktree_is_tried_again(
    ws: GitWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git 2.39 reads every other worktree's admin directory before making its own and dies on
    # one a concurrent add has not written yet, after it created the new branch.
    real = ws._run
    raced: list[tuple[str, ...]] = []

    def racing(cmd: str, *args: str, **options: object) -> str:
        if cmd == "worktree" and args[0] == "add" and not raced:
            raced.append(args)
            real("branch", "--no-track", "racy", "HEAD")
            raise GitError("`git worktree add` failed (exit 128): fatal: failed to read "
                           ".git/worktrees/other/commondir: Success")
        return real(cmd, *args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "_run", racing)
    path = ws.worktrees.add(tmp_path / "wt", "racy", start_point="HEAD")

    assert raced and "-b" in raced[0]
    assert ws.worktrees.branch_of(path) == "racy" and (path / "README.md").exists()


def test_an_add_that_fails_for_another_reason_is_not_retried(
    ws: GitWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ws._run
    adds: list[tuple[str, ...]] = []

    def refusing(cmd: str, *args: str, **options: object) -> str:
        if cmd == "worktree" and args[0] == "add":
            adds.append(args)
            raise GitError("`git worktree add` failed (exit 128): fatal: invalid reference")
        return real(cmd, *args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "_run", refusing)
    with pytest.raises(GitError, match="invalid reference"):
        ws.worktrees.add(tmp_path / "wt", "other", start_point="HEAD")
    assert len(adds) == 1
