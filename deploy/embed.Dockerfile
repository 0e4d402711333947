# Embed job (Cloud Run job on an NVIDIA L4): CUDA 12 + cuDNN runtime, Node 20, and the embed
# deployable only (infra/packaging.ts: the bundled JavaScript and the packages it imports).
# onnxruntime-node downloads its CUDA 12 binaries at install (ONNXRUNTIME_NODE_INSTALL=cuda12);
# the same image runs on CPU when ONNX_EXECUTION_PROVIDER=cpu. Build context: repository root.

# Build stage: the repository's whole dependency tree, only to compile and bundle (esbuild).
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: nothing runs the model runtimes here (their downloads belong to the runtime stage).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY infra/packaging.ts ./infra/packaging.ts
COPY shared ./shared
COPY functions ./functions
COPY jobs ./jobs
RUN npm run build:deployables -- embed

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The deployable's package.json and its lockfile (the repository's, cut to what the bundle imports)
# first: the install layer is reused while only our code changes.
COPY --from=build /src/.deploy/embed/package.json /src/.deploy/embed/package-lock.json ./
# Install scripts are off (npm 11 blocks dependency scripts unless package.json's allowScripts
# approves them, and the project denies onnxruntime-node's so `npm ci` stays offline-safe); the GPU
# image runs onnxruntime-node's own installer explicitly for the CUDA 12 build, whatever the npm version.
# onnxruntime-node ships its binaries for every OS (darwin and win32 are ~220 MB): keep Linux's.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && (cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node ./script/install) \
 && find node_modules/onnxruntime-node/bin -mindepth 2 -maxdepth 2 -type d ! -name linux -exec rm -rf {} +
COPY --from=build /src/.deploy/embed/ ./
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cuda
USER 1000
# ENTRYPOINT, not CMD: Vertex AI / Cloud Run job args are appended as flags instead of replacing the program.
ENTRYPOINT ["node", "--enable-source-maps", "/app/dist/embed.js"]
