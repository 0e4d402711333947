# Trainer image: the Vertex AI retraining job (jobs/retrain) and the reindex Cloud Run job
# (jobs/reindex, command set by the stack). CPU only: retraining reads stored base embeddings.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY shared ./shared
COPY functions ./functions
COPY jobs ./jobs
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cpu
USER node
# ENTRYPOINT, not CMD: Vertex AI / Cloud Run job args are appended as flags instead of replacing the program.
ENTRYPOINT ["node", "--import", "tsx", "jobs/retrain/main.ts"]
