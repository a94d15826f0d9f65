# The action's image: the flightplan binary as the entrypoint, CA certificates and the
# PostgreSQL client tools (pg_dump, pg_restore, psql), on nothing else (no shell, no package
# manager: smaller, faster to start, less to patch).
#
# The base images are build arguments so this one file builds everywhere: on GitHub from the
# public images below; on a machine that cannot pull images, from bases made out of Debian's
# packages (scripts/action-image does both). Same stages, same commands either way.
ARG RUST_IMAGE=rust:1-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies in their own layer: a change to the source rebuilds only the crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin flightplan \
 && rm -rf src
COPY src src
COPY examples examples
# COPY keeps the files' times, which may be older than the placeholder's build: touch them.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin flightplan \
 && strip target/release/flightplan \
 && target/release/flightplan --version

# The PostgreSQL client tools of the newest major the build can get: from the PostgreSQL
# project's own apt repository (pgdg: 17, which dumps Neon's 16 and 17 servers), or Debian's
# own (debian: bookworm has 15) where that repository is out of reach.
FROM ${DEBIAN_IMAGE} AS root
ARG PG_SOURCE=pgdg
ARG PG_MAJOR=17
COPY --from=build /src/target/release/flightplan /usr/local/bin/flightplan
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    if [ "$PG_SOURCE" = pgdg ]; then \
      apt-get install -y --no-install-recommends postgresql-common; \
      /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; \
    fi; \
    apt-get install -y --no-install-recommends "postgresql-client-$PG_MAJOR"; \
    bin=/usr/lib/postgresql/$PG_MAJOR/bin; \
    # The runtime root: the programs, every shared library they load (as ldd resolves them),
    # the CA bundle, and the few files glibc and libpq read.
    mkdir -p /out/usr/local/bin /out$bin /out/usr/lib/x86_64-linux-gnu /out/usr/lib64 \
             /out/etc/ssl/certs /out/usr/lib/ssl /out/tmp /out/github/workspace; \
    chmod 1777 /out/tmp; \
    ln -s usr/lib /out/lib; ln -s usr/lib64 /out/lib64; \
    cp /usr/local/bin/flightplan /out/usr/local/bin/; \
    for p in pg_dump pg_restore psql; do cp "$bin/$p" "/out$bin/"; done; \
    for f in $(ldd /usr/local/bin/flightplan $bin/pg_dump $bin/pg_restore $bin/psql \
               | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' | sort -u); do \
      d=$(cd "$(dirname "$f")" && pwd -P); mkdir -p "/out$d"; cp -L "$f" "/out$d/"; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    ln -s /etc/ssl/certs /out/usr/lib/ssl/certs; \
    ln -s /etc/ssl/certs/ca-certificates.crt /out/usr/lib/ssl/cert.pem; \
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > /out/etc/passwd; \
    printf 'root:x:0:\nnogroup:x:65534:\n' > /out/etc/group; \
    printf 'hosts: files dns\n' > /out/etc/nsswitch.conf; \
    printf '/usr/lib/x86_64-linux-gnu\n' > /out/etc/ld.so.conf; \
    ldconfig -r /out; \
    chroot /out /usr/local/bin/flightplan --version; \
    chroot /out "$bin/pg_dump" --version

FROM scratch
ARG PG_MAJOR=17
COPY --from=root /out/ /
ENV PATH=/usr/local/bin:/usr/lib/postgresql/${PG_MAJOR}/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="flightplan" \
      org.opencontainers.image.description="A production deployment runbook as one GitHub Action"
# GitHub runs container actions as the image's default user and documents that it must be
# root (no USER instruction): the workspace and file-command mounts belong to the runner.
# Outside Actions, run it unprivileged: docker run --user 65532:65532 …
WORKDIR /github/workspace
ENTRYPOINT ["/usr/local/bin/flightplan"]
