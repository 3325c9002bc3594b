#!/usr/bin/env bash
# Install what the orchestration service needs, and check git and Python.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
command -v git >/dev/null || { echo "git is required: install it first." >&2; exit 2; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "Python 3.10 or newer is required." >&2; exit 2; }
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
echo "Installed. Next: cp config.template.yaml config.yaml, set api.api_key (or export"
echo "ORCHESTRATOR_API_KEY), then: python api_server.py   or   ./quick-start.sh \"your task\""
