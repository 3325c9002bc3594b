"""What counts as a secret, decided in one place, and the two ways the engine keeps it out.

Commands that agents or the orchestrator run get the environment without every variable the
table below names (`safe_environment`). Text written to the state file, logs, reports and
transcripts has the values of credential variables, and anything shaped like a provider key,
masked (`redact`). Both read the same table, so "what is a secret" cannot drift apart.

(Not called `secrets.py`: that name shadows the standard library module in tracebacks.)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "KEY_SHAPES",
    "SECRET_ENV_PATTERNS",
    "SECRET_ENV_RULES",
    "is_credential_env_name",
    "is_secret_env_name",
    "redact",
    "redact_value",
    "safe_environment",
    "secret_pattern",
]

#: Environment variable name rules: (fnmatch pattern on the upper-cased name, credential).
#: Every matching variable is withheld from the commands the engine runs. The value of a
#: variable matching a credential row is also masked in every text the engine writes;
#: provider settings (base URLs, regions, model names) are only withheld, because masking
#: "us-east-1" or a model name wherever it occurs would garble reports without protecting much.
SECRET_ENV_RULES: tuple[tuple[str, bool], ...] = (
    ("*API_KEY*", True),
    ("*APIKEY*", True),
    ("*_KEY", True),
    ("*_KEY_ID", True),
    ("*ACCESS_KEY*", True),
    ("*PRIVATE_KEY*", True),
    ("TOKEN", True),
    ("TOKEN_*", True),
    ("*_TOKEN", True),
    ("*_TOKEN_*", True),
    ("*SECRET*", True),
    ("*PASSWORD*", True),
    ("*PASSWD*", True),
    ("*_CREDENTIALS", True),
    ("ANTHROPIC_*", False),
    ("OPENAI_*", False),
    ("AWS_*", False),
    ("AZURE_*", False),
    ("PYPI_*", False),
    ("TWINE_*", False),
    ("SSH_AUTH_SOCK", False),
)

#: Shapes of provider keys, masked wherever they appear, whatever the environment holds.
#: Each starts with a literal character: `_shapes_regex` relies on it to search fast.
KEY_SHAPES: tuple[tuple[str, str], ...] = (
    ("Anthropic key", r"sk-ant-[A-Za-z0-9_-]{16,}"),
    ("OpenAI-style key", r"sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"),
    ("GitHub token", r"gh[pousr]_[A-Za-z0-9]{30,}"),
    ("GitHub fine-grained token", r"github_pat_[A-Za-z0-9_]{20,}"),
    ("AWS access key id", r"AKIA[0-9A-Z]{16}"),
    ("AWS temporary key id", r"ASIA[0-9A-Z]{16}"),
    ("Google API key", r"AIza[0-9A-Za-z_-]{35}"),
    ("Slack token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
)

#: The name patterns alone.
SECRET_ENV_PATTERNS: tuple[str, ...] = tuple(pattern for pattern, _ in SECRET_ENV_RULES)

_MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") would mask ordinary words


def _names_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))


def _shapes_regex(shapes: Iterable[tuple[str, str]]) -> str:
    """One alternation whose every branch starts with a character class `re` can skip to fast.

    The look-behind after that first character keeps a shape from starting inside a word, so
    "risk-..." or "disk-..." never match the "sk-" shape.
    """
    regexes = [regex for _, regex in shapes]
    if any(not regex[:1].isalnum() for regex in regexes):
        raise ValueError("every key shape must start with a literal letter or digit")
    first = "".join(sorted({regex[0] for regex in regexes}))
    rest = "|".join(regex[1:] for regex in regexes)
    return f"[{first}](?<![A-Za-z0-9][{first}])(?:{rest})"


_WITHHELD_NAME = _names_regex(SECRET_ENV_PATTERNS)
_CREDENTIAL_NAME = _names_regex(pattern for pattern, credential in SECRET_ENV_RULES if credential)
_KEY_SHAPES = _shapes_regex(KEY_SHAPES)
_env_cache: tuple[dict, dict[str, str]] = ({}, {})


def is_secret_env_name(name: str) -> bool:
    """True when a variable must not reach the commands the engine runs."""
    return _WITHHELD_NAME.match(name.upper()) is not None


def is_credential_env_name(name: str) -> bool:
    """True when a variable's value is itself a secret, so `redact` masks it in text."""
    return _CREDENTIAL_NAME.match(name.upper()) is not None


def safe_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus secrets, for every command agents or the orchestrator run."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items() if not is_secret_env_name(name)}


def _env_secrets() -> dict[str, str]:
    """Credential values of the environment (value -> name), rescanned only when it changed."""
    global _env_cache
    raw = getattr(os.environ, "_data", None)
    snapshot = raw if isinstance(raw, dict) else dict(os.environ)
    cached_snapshot, secrets = _env_cache
    if snapshot != cached_snapshot:
        secrets = {
            value: name
            for name, value in os.environ.items()
            if len(value) >= _MIN_SECRET_LENGTH and is_credential_env_name(name)
        }
        _env_cache = (dict(snapshot), secrets)
    return secrets


@lru_cache(maxsize=16)
def _secret_patterns(values: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One pattern for plain strings and one that also finds the values JSON-escaped."""
    literal = [re.escape(v) for v in values]
    escaped = [re.escape(json.dumps(v, ensure_ascii=False)[1:-1]) for v in values]
    plain = re.compile("|".join([*literal, _KEY_SHAPES]))
    in_json = re.compile("|".join([*dict.fromkeys([*literal, *escaped]), _KEY_SHAPES]))
    return plain, in_json


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    secrets = _env_secrets()
    return (*_secret_patterns(tuple(sorted(secrets, key=lambda v: (-len(v), v)))), secrets)


def secret_pattern(*, in_json: bool = False) -> re.Pattern[str]:
    """What `redact` masks right now; `in_json` also finds the values JSON-escaped.

    The same object comes back until the environment changes, so a caller may remember work
    by its identity (the state encoder does).
    """
    plain, escaped, _ = _patterns()
    return escaped if in_json else plain


def redact(text: str) -> str:
    """Mask credential environment values and key-shaped strings, so no file ever holds a key."""
    pattern, _, secrets = _patterns()
    return pattern.sub(lambda m: _mask(m.group(0), secrets), text)


def _mask(found: str, secrets: Mapping[str, str]) -> str:
    name = secrets.get(found)
    return f"[REDACTED:{name}]" if name else "[REDACTED]"


def redact_value(value: Any) -> Any:
    """Redact every string (and dict key) inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
