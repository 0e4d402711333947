# Trainer image: the Vertex AI retraining job (dist/retrain.js), the reindex Cloud Run job
# (dist/reindex.js) and the model bootstrap job (dist/bootstrap-model.js), the last two with the
# command set by the stack (infra/packaging.ts containerCommand). CPU only: retraining reads stored
# base embeddings. Ships the trainer deployable only (infra/packaging.ts). Build context: repository root.

# Build stage: the repository's whole dependency tree, only to compile and bundle (esbuild).
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: nothing runs the model runtimes here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY infra/packaging.ts ./infra/packaging.ts
COPY shared ./shared
COPY functions ./functions
COPY jobs ./jobs
RUN npm run build:deployables -- trainer

FROM node:20-bookworm-slim
WORKDIR /app
# package.json + lockfile first: the install layer is reused while only our code changes.
COPY --from=build /src/.deploy/trainer/package.json /src/.deploy/trainer/package-lock.json ./
# CPU image: onnxruntime-node's bundled CPU binaries, no CUDA download (what the project's allowScripts says for development machines).
# onnxruntime-node ships its binaries for every OS (darwin and win32 are ~220 MB): keep Linux's.
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && find node_modules/onnxruntime-node/bin -mindepth 2 -maxdepth 2 -type d ! -name linux -exec rm -rf {} +
COPY --from=build /src/.deploy/trainer/ ./
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cpu
USER node
# ENTRYPOINT, not CMD: Vertex AI / Cloud Run job args are appended as flags instead of replacing the program.
ENTRYPOINT ["node", "--enable-source-maps", "/app/dist/retrain.js"]
