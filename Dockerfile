# syntax=docker/dockerfile:1
# One image with every mediabus binary (media-service, auth-service, http-bridge, media-processor,
# and any other binary of services/*), run as a non-root user on Debian slim. Pick the binary with
# the command: `docker run mediabus media-service`. Used by docker-compose.yml.
#
# Stages: `skeleton` (manifests and stub sources) → `build` (dependencies first, as their own
# cached layer, then the workspace) → `browser` (the bridge's static files: Swagger UI and the web
# app with its npm packages) → `runtime`.
# Build: docker build -t mediabus:latest .      (or: docker compose build)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- skeleton: what decides the dependency build, and nothing else -----------------------------
# Every Cargo.toml, Cargo.lock, and an empty stand-in for each target root cargo must find (the
# conventional ones that exist, and every explicit `path = "…"`). Its output changes only when a
# manifest, the lock file or the set of targets changes, so the dependency layer below stays
# cached across source edits, and a new crate needs no edit here.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS skeleton
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN mkdir -p /skeleton \
 && cp Cargo.toml Cargo.lock /skeleton/ \
 && find libs services tests -name Cargo.toml -not -path '*/node_modules/*' -print0 \
    | while IFS= read -r -d '' manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir" && cp "$manifest" "/skeleton/$manifest"; \
        for root in src/lib.rs src/main.rs build.rs \
                    $(find "$dir/src/bin" -maxdepth 1 -name '*.rs' -printf 'src/bin/%f\n' 2>/dev/null) \
                    $(sed -n 's/^path *= *"\(.*\)"/\1/p' "$manifest"); do \
          [[ -f "$dir/$root" ]] || continue; \
          mkdir -p "/skeleton/$dir/$(dirname "$root")"; \
          if [[ $root == src/lib.rs ]]; then : >"/skeleton/$dir/$root"; \
          else echo 'fn main() {}' >"/skeleton/$dir/$root"; fi; \
        done; \
      done

# --- build ----------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The processor links Debian's libjpeg-turbo and libwebp (found by pkg-config).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libturbojpeg0-dev libwebp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Every service binary; the test crate (benchmarks, test workers) and the test harness stay out.
ENV CARGO_BUILD_ARGS="--release --locked --workspace --bins --exclude mediabus-e2e --exclude mediabus-testkit"
# 1. Dependencies only (the stubs compile in seconds): this layer is reused until a manifest or
#    Cargo.lock changes.
COPY --from=skeleton /skeleton/ ./
# hadolint ignore=SC2086
RUN cargo build $CARGO_BUILD_ARGS
# 2. The workspace itself. The copied sources may be older than the stub builds: touch them, or
#    cargo would take the stubs' outputs as up to date.
COPY . .
# hadolint ignore=SC2086
RUN find libs services tests -name '*.rs' -not -path '*/node_modules/*' -exec touch {} + \
 && cargo build $CARGO_BUILD_ARGS \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -perm -u+x -exec install -m 0755 {} /out/ \; \
 && ls -l /out

# --- browser files the bridge serves, from npm (no CDN): Swagger UI for /docs, the web app's
#     packages for / ------------------------------------------------------------------------------
FROM node:20-${DEBIAN_RELEASE}-slim AS browser
# --ignore-scripts: static files only (skips a dependency's telemetry install script).
WORKDIR /docs
COPY services/http-bridge/docs/package.json services/http-bridge/docs/package-lock.json ./
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund
WORKDIR /web
COPY services/http-bridge/web/package.json services/http-bridge/web/package-lock.json ./
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund
# The app itself (plain ES modules, no build step) next to its packages, as web.dir expects.
COPY services/http-bridge/web/index.html ./
COPY services/http-bridge/web/app/ ./app/

# --- runtime --------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# ffmpeg/ffprobe (video, audio), poppler-utils (pdfinfo, pdftoppm), libjpeg-turbo and libwebp
# (linked by the processor), CA certificates (TLS to S3/MongoDB/OTLP when configured), curl (the
# health check). Versions follow the Debian release's security updates, hence unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl ffmpeg poppler-utils libturbojpeg0 libwebp7 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mediabus --create-home \
      --shell /usr/sbin/nologin mediabus
COPY --from=build /out/ /usr/local/bin/
COPY --from=browser /docs/node_modules/swagger-ui-dist/ /usr/share/mediabus/swagger-ui-dist/
COPY --from=browser /web/ /usr/share/mediabus/web/
COPY --chmod=0755 deploy/healthcheck.sh /usr/local/bin/mediabus-healthcheck
# Fails the build if a binary needs a shared library this stage lacks, or a program the processor
# and the health check run is missing.
RUN for bin in /usr/local/bin/*; do \
      [[ $bin == */mediabus-healthcheck ]] && continue; \
      if ldd "$bin" | grep 'not found'; then echo "$bin: missing libraries" >&2; exit 1; fi; \
    done \
 && for tool in ffmpeg ffprobe pdfinfo pdftoppm curl; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
USER 10001:10001
WORKDIR /var/lib/mediabus
# Optional second configuration layer (docker-compose.yml mounts deploy/config here).
ENV MEDIABUS_CONFIG_DIR=/etc/mediabus
EXPOSE 8080
CMD ["http-bridge"]
