#!/usr/bin/env bash
# A database on first start (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, the vector extension), then the
# server on BIND_HOST:DB_PORT in the foreground.
set -euo pipefail
: "${POSTGRES_USER:=search}" "${POSTGRES_PASSWORD:=search}" "${POSTGRES_DB:=search}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp); echo "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  [ "$POSTGRES_DB" = "postgres" ] || createdb -h /run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
  psql -h /run/postgresql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -qc "CREATE EXTENSION IF NOT EXISTS vector"
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "database $POSTGRES_DB created"
fi
exec postgres -D "$PGDATA" -c listen_addresses="${BIND_HOST:-0.0.0.0}" -p "${DB_PORT:-5432}" \
  -k /run/postgresql "$@"
