# Search API + web page (Cloud Run service on port 8080).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY shared ./shared
COPY functions ./functions
COPY web ./web
ENV NODE_ENV=production ONNX_EXECUTION_PROVIDER=cpu PORT=8080
EXPOSE 8080
USER node
CMD ["node", "--import", "tsx", "functions/search-service.ts"]
