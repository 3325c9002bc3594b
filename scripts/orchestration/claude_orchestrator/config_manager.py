"""ConfigurationManager: load and validate the document's config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_team.co.settings import ConfigValidationResult, CoSettings, load_settings
from agent_team.co.settings import validate_config as _validate

#: The document's name for the validated settings.
EnhancedConfig = CoSettings

__all__ = ["ConfigValidationResult", "ConfigurationManager", "EnhancedConfig"]


class ConfigurationManager:
    """Loads a config.json into typed settings; refuses every invalid key with its path."""

    def load_config(self, config_path: str | Path | None = None) -> EnhancedConfig:
        """The validated settings; ConfigurationError (exit code 2) when the file is wrong."""
        return load_settings(Path(config_path) if config_path else None)

    def validate_config(self, config_dict: dict[str, Any]) -> ConfigValidationResult:
        return _validate(config_dict)
