# CPU image by default; GPU image with:  docker build --build-arg VARIANT=gpu -t uncertainty_det:gpu .
ARG VARIANT=cpu
FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY uncertainty_det ./uncertainty_det
COPY conf ./conf
COPY experiments ./experiments
COPY tests ./tests

FROM base AS cpu
RUN pip install -e ".[dev]"

FROM base AS gpu
# The full TensorFlow wheel replaces the CPU-only one and brings the CUDA libraries.
RUN pip install -e ".[dev,gpu]" && pip uninstall -y tensorflow-cpu && pip install --force-reinstall --no-deps "tensorflow[and-cuda]==2.21.0"

FROM ${VARIANT} AS final
VOLUME ["/app/outputs"]
EXPOSE 5000
CMD ["udet-data", "--help"]
