# privgen worker image: runs a Prefect process worker that executes privgen flows.
# Build context is the repository root (see .dockerignore: no data/, .env, runs).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    GX_ANALYTICS_ENABLED=false \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /app

# 1. CPU-only torch first, from the PyTorch index: the lock file's torch==2.13.0 pin
#    is then already satisfied by 2.13.0+cpu, so pip does not fetch the CUDA build
#    from PyPI (keep nvidia-* / triton out of requirements.lock for the same reason).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# 2. Locked third-party dependencies (own layer: cached until the lock changes).
COPY requirements.lock ./
RUN pip install -r requirements.lock

# 3. The project itself, without re-resolving dependencies.
COPY . .
RUN pip install --no-deps . \
 && rm -rf build *.egg-info \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin privgen \
 && mkdir -p /app/runs /app/data \
 && chown privgen:privgen /app/runs

# Flows resolve data/ (read-only bind), runs/ (named volume, owned by privgen) and
# .privgen/ relative to /app. /app itself stays root-owned: the container cannot fall
# back to writing a local .privgen/pseudonym.key, so PRIVGEN_PSEUDONYM_KEY must be set.
USER privgen

CMD ["prefect", "worker", "start", "--pool", "privgen-pool", "--type", "process"]
