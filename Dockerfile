# EventMesh ChatOps bot. Runs in Socket Mode (SLACK_BOT_TOKEN + SLACK_APP_TOKEN) or HTTP mode
# (SLACK_BOT_TOKEN + SLACK_SIGNING_SECRET, listening on $PORT).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    EVENTMESH_DATA_DIR=/var/lib/eventmesh-bot

# A real deploy needs git (the default `version` is `git describe --tags --always`, run in the
# deploy's workdir) and an SSH client. The workdir is a checkout mounted from the host, owned by
# another uid: git refuses such a repository ("dubious ownership") unless it is declared safe.
# ~eventmesh/.ssh is where the README's `docker run` mounts the key and known_hosts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client git \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*' \
 && useradd --create-home --uid 10001 eventmesh \
 && install -d -m 700 -o eventmesh /home/eventmesh/.ssh \
 && mkdir -p /var/lib/eventmesh-bot && chown eventmesh /var/lib/eventmesh-bot

WORKDIR /app
# Dependencies first, exactly as locked (versions and hashes; scripts/lock regenerates the
# file from pyproject.toml): this layer is rebuilt only when requirements.lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY config ./config
# Then the bot alone: its dependencies and its build tools (setuptools, wheel) came from the
# lock, so nothing unpinned is fetched here; pip check fails the build if the lock is stale.
RUN pip install --no-deps --no-build-isolation --no-index . && pip check

USER eventmesh
EXPOSE 3000
# Readiness, not liveness: /readyz answers 503 (urlopen raises, the check fails) when the store
# is unreachable or Slack has been out of reach for longer than slack.ready_grace (5 min).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"3000\")}/readyz', timeout=4)"
ENTRYPOINT ["eventmesh-bot"]
CMD ["run"]
