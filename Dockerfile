# syntax=docker/dockerfile:1
# Saga Tracker container image: a multi-stage build, non-root, read-only friendly.
#
#   docker build -t saga-tracker:dev .
#   docker run --rm -p 8080:8080 -e TRACKER_DATABASE__URL=postgres://... \
#     -e TRACKER_KAFKA__BROKERS=kafka:9092 saga-tracker:dev
#
# The binary embeds its migrations (`saga-tracker migrate`) and its default configuration
# (`saga-tracker default-config`); the Helm chart mounts a config file and passes `--config`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is compiled from source by rdkafka-sys (bundled build with zlib), with OpenSSL
# compiled from crates.io (`ssl-vendored`) so TLS and SASL/SCRAM work without the image's
# libssl; the rust image already has gcc, make and perl, zlib's headers are added here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY sdk sdk
COPY tracker tracker
COPY tests tests
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p saga-tracker \
 && install -D -m 0755 target/release/saga-tracker /out/saga-tracker

FROM debian:bookworm-slim AS runtime
# ca-certificates: the platform trust store that Kafka TLS (librdkafka probes it), PostgreSQL
# TLS without `ssl_root_cert`, and the OIDC JWKS fetch fall back on; zlib for librdkafka.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 saga \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin saga
COPY --from=build /out/saga-tracker /usr/local/bin/saga-tracker
USER 10001:10001
ENV TRACKER_HTTP__ADDR=0.0.0.0:8080 \
    TRACKER_LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/saga-tracker"]
CMD ["run"]
