# Volley on CPU: ONNX Runtime's CPU provider, no GPU needed.
#   docker build -t volley .
#   docker run -p 8001:8001 -v $PWD/model_repository:/models:ro volley
# Ports: 8001 gRPC (KServe v2); 8000 REST and 8002 metrics (GET /metrics) where served.

# Build stage: a compiler and Python headers for the Cython batching core
# (server/volley/scheduler/_batchcore_c.pyx, built by setup.py).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY server ./server
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install .

# Runtime stage: the virtualenv only, no compiler; runs as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin volley \
 && mkdir -p /models \
 && chown 10001:10001 /models
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["volley", "serve", "--model-repository", "/models"]
