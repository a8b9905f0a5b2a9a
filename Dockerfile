# shardchat: one image for the router and the chat shards. No configuration file is in
# the image: mount one (router and shards read the same file), and give the shards their
# secrets. One shard and a router on a Docker network, for a try:
#
#   docker build -t shardchat .
#   cat > shardchat.yaml <<'YAML'
#   topology: { shards: 1, targetTemplate: "http://shard-{ordinal}:8080", adminTemplate: "http://shard-{ordinal}:9090" }
#   auth: { devTokens: true }
#   YAML
#   export SHARDCHAT_AUTH_SECRET=$(openssl rand -hex 32) SHARDCHAT_INTERNAL_TOKEN=$(openssl rand -hex 24)
#   docker network create shardchat
#   docker run -d --name shard-0 --network shardchat -v shardchat-0:/data \
#     -v "$PWD/shardchat.yaml:/etc/shardchat/shardchat.yaml:ro" \
#     -e SHARD_ORDINAL=0 -e SHARDCHAT_AUTH_SECRET -e SHARDCHAT_INTERNAL_TOKEN \
#     shardchat shard --config /etc/shardchat/shardchat.yaml
#   docker run -d --name router --network shardchat -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/shardchat.yaml:/etc/shardchat/shardchat.yaml:ro" \
#     shardchat router --config /etc/shardchat/shardchat.yaml
#   curl -s -XPOST localhost:8080/users/alice/token
#
# On Kubernetes the chart (charts/shardchat) mounts the configuration and the Secret.
#
# Both stages start from the same base (Node 24 LTS on Debian 12, glibc), the Node major
# that .ci/run tests on: better-sqlite3's native addon is compiled in the build stage and
# must load in the runtime stage, which has no compiler.

# --- build: dev dependencies, the compiler toolchain, tsc and esbuild ---
FROM node:24-bookworm-slim AS build

# python3, make and g++ for node-gyp (better-sqlite3).
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*

# Compile better-sqlite3 here, against this image's Node headers (/usr/local/include/node)
# and glibc, instead of downloading a prebuilt binary or the headers. npm 11 reads the
# package.json `allowScripts` entry for better-sqlite3 (older npm runs install scripts
# anyway); the check after the build fails the image if the addon did not compile.
ENV npm_config_build_from_source=true \
  npm_config_nodedir=/usr/local \
  npm_config_update_notifier=false

WORKDIR /app

# The lockfile first, so that the dependency layer is cached across source changes.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

# What `npm run build` reads: tsc (tsconfig.build.json) and web/build.mjs (esbuild).
COPY tsconfig.json tsconfig.build.json ./
COPY common ./common
COPY router ./router
COPY shard ./shard
COPY client ./client
COPY cli ./cli
COPY web ./web
RUN npm run build \
  && npm prune --omit=dev --no-audit --no-fund \
  && node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()" \
  && node dist/cli/main.js --help > /dev/null

# --- runtime: production node_modules, dist/ and package.json; no compiler, no apt ---
FROM node:24-bookworm-slim AS runtime

LABEL org.opencontainers.image.title="shardchat" \
  org.opencontainers.image.description="Kubernetes-native sharded group chat: a stateless shard router in front of a StatefulSet of chat shards" \
  org.opencontainers.image.licenses="Apache-2.0" \
  org.opencontainers.image.version="0.1.0" \
  org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"

ENV NODE_ENV=production

# A fixed numeric uid/gid (10001), so that Kubernetes' runAsNonRoot can verify it and
# fsGroup/volume ownership line up with /data.
RUN groupadd --gid 10001 shardchat \
  && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin shardchat \
  && mkdir -p /data \
  && chown 10001:10001 /data

WORKDIR /app
# Owned by root and read-only for the service user: the only writable place is /data.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist

# The shards' SQLite files (shard.dataDir defaults to /data).
VOLUME /data

USER 10001:10001

# 8080: the router's or the shard's traffic; 9090: the admin port (/healthz, /readyz, /metrics).
EXPOSE 8080 9090

# No tini: node runs as PID 1. The kernel gives PID 1 no default action for SIGTERM or
# SIGINT, so a process without handlers would ignore them; the CLI installs both and
# stops cleanly (drain, close, exit), which is what `docker stop` and the kubelet send.
# Router and shard spawn no children, so there are no zombies to reap (`local` mode, which
# does, is for development, not for this image). No HEALTHCHECK: Kubernetes probes
# /healthz and /readyz on the admin port.
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["router"]
