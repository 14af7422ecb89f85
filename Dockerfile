# apura: multi-stage build. The builder compiles the release binary; the runtime image holds
# only that binary, the web page and CA certificates, and runs as an unprivileged user.

FROM rust:1.95-slim-bookworm AS builder
# aws-lc-sys (TLS for HTTPS feeds) builds C code: it needs a C toolchain, cmake and perl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a change to apura's own code does not rebuild them: the manifests
# of every workspace member, each with an empty stand-in for its sources.
COPY Cargo.toml Cargo.lock ./
COPY crates/formats/Cargo.toml crates/formats/
COPY crates/simulate/Cargo.toml crates/simulate/
COPY loadtest/Cargo.toml loadtest/
RUN for member in . crates/formats crates/simulate loadtest; do \
      mkdir -p "$member/src" && echo 'fn main() {}' > "$member/src/main.rs" && touch "$member/src/lib.rs"; \
    done \
 && mkdir -p benches && echo 'fn main() {}' > benches/ingest.rs \
 && cargo build --release --locked -p apura \
 && rm -rf src benches crates/formats/src crates/simulate/src loadtest/src
COPY src ./src
COPY benches ./benches
COPY crates ./crates
COPY loadtest/src ./loadtest/src
RUN touch src/main.rs src/lib.rs crates/formats/src/lib.rs crates/simulate/src/lib.rs \
 && cargo build --release --locked -p apura --bin apura

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin apura
COPY --from=builder /src/target/release/apura /usr/local/bin/apura
COPY web-demo /app/web-demo
WORKDIR /app
USER apura
ENV APURA_LISTEN=0.0.0.0:8080 \
    APURA_WEB_DIR=/app/web-demo
EXPOSE 8080
# /healthz answers as soon as the process serves; /readyz once documents are loaded. The port
# is the one of APURA_LISTEN (`0.0.0.0:8080` → 8080). Commands that serve no gateway (ingest,
# simulate) get their own check in compose.yaml.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${APURA_LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["apura"]
CMD ["demo"]
