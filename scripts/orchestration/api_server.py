#!/usr/bin/env python3
"""The orchestration service: REST API, live events and dashboard over the agent team.

    python scripts/orchestration/api_server.py [--host H] [--port P] [--config config.yaml]

The API key comes from ORCHESTRATOR_API_KEY or api.api_key in config.yaml; the server does
not start without one. Open http://HOST:PORT/ for the dashboard.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402
from agent_team.errors import EXIT_BAD_INPUT, ConfigError  # noqa: E402
from orchestrator.api.config import ServiceConfig, check_api_key, load_config  # noqa: E402


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


def setup_logging(config: ServiceConfig) -> None:
    """Console and, with logging.log_dir, api_server.log; JSON lines when structured."""
    formatter: logging.Formatter = (_JsonFormatter() if config.structured_logs else
                                    logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                                      "%(message)s"))
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.log_dir / "api_server.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True)


@click.command()
@click.option("--host", help="Address to listen on (default: api.host, localhost).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: api.port, 8000).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config.yaml (default: config.yaml next to this script when present).")
def main(host: str | None, port: int | None, config_path: str | None) -> None:
    """Serve the orchestration API and dashboard."""
    import uvicorn
    from orchestrator.api.app import create_app

    default = Path(__file__).resolve().parent / "config.yaml"
    if config_path is None and default.is_file():
        config_path = str(default)
    try:
        config = load_config(config_path)
        check_api_key(config.api_key)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    setup_logging(config)
    log = logging.getLogger("orchestrator.api")
    for note in config.notes():
        log.warning(note)
    config.workspace_root.mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    bind_host, bind_port = host or config.host, config.port if port is None else port
    log.info("serving on http://%s:%d (workspace %s)", bind_host, bind_port,
             config.workspace_root)
    uvicorn.run(app, host=bind_host, port=bind_port, log_level=config.log_level.lower(),
                access_log=False)


if __name__ == "__main__":
    main()
