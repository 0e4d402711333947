# Embed job (Cloud Run job on an NVIDIA L4): CUDA 12 + cuDNN runtime, Node 20, the repository.
# onnxruntime-node downloads its CUDA 12 binaries at install (ONNXRUNTIME_NODE_INSTALL=cuda12);
# the same image runs on CPU when ONNX_EXECUTION_PROVIDER=cpu. Build context: repository root.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The project .npmrc says "skip" for offline dev machines; the GPU image wants the CUDA build.
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
RUN sed -i '/onnxruntime-node-install/d' .npmrc && npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY shared ./shared
COPY functions ./functions
COPY jobs ./jobs
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cuda
USER 1000
# ENTRYPOINT, not CMD: Vertex AI / Cloud Run job args are appended as flags instead of replacing the program.
ENTRYPOINT ["node", "--import", "tsx", "jobs/embed/main.ts"]
