# The orchestrator as a container: mount a repository at /workspace and pass the usual flags.
#   docker build -t agent-team .
#   docker run --rm -e ANTHROPIC_API_KEY -v "$PWD:/workspace" agent-team \
#     --feature "user authentication" --project-dir /workspace
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    # The mounted repository belongs to the host user; let git work in it.
    && git config --system --add safe.directory '*'

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY scripts/orchestration/ /app/orchestration/

# Keys come from `docker run -e`, never from the image.
ENV PROJECT_DIR=/workspace
ENTRYPOINT ["python", "/app/orchestration/file_based_orchestrator.py"]
