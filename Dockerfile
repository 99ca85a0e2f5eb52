# veil: multi-stage build; the runtime image holds the binary only.
#   docker build -t veil .
#   docker run --rm veil --help
# The build stage runs the same command as the README's "Build" section:
#   cargo build --release --locked

FROM rust:1.95-bookworm AS build
# librdkafka is compiled from source by rdkafka-sys: C toolchain, make,
# pkg-config, OpenSSL and zlib headers (the same list .ci/run installs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --locked --bin veil \
 && strip target/release/veil

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 veil \
 && useradd --system --uid 10001 --gid veil --no-create-home --shell /usr/sbin/nologin veil
COPY --from=build /src/target/release/veil /usr/local/bin/veil
USER 10001:10001
# /metrics, /healthz, /readyz (set metrics.listen: 0.0.0.0:9464 in a container)
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/veil"]
CMD ["run", "--config", "/etc/veil/pipeline.yaml"]
