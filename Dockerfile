# One image for every orchestrator service (migrate, worker, beat, flower); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged account the services run as.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --home-dir /app \
       --shell /usr/sbin/nologin orchestrator

WORKDIR /app

COPY pyproject.toml README.md ./
COPY orchestrator/ orchestrator/
COPY tasks/ tasks/
RUN pip install .

# Workflows and the Flower config are read from /app/config at run time.
COPY config/ config/

# Writable state (Celery beat's schedule file) lives outside the code.
RUN mkdir -p /var/lib/orchestrator && chown orchestrator:orchestrator /var/lib/orchestrator

USER orchestrator

CMD ["celery", "-A", "orchestrator.worker", "worker", "--loglevel=INFO"]
