# Chorus worker image: `docker build -t chorus-worker .` (docker-compose.yml builds it as
# `worker` and reuses it for the optional codec server).
#
# Core dependencies only: the `local` extra (llama-cpp-python) compiles for minutes and the
# embedded model belongs to `chorus dev up`, not to a fleet; point CHORUS_LOCAL_BASE_URL at an
# OpenAI-compatible server instead. Build arg EXTRAS adds extras, e.g. OpenTelemetry tracing:
#   docker build --build-arg EXTRAS=otel -t chorus-worker .
FROM python:3.11.13-slim-bookworm AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md worker.py ./
COPY chorus ./chorus
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
RUN python -m venv /opt/chorus \
    && if [ -n "$EXTRAS" ]; then spec=".[${EXTRAS}]"; else spec="."; fi \
    && /opt/chorus/bin/pip install "$spec"

FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/chorus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHORUS_METRICS_HOST=0.0.0.0
COPY --from=build /opt/chorus /opt/chorus
RUN useradd --create-home --uid 10001 --user-group chorus
USER chorus
WORKDIR /home/chorus
# 9464: /metrics (chorus_*), /healthz, /readyz; 9465: Temporal SDK /metrics (temporal_*).
EXPOSE 9464 9465
# Liveness only: /readyz also fails while a provider is unconfigured, which a restart
# cannot fix. Honours CHORUS_METRICS_PORT when it is changed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CHORUS_METRICS_PORT', '9464'), timeout=4)"]
CMD ["python", "-m", "worker"]
