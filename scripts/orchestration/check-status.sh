#!/usr/bin/env bash
# Print a job's status, tasks and where its results are: ./check-status.sh <job_id>
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
JOB="${1:?usage: ./check-status.sh <job_id>}"
STATE="${ORCHESTRATOR_HOME:-$HERE}/.quick-start"
if [ -z "${ORCHESTRATOR_API_KEY:-}" ] && [ -f "$STATE/api-key" ]; then
  ORCHESTRATOR_API_KEY="$(cat "$STATE/api-key")"
fi
export ORCHESTRATOR_API_KEY="${ORCHESTRATOR_API_KEY:-}"
export ORCHESTRATOR_URL="${ORCHESTRATOR_URL:-http://127.0.0.1:${ORCHESTRATOR_PORT:-8000}}"
cd "$HERE" && exec "${PYTHON:-python3}" -m orchestrator.api.cli status "$JOB"
