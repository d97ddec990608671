# syntax=docker/dockerfile:1
# One image for every gpu-gateway component: `serve` (the webhook, ledger and admin API),
# `controller` (the scheduler shim) and `agent` (the node agent). Slim, non-root, pinned.
#
#   docker build -t gpu-gateway:0.1.0 .
#   docker run --rm gpu-gateway:0.1.0 --help
#
# Pin the base by digest in your registry mirror for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
# gateway/bundled_policies links to policies/: the wheel carries the default bundle from there.
COPY policies/ policies/
COPY gateway/ gateway/
RUN python -m venv /opt/gpu-gateway \
 && /opt/gpu-gateway/bin/pip install --no-compile . \
 && /opt/gpu-gateway/bin/pip uninstall -y pip setuptools \
 && /opt/gpu-gateway/bin/python -c 'from gateway.policy_bundle import default_policy_dir; print(default_policy_dir())' \
 && find /opt/gpu-gateway -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpu-gateway" \
      org.opencontainers.image.description="Access control and GPU quotas for Kubernetes (admission webhook, scheduler shim, node agent)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/gpu-gateway/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/gpu-gateway /opt/gpu-gateway
# 65532: the conventional "nonroot" uid; the chart runs with a read-only root filesystem,
# writing only to its volumes (/var/lib/gpu-gateway, /tmp).
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/gpu-gateway --no-create-home nonroot \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/gpu-gateway
USER 65532:65532
WORKDIR /var/lib/gpu-gateway
EXPOSE 8443
ENTRYPOINT ["gpu-gateway"]
CMD ["--help"]
