# flightplan as a container action. Multi-stage: build with cargo, ship a slim runtime with
# CA certificates and the PostgreSQL client (pg_dump/pg_restore for the pg_dump backup provider).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin flightplan && strip target/release/flightplan

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flightplan /usr/local/bin/flightplan
COPY scripts/flightplan-action /usr/local/bin/flightplan-action
# GitHub runs container actions as the image's default user and documents that it must be
# root (no USER instruction): the workspace and file-command mounts belong to the runner.
# Outside Actions, run it unprivileged: docker run --user 65532:65532 …
ENTRYPOINT ["/usr/local/bin/flightplan-action"]
