# Multi-stage build of the three services (and two small helpers) for docker-compose.yml.
# protoc comes from the protoc-bin-vendored crate, so the builder needs no apt protoc.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p command-service -p query-service -p saga-service -p service-runtime \
    && mkdir /out \
    && cp target/release/command-service target/release/query-service target/release/saga-service \
          target/release/grpc-health-probe target/release/orders-migrate /out/

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home orders
COPY --from=builder /out/ /usr/local/bin/
USER orders
# Each service listens on all interfaces inside its container; compose sets the address.
ENV LOG_FORMAT=json
