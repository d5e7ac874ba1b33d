# syntax=docker/dockerfile:1
# One image for all three binaries: queue-server (the default entrypoint), producer, consumer.
#   docker build -t memq-rs:0.1.0 .
# (or `podman build`, or scripts/image.sh: buildah, no daemon, reproducible, with an SBOM).
# The Kubernetes manifests pick the binary with `command:`.

# ---- build ------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
# cargo-auditable embeds each binary's dependency list (crate names, versions, sources) in a
# section of its own, which `cargo audit bin`, syft and trivy read from the image alone.
ARG CARGO_AUDITABLE_VERSION=0.7.7
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install --locked --quiet "cargo-auditable@${CARGO_AUDITABLE_VERSION}"
WORKDIR /src
COPY . .
# The commit the binaries' --version names: the tree here has no .git (scripts/image.sh passes
# it; without it, "unknown").
ARG REVISION=""
# Cache mounts keep the crate registry and target/ between builds, so a source change
# recompiles only the workspace crates, not every dependency. target/ being a cache mount,
# the binaries are copied out of it in the same step. cargo tells a changed workspace crate by
# its files' times, and COPY keeps the context's: a tree older than the cache's last build
# (another checkout, an older commit) would pass for built, so the sources are marked new first
# (this step runs only when the context or the revision changed). Without debug line tables and
# stripped: the image carries no symbols (backtraces show addresses only).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    find . -path ./target -prune -o -type f -exec touch {} + \
    && CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    MEMQ_GIT_COMMIT="${REVISION}" \
    cargo auditable build --release --locked -p queue-server -p producer -p consumer \
    && mkdir -p /out \
    && cp target/release/queue-server target/release/producer target/release/consumer /out/

# ---- runtime ----------------------------------------------------------------------------
# distroless/cc: glibc and libgcc for Rust binaries, CA certificates and time zones; no shell,
# no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
# The commit the image was built from (scripts/image.sh passes it).
ARG REVISION=""
LABEL org.opencontainers.image.title="memq-rs" \
      org.opencontainers.image.description="Work queue for Kubernetes Jobs: queue-server, producer, consumer" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/memq-rs/memq-rs" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=builder /out/queue-server /out/producer /out/consumer /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/queue-server"]
