"""Quality commands: coverage and test-status."""

from __future__ import annotations

COMMANDS: list = []
