# Images of the operator and the tenant runtime (for kind or a real cluster; not
# built on the CI machine, which has no Docker engine):
#   docker build --target operator -t ghcr.io/truffles-kz/truffles-operator:0.1.0 .
#   docker build --target bot      -t ghcr.io/truffles-kz/truffles-bot:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p truffles-operator -p truffles-bot

FROM debian:bookworm-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The chart and the operator's Deployments run as a non-root user.
USER 65532:65532

FROM base AS operator
COPY --from=build /src/target/release/truffles-operator /usr/local/bin/
ENTRYPOINT ["truffles-operator"]

# The operator's Deployments pass `serve` (and the CronJobs their subcommand).
FROM base AS bot
COPY --from=build /src/target/release/truffles-bot /usr/local/bin/
ENTRYPOINT ["truffles-bot"]
