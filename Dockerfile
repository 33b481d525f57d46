# syntax=docker/dockerfile:1
# Sentinel's image: docker build -t sentinel:0.1.0 .
# Build stage: a virtual environment with Sentinel and its wheels (TensorFlow CPU, ...).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# setuptools: the venv's bundled 65.5 has known CVEs (docs/security.md)
RUN python -m venv /opt/sentinel \
    && /opt/sentinel/bin/pip install --no-cache-dir 'setuptools>=78.1.1'
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
RUN /opt/sentinel/bin/pip install --no-cache-dir . \
    && find /opt/sentinel -name '__pycache__' -prune -exec rm -rf {} +

# Final stage: the same slim Python, the venv, no pip cache, no compilers, no source tree.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="sentinel" \
      org.opencontainers.image.description="Streaming failure-risk monitoring and alerting for flash sales"
RUN groupadd --system --gid 10001 sentinel \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/sentinel \
       --no-create-home --shell /usr/sbin/nologin sentinel \
    && mkdir -p /var/lib/sentinel /etc/sentinel \
    && chown 10001:10001 /var/lib/sentinel
COPY --from=build /opt/sentinel /opt/sentinel
ENV PATH=/opt/sentinel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /var/lib/sentinel
EXPOSE 9108
# /healthz: the main loop turned within the stall bound (see docs/daemon.md)
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)"]
ENTRYPOINT ["sentinel"]
CMD ["run", "--config", "/etc/sentinel/sentinel.yaml"]
