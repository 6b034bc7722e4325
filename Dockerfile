# The image docker-compose.yml runs: the three services and their helpers
# (grpc-health-probe, orders-migrate, orders-demo) on Debian bookworm, as a non-root user.
#
#   docker compose build          builds it from source (the last stage, the default)
#
# Stages, runtime ones first: the classic builder builds every stage before its --target,
# and scripts/compose-test builds `prebuilt` on machines that cannot pull the Rust image.
#   runtime   the base every service runs on: the user, the environment
#   prebuilt  runtime + binaries built outside Docker (context: a folder with bin/ in it)
#   builder   dependencies from the manifests first (a cached layer), then the sources
#   (last)    runtime + the builder's binaries
#
# protoc comes from the protoc-bin-vendored crate, so the builder needs no apt protoc.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin orders
USER orders
# Each service listens on all interfaces inside its container; compose sets the address.
ENV LOG_FORMAT=json

FROM runtime AS prebuilt
COPY bin/ /usr/local/bin/

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# 1. Dependencies only: the manifests, the lock file and the contracts' code generation,
#    with empty sources. This layer is rebuilt only when one of them changes.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/
COPY command-service/Cargo.toml command-service/
COPY query-service/Cargo.toml query-service/
COPY saga-service/Cargo.toml saga-service/
COPY shared/contracts/Cargo.toml shared/contracts/build.rs shared/contracts/
COPY shared/domain-events/Cargo.toml shared/domain-events/
COPY shared/event-store/Cargo.toml shared/event-store/
COPY shared/service-runtime/Cargo.toml shared/service-runtime/
COPY shared/test-support/Cargo.toml shared/test-support/
COPY proto proto
RUN for manifest in */Cargo.toml shared/*/Cargo.toml; do \
        mkdir -p "$(dirname "$manifest")/src" \
        && touch "$(dirname "$manifest")/src/lib.rs" \
        && echo 'fn main() {}' > "$(dirname "$manifest")/src/main.rs"; \
    done \
    && cargo build --release --locked -p command-service -p query-service -p saga-service -p service-runtime \
    && rm -rf */src shared/*/src
# 2. The sources. Touched, so cargo rebuilds the workspace's crates over the empty ones.
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p command-service -p query-service -p saga-service -p service-runtime \
    && mkdir /out \
    && cp target/release/command-service target/release/query-service target/release/saga-service \
          target/release/grpc-health-probe target/release/orders-migrate target/release/orders-demo /out/

FROM runtime
COPY --from=builder /out/ /usr/local/bin/
