# syntax=docker/dockerfile:1
# One Dockerfile, two images (see docs/deploy.md, "Images"):
#   GPU (default):  docker build -t leukemia-service:gpu .
#                   PyPI's torch wheel for x86_64 is a CUDA build; it brings its own CUDA
#                   libraries, so the host needs only the NVIDIA driver + container toolkit.
#   CPU:            docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t leukemia-service:cpu .
#                   PyTorch's CPU wheel index: about 1 GB smaller, for web, migrate and cpu-worker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment in /opt/venv -------------------------------------------
FROM ${PYTHON_IMAGE} AS build
# Keep in step with scripts/setup.sh (tests/test_compose.py checks they agree).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# PyTorch first, in its own layer: the biggest download changes least often.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# The other dependencies from pyproject's list, before the source, so a code change
# reuses this layer. Test tools ([project.optional-dependencies]) are left out.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /src/requirements.txt \
    && pip install -r /src/requirements.txt

# The project itself, without touching the dependencies installed above.
COPY README.md /src/README.md
COPY core /src/core
COPY worker /src/worker
COPY web /src/web
COPY leukemia /src/leukemia
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps /src

# --- runtime: the venv only; no compiler, pip cache, source tree or test tools ------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEUKEMIA_HOME=/home/leukemia/.leukemia \
    ARTIFACTS_DIR=/artifacts \
    CACHE_DIR=/cache \
    DATA_ROOTS=/data
RUN groupadd --system --gid 1000 leukemia \
    && useradd --system --uid 1000 --gid leukemia --create-home --home-dir /home/leukemia leukemia \
    && mkdir -p /artifacts /cache /data \
    && chown leukemia:leukemia /artifacts /cache /data
COPY --from=build /opt/venv /opt/venv
USER leukemia
WORKDIR /home/leukemia
EXPOSE 8000
# No CMD on purpose: each compose service names its own `leukemia ...` or gunicorn command.
