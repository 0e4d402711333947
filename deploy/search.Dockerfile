# Search API + web page (Cloud Run service on port 8080): the search deployable only
# (infra/packaging.ts: dist/search.js and web/ beside dist/, where the service looks for it).
# Build context: repository root.

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
COPY web ./web
RUN npm run build:deployables -- search

FROM node:20-bookworm-slim
WORKDIR /app
# package.json + lockfile first: the install layer is reused while only our code changes.
COPY --from=build /src/.deploy/search/package.json /src/.deploy/search/package-lock.json ./
# CPU image: onnxruntime-node's bundled CPU binaries, no CUDA download (what the project's allowScripts says for development machines).
# onnxruntime-node ships its binaries for every OS (darwin and win32 are ~220 MB): keep Linux's.
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && find node_modules/onnxruntime-node/bin -mindepth 2 -maxdepth 2 -type d ! -name linux -exec rm -rf {} +
COPY --from=build /src/.deploy/search/ ./
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cpu PORT=8080
EXPOSE 8080
USER node
CMD ["node", "--enable-source-maps", "/app/dist/search.js"]
