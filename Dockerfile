# syntax=docker/dockerfile:1
# One image for all three binaries: queue-server (the default entrypoint), producer, consumer.
#   docker build -t memq-rs:0.1.0 .
# The Kubernetes manifests pick the binary with `command:`.

# ---- build ------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds, so a source change
# recompiles only the workspace crates, not every dependency. target/ being a cache mount,
# the binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p queue-server -p producer -p consumer \
    && mkdir -p /out \
    && cp target/release/queue-server target/release/producer target/release/consumer /out/

# ---- runtime ----------------------------------------------------------------------------
# distroless/cc: glibc and libgcc for Rust binaries, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="memq-rs" \
      org.opencontainers.image.description="Work queue for Kubernetes Jobs: queue-server, producer, consumer" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/queue-server /out/producer /out/consumer /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/queue-server"]
