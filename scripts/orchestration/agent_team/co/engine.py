"""How `co` builds the engine's settings and a manager to talk to, from its own options."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, _deep_merge, build_config
from ..orchestrator import BaseOrchestrator
from .settings import CoSettings

if TYPE_CHECKING:
    from .base import CoContext


def engine_config(ctx: CoContext, settings: CoSettings, project: Path,
                  **extra: Any) -> Config:
    """Engine defaults < the project's orchestrator-config.json < config.json < flags."""
    overrides = copy.deepcopy(settings.engine_overrides())
    _deep_merge(overrides, {
        "api_provider": ctx.api_provider,
        "session": str(ctx.session) if ctx.session else None,
        "model": ctx.model_name,
        **extra,
    })
    return build_config(project_dir=project, overrides=overrides)


def manager_for(ctx: CoContext, settings: CoSettings, project: Path,
                output: Any = None) -> BaseOrchestrator:
    """An engine object used only to ask the manager (planning a document, reviews)."""
    return BaseOrchestrator(project, config=engine_config(ctx, settings, project),
                            output=output or (lambda line: None))
