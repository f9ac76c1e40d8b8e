# syntax=docker/dockerfile:1
# modelport serving image, CPU. Serves the model repository mounted at /models:
#   HTTP (KServe v2, TF Serving REST, TorchServe API, /metrics) on 8000, gRPC (KServe v2) on 8001.
#
#   docker build -t REGISTRY/modelport:0.1.0 .
#   docker run --rm -p 8000:8000 -p 8001:8001 -v "$PWD/repo:/models:ro" REGISTRY/modelport:0.1.0
#
# Settings come from MODELPORT_* environment variables (see `modelport serve --help`) or from
# flags after the repository path: docker run ... REGISTRY/modelport:0.1.0 /models --workers 2
# Slimmer image: --build-arg EXTRAS=cpu (ONNX only). Pin PYTHON_IMAGE to a digest for releases.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# the runtimes the image can serve: onnx/ort (cpu), torchscript/pt2 (torch), savedmodel (tf),
# tflite, TF Serving gRPC (tfserving), repositories in s3://, gs:// and az:// (s3, gcs, azure);
# never `gpu` here (onnxruntime and onnxruntime-gpu collide)
ARG EXTRAS=cpu,torch,tf,tflite,tfserving,s3,gcs,azure
# PyTorch's CPU wheels: the PyPI torch wheel for Linux pulls several GB of CUDA libraries
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY modelport ./modelport
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -c constraints.txt ".[${EXTRAS}]" \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/modelport serve --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modelport" \
      org.opencontainers.image.description="modelport serve: KServe v2 HTTP/gRPC, TF Serving and TorchServe APIs over one model repository (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 modelport \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/modelport --create-home --shell /usr/sbin/nologin modelport \
    && mkdir /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/modelport \
    MODELPORT_HOST=0.0.0.0
USER 10001:10001
WORKDIR /home/modelport
EXPOSE 8000 8001
# over https when MODELPORT_TLS_CERTFILE is set (unverified: the container's own loopback); a server that
# requires client certificates (MODELPORT_TLS_CLIENT_CA) needs its own check: docker run --health-cmd ...
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = os.environ.get('MODELPORT_TLS_CERTFILE') and ssl._create_unverified_context(); urllib.request.urlopen('%s://127.0.0.1:%s/v2/health/live' % ('https' if tls else 'http', os.environ.get('MODELPORT_HTTP_PORT', '8000')), timeout=4, context=tls or None)"]
ENTRYPOINT ["modelport", "serve"]
CMD ["/models"]
