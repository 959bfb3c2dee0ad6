# syntax=docker/dockerfile:1
# Clarion service image. One Dockerfile for the six services; the build argument
# SERVICE picks which one is installed and started:
#
#   docker build --build-arg SERVICE=aggregator -t clarion/aggregator .
#
# SERVICE: ingest-api | aggregator | realtime-gateway | push-worker | email-worker | analytics
#
# Every third-party version comes from requirements.lock (used as constraints, so
# only what the chosen service needs is installed, at the locked versions).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
# The workspace packages are copied as sources: requirements.lock lists them as
# editable `-e ./...` lines, which are dropped from the constraints and installed
# as regular (non-editable) packages instead.
COPY requirements.lock pyproject.toml ./
COPY contracts/ contracts/
COPY libs/clarion-kit/ libs/clarion-kit/
COPY services/ services/
COPY deploy/docker/service-map.sh /usr/local/bin/clarion-service-map
SHELL ["/bin/sh", "-eu", "-c"]
RUN clarion-service-map "${SERVICE}" > /tmp/service.env \
    && grep -v '^-e ' requirements.lock > /tmp/constraints.txt \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --no-sources \
        --constraint /tmp/constraints.txt \
        ./contracts ./libs/clarion-kit "./services/${SERVICE}" \
    && cp /tmp/service.env /opt/venv/clarion-service.env

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="clarion-${SERVICE}" \
      org.opencontainers.image.description="Clarion notification platform: ${SERVICE}" \
      org.opencontainers.image.source="https://github.com/clarion-notify/clarion" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 clarion \
    && useradd --system --uid 10001 --gid clarion --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin clarion
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/lib/clarion/healthcheck.py
COPY deploy/docker/entrypoint.sh /usr/local/bin/clarion-entrypoint
# Containers listen on every interface (the settings default is loopback, which
# suits a developer machine, not a container); each service reads only its own.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CLARION_SERVICE=${SERVICE} \
    CLARION_INGEST_HTTP_HOST=0.0.0.0 \
    CLARION_AGGREGATOR_HTTP_HOST=0.0.0.0 \
    CLARION_GATEWAY_HTTP_HOST=0.0.0.0 \
    CLARION_GATEWAY_WS_HOST=0.0.0.0 \
    CLARION_PUSH_HTTP_HOST=0.0.0.0 \
    CLARION_EMAIL_HTTP_HOST=0.0.0.0 \
    CLARION_ANALYTICS_HTTP_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001 8002 8003 8004 8005 8011
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/clarion/healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/clarion-entrypoint"]
CMD []
