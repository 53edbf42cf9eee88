# Warren broker image: RabbitMQ's image contract in a small runtime.
#   docker build -t warren .
#   docker run -p 5672:5672 -p 15672:15672 -p 15692:15692 warren
# As in RabbitMQ's official image, guest/guest may connect from outside the
# container, and RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS /
# RABBITMQ_DEFAULT_VHOST create the first user and vhost.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p warren -p warrenctl --bin warren --bin warrenctl \
 && strip target/release/warren target/release/warrenctl

# debian-slim rather than distroless: container health checks run through
# /bin/sh, which distroless images do not have.
FROM debian:bookworm-slim
RUN groupadd --system --gid 999 rabbitmq \
 && useradd --system --uid 999 --gid rabbitmq --home-dir /var/lib/rabbitmq --no-create-home rabbitmq \
 && mkdir -p /var/lib/rabbitmq \
 && chown rabbitmq:rabbitmq /var/lib/rabbitmq
COPY --from=build /src/target/release/warren /usr/local/bin/warren
COPY --from=build /src/target/release/warrenctl /usr/local/bin/warrenctl
# Health checks and seed scripts written for RabbitMQ's image call these
# (`rabbitmq-diagnostics -q ping`, `rabbitmqctl add_user …`); warrenctl
# answers to both names over the management API on 127.0.0.1:15672.
RUN ln -s warrenctl /usr/local/bin/rabbitmqctl \
 && ln -s warrenctl /usr/local/bin/rabbitmq-diagnostics
ENV WARREN_DATA_DIR=/var/lib/rabbitmq \
    WARREN_AUTH__LOOPBACK_USERS=[]
USER rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 5672 5671 15672 15692
# `warren healthcheck` exits 0 once the broker answers AMQP on 127.0.0.1:5672.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --start-interval=100ms \
  CMD warren healthcheck || exit 1
ENTRYPOINT ["warren"]
