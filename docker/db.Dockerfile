# PostgreSQL 15 with pgvector, from Debian's packages (postgresql-15-pgvector): no registry image needed.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-15-pgvector \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p "$PGDATA" /run/postgresql && chown -R postgres:postgres "$PGDATA" /run/postgresql
COPY docker/db-entrypoint.sh /usr/local/bin/db-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/db-entrypoint.sh"]
