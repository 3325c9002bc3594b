# The orchestrator as a container: mount a repository at /workspace and pass the usual flags.
#   docker build -t agent-team .
#   docker run --rm -e ANTHROPIC_API_KEY -v "$PWD:/workspace" agent-team \
#     --feature "user authentication" --project-dir /workspace
FROM python:3.11-slim

# git for the engine, bubblewrap for the sandbox agents' commands and tests run in.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    # The mounted repository belongs to the host user; let git work in it.
    && git config --system --add safe.directory '*'

# The project and its runtime dependencies (no test tools).
COPY pyproject.toml README.md /src/
COPY scripts/orchestration/ /src/scripts/orchestration/
RUN pip install --no-cache-dir "/src[postgres,service,mcp]" && rm -rf /src

WORKDIR /app
COPY scripts/orchestration/ /app/orchestration/

# Keys come from `docker run -e`, never from the image.
ENV PROJECT_DIR=/workspace
ENTRYPOINT ["python", "/app/orchestration/file_based_orchestrator.py"]
