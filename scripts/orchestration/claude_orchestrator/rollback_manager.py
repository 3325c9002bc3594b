"""RollbackManager: checkpoints of the tool's branches and backlog, and rollbacks to them."""

from __future__ import annotations

from pathlib import Path

from agent_team.co import checkpoints
from agent_team.co.checkpoint_cmds import rollback_manager
from agent_team.co.checkpoints import CheckpointType, RollbackResult, RollbackStrategy
from agent_team.co.storage import JsonFileStorage, StorageInterface

__all__ = ["CheckpointType", "RollbackManager", "RollbackResult", "RollbackStrategy"]


class RollbackManager(checkpoints.RollbackManager):
    """The project's rollback manager, wired to its backlog and team state.

    `checkpoint_dir` keeps the checkpoint records in that directory of the project instead of
    the git directory; `storage` replaces the record store altogether.
    """

    def __init__(self, checkpoint_dir: str | Path | None = None, *,
                 working_dir: str | Path = ".", storage: StorageInterface | None = None) -> None:
        project = Path(working_dir).resolve()
        if storage is None and checkpoint_dir is not None:
            storage = JsonFileStorage(project / checkpoint_dir)
        wired = rollback_manager(project, storage=storage)
        super().__init__(project, storage=wired.storage, owned_branches=wired._owned,
                         snapshot_backlog=wired._snapshot, restore_backlog=wired._restore,
                         merges_of_task=wired._merges_of_task)
