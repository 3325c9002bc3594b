"""NotificationInterface and the Slack provider."""

from __future__ import annotations

from agent_team.co.notify import NotificationInterface, Notifications, SlackNotifier

__all__ = ["NotificationInterface", "Notifications", "SlackNotifier"]
