# syntax=docker/dockerfile:1
# One image for every Python service of crypto-fraud-detection (and the MLflow server): each compose
# service runs a different `fraud <command>` (ENTRYPOINT is the CLI). No secret is baked in: the scorer's
# API keys, the Postgres password and every other setting come from FRAUD_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the pinned dependencies (requirements.lock) and the project ----
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 UV_LINK_MODE=copy
RUN python -m pip install "uv==${UV_VERSION}" \
 && python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the lock file only: this layer stays cached while the code changes.
COPY requirements.lock ./
RUN uv pip install --python /opt/venv/bin/python --no-deps -r requirements.lock
# Then the project itself, without touching the locked dependencies.
COPY pyproject.toml README.md ./
COPY fraud ./fraud
COPY pipelines ./pipelines
COPY services ./services
COPY models ./models
COPY data_quality ./data_quality
COPY feature_repo ./feature_repo
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
 && /opt/venv/bin/fraud --help >/dev/null

# ---- runtime: slim, non-root, only the virtualenv and the healthcheck probe ----
FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: LightGBM's OpenMP runtime (not in the slim base).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fraud \
 && useradd --system --uid 10001 --gid fraud --create-home --home-dir /home/fraud fraud \
 && mkdir -p /app /data /mlartifacts \
 && chown fraud:fraud /data /mlartifacts
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY infra/docker/healthcheck.py infra/docker/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/fraud \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    FEAST_USAGE=False \
    FRAUD_DATA_DIR=/data \
    FRAUD_LOG_JSON=true
USER fraud:fraud
VOLUME ["/data"]
# Default probe: HEALTHCHECK_URL if the service sets one, else its Kafka broker answers a TCP connect.
# Compose gives each service a sharper check (the scorer's /readyz, MLflow's /health, ingest's metrics).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "infra/docker/healthcheck.py"]
ENTRYPOINT ["fraud"]
CMD ["--help"]
