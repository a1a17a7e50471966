# PostgreSQL 17 with pgvector, from Debian trixie's packages (postgresql-17-pgvector; bookworm has no pgvector):
# no registry image needed. DB_BASE_IMAGE: debian:trixie-slim, or scripts/compose_base_image.sh trixie.
ARG DB_BASE_IMAGE=debian:trixie-slim
FROM ${DB_BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/17/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-17 postgresql-17-pgvector \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p "$PGDATA" /run/postgresql && chown -R postgres:postgres "$PGDATA" /run/postgresql
COPY docker/db-entrypoint.sh /usr/local/bin/db-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/db-entrypoint.sh"]
