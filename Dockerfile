# Release Gateway: multi-stage, runs as uid 10001, which owns its state directory /app/var
# (a volume: the SQLite store var/state.db and the generated admin token var/admin-token).
# No `# syntax=` line: the image builds with the classic builder too (nothing to pull for it).

# Build stage: the venv and the demo models, trained here with fixed seeds.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Point this at a CPU-only torch wheel index (torch==2.13.0+cpu): a much smaller image than the
# default torch build, which brings CUDA.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir .
COPY models ./models
COPY flags ./flags
RUN gateway models --models models build-demo

# Runtime stage: the venv, the built models and the release flags, read-only for the runtime
# user; it writes only under /app/var. The image's settings come before the large COPYs: with a
# copying storage driver (vfs) every instruction after them costs a copy of the whole image.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group gateway \
    && mkdir -p /app/var \
    && chown gateway:gateway /app/var \
    && chmod 0700 /app/var
# Declared once the directory is made and owned: a new volume starts as a copy of it, owned by
# the runtime user (a bind mount instead must be writable by uid 10001). No RUN may follow that
# changes /app/var: Docker drops changes to a declared volume.
VOLUME ["/app/var"]
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8000 GATEWAY_LOG_FORMAT=json
USER gateway
EXPOSE 8000
# Ready = every model's serving version loaded. $GATEWAY_PORT is read when the check runs, so it
# follows a port set with `docker run -e GATEWAY_PORT=...`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:${GATEWAY_PORT:-8000}/v2/health/ready', timeout=3); sys.exit(0)"
CMD ["gateway", "serve"]
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/models /app/models
COPY --from=build /src/flags /app/flags
