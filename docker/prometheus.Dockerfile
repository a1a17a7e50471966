# Prometheus from Debian's packages (the compose `monitoring` profile): no registry image needed.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /prometheus /prometheus-targets && chown nobody:nogroup /prometheus
COPY docker/prometheus/prometheus.yml /etc/prometheus/template.yml
USER nobody
EXPOSE 9090
# API_TARGET: where the API's /metrics is (127.0.0.1:8000 on the host network, api:8000 on compose's bridge)
ENTRYPOINT ["sh", "-c", "sed \"s/__API_TARGET__/${API_TARGET:-api:8000}/\" /etc/prometheus/template.yml > /tmp/prometheus.yml && exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/prometheus --web.listen-address=${BIND_HOST:-0.0.0.0}:${PROMETHEUS_PORT:-9090} \"$@\"", "prometheus"]
