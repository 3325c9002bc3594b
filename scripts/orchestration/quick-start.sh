#!/usr/bin/env bash
# Run one task end to end: start a local server when none answers, submit, follow, and say
# where the result is.   ./quick-start.sh "Build a REST API with authentication"
#
# Without config.yaml and without ANTHROPIC_API_KEY / OPENAI_API_KEY it runs the offline demo
# on the scripted model. The key, config and server log of a server it starts are kept in
# $ORCHESTRATOR_HOME/.quick-start (default: next to this script).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TASK="${1:?usage: ./quick-start.sh \"task description\"}"
PYTHON="${PYTHON:-python3}"
PORT="${ORCHESTRATOR_PORT:-8000}"
export ORCHESTRATOR_URL="${ORCHESTRATOR_URL:-http://127.0.0.1:$PORT}"
STATE="${ORCHESTRATOR_HOME:-$HERE}/.quick-start"
mkdir -p "$STATE"
if [ -z "${ORCHESTRATOR_API_KEY:-}" ]; then
  if [ ! -f "$STATE/api-key" ]; then
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$STATE/api-key")
  fi
  ORCHESTRATOR_API_KEY="$(cat "$STATE/api-key")"
fi
export ORCHESTRATOR_API_KEY

if ! curl -fsS "$ORCHESTRATOR_URL/api/v1/health" >/dev/null 2>&1; then
  CONFIG="$HERE/config.yaml"
  if [ ! -f "$CONFIG" ]; then
    CONFIG="$STATE/config.yaml"
    if [ -z "${ANTHROPIC_API_KEY:-}" ] && [ -z "${OPENAI_API_KEY:-}" ]; then
      echo "No ANTHROPIC_API_KEY or OPENAI_API_KEY: running the offline demo (scripted model)."
      PROVIDER="  api_provider: scripted
  session: \"$HERE/orchestrator/api/demo-session.json\""
    else
      PROVIDER=""
    fi
    cat > "$CONFIG" <<YAML
orchestrator:
  workspace_root: "$STATE/workspace"
$PROVIDER
api:
  host: "127.0.0.1"
  port: $PORT
logging:
  level: "INFO"
  log_dir: "$STATE/logs"
YAML
  fi
  echo "Starting a local server on $ORCHESTRATOR_URL (log: $STATE/server.out)"
  nohup "$PYTHON" "$HERE/api_server.py" --host 127.0.0.1 --port "$PORT" --config "$CONFIG" \
    > "$STATE/server.out" 2>&1 &
  echo $! > "$STATE/server.pid"
  for _ in $(seq 1 60); do
    curl -fsS "$ORCHESTRATOR_URL/api/v1/health" >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null; then
      echo "The server did not start:" >&2; cat "$STATE/server.out" >&2; exit 2
    fi
    sleep 0.5
  done
  echo "Server running (pid $(cat "$STATE/server.pid"); stop it with: kill $(cat "$STATE/server.pid"))."
  echo "Dashboard: $ORCHESTRATOR_URL/  (API key in $STATE/api-key)"
fi
cd "$HERE" && exec "$PYTHON" -m orchestrator.api.cli submit "$TASK"
