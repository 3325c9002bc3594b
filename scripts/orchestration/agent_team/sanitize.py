"""Text that came from a model, made safe for where it is shown.

A plan description or a summary is the model's text, and the model may have read a hostile
file: on a terminal, escape sequences could move the cursor, rewrite earlier lines, set the
window title or fake a "Status: SUCCESS" line; in a pull request, "Resolves #12" would close
an unrelated issue, "@someone" would notify people, and raw HTML could hide text.
"""

from __future__ import annotations

import re

__all__ = ["for_log", "for_markdown_pr", "for_terminal"]

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte escapes, and 8-bit CSI.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidirectional overrides
# and isolates that reorder what is displayed ("Trojan Source").
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_CLOSING = re.compile(
    r"\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(\s*:?\s*)"
    r"((?:[\w.-]+/[\w.-]+)?#\d+|https?://\S+/(?:issues|pull)/\d+)",
    re.IGNORECASE,
)
_MENTION = re.compile(r"(?<![\w`])@([A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[\w.-]+)?)")


def for_terminal(text: str, *, single_line: bool = False) -> str:
    """Drop escape sequences and control characters; tabs and newlines stay.

    With `single_line`, newlines become " | " as well, so a model's text can never start a
    line of its own (a forged "Status: SUCCESS" line) in the orchestrator's output.
    """
    text = _ESCAPES.sub("", str(text))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    if single_line and "\n" in text:
        text = " | ".join(part.rstrip() for part in text.split("\n") if part.strip())
    return text


def for_log(text: str) -> str:
    """One line for a log or a progress display."""
    return for_terminal(text, single_line=True)


def for_markdown_pr(text: str) -> str:
    """Model text for a pull request or issue comment: closes nothing, mentions no one.

    Closing keywords are kept but their issue reference goes into a code span (GitHub does
    not link or close from code), mentions too, and `<` is escaped so no raw HTML (hidden
    comments, details blocks, images) reaches the page.
    """
    text = for_terminal(text)
    text = text.replace("<", "&lt;")
    text = _CLOSING.sub(lambda m: f"{m.group(1)}{m.group(2)}`{m.group(3)}`", text)
    return _MENTION.sub(lambda m: f"`@{m.group(1)}`", text)
