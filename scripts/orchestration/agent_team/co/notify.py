"""Notifications on completion, failure, budget stop and stuck agents.

Every provider implements one method, `send_notification(message, level)`. The dispatcher
decides which events go out and swallows provider errors: a notification that cannot be
delivered is logged and never changes the outcome of a run.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..redaction import redact
from .settings import SlackSettings

log = logging.getLogger("agent_team.co.notify")

LEVELS = ("info", "success", "warning", "error")
#: Run events that produce a notification, and their level.
EVENT_LEVELS = {"completed": "success", "failed": "error", "budget": "warning",
                "stuck": "warning", "interrupted": "warning"}


class NotificationInterface(ABC):
    """A place notifications go: Slack, e-mail, a pager, a test double."""

    @abstractmethod
    def send_notification(self, message: str, level: str) -> None:
        """Deliver one message; raise on failure (the dispatcher logs it)."""


class SlackNotifier(NotificationInterface):
    """Posts to a Slack incoming webhook (`{"text": ...}`), with a short timeout."""

    ICONS = {"info": ":information_source:", "success": ":white_check_mark:",
             "warning": ":warning:", "error": ":x:"}

    def __init__(self, webhook_url: str, *, timeout: float = 10.0) -> None:
        self.webhook_url = webhook_url
        self.timeout = timeout

    def send_notification(self, message: str, level: str) -> None:
        body = json.dumps({"text": f"{self.ICONS.get(level, '')} {message}".strip()})
        request = urllib.request.Request(
            self.webhook_url, data=body.encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            status = response.status
        if status >= 300:
            raise OSError(f"Slack answered HTTP {status}")


class Notifications:
    """Sends run events to every provider; never raises."""

    def __init__(self, providers: Sequence[NotificationInterface] = (), *,
                 on_completion: bool = True, on_error: bool = True) -> None:
        self.providers = list(providers)
        self.on_completion = on_completion
        self.on_error = on_error
        self.failures: list[str] = []

    @classmethod
    def from_settings(cls, slack: SlackSettings,
                      extra: Iterable[NotificationInterface] = ()) -> Notifications:
        providers: list[NotificationInterface] = list(extra)
        if slack.enabled and slack.webhook_url:
            providers.insert(0, SlackNotifier(slack.webhook_url))
        return cls(providers, on_completion=slack.notify_on_completion,
                   on_error=slack.notify_on_error)

    def wants(self, event: str) -> bool:
        if event == "completed":
            return self.on_completion
        return self.on_error

    def event(self, event: str, message: str) -> None:
        """Notify every provider of one run event (see EVENT_LEVELS)."""
        if not self.providers or not self.wants(event):
            return
        self.send(redact(message), EVENT_LEVELS.get(event, "info"))

    def send(self, message: str, level: str) -> None:
        for provider in self.providers:
            try:
                provider.send_notification(message, level)
            except Exception as exc:  # a notifier must never fail the run
                name = type(provider).__name__
                detail = redact(str(exc)) or type(exc).__name__
                self.failures.append(f"{name}: {detail}")
                log.warning("Notification through %s failed: %s", name, detail)

    def listener(self, run_label: str) -> Any:
        """An event-log listener that forwards stuck agents as they happen."""

        def on_event(event: Mapping[str, Any]) -> None:
            if event.get("kind") == "stuck" and event.get("action") in ("escalate", "fail"):
                self.event("stuck", f"{run_label}: agent {event.get('role')} on "
                                    f"{event.get('task_id')} is stuck ({event.get('reason')}); "
                                    f"action: {event.get('action')}.")

        return on_event


def summary_event(exit_code: int) -> str:
    """The notification event of a finished run, from its exit code."""
    return {0: "completed", 3: "budget", 130: "interrupted"}.get(exit_code, "failed")


__all__ = ["EVENT_LEVELS", "NotificationInterface", "Notifications", "SlackNotifier",
           "summary_event"]
