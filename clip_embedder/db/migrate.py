"""Versioned schema migrations (`clip_embedder/db/migrations/NNNN_name.sql`) and procrastinate's queue schema,
applied once under an advisory lock by the first process that opens the database."""
from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x636C6970  # pg_advisory_lock key: "clip"


def migrations() -> list[tuple[int, str, str]]:
    """The project's schema migrations: [(version, name, SQL)] in version order."""
    out = []
    for f in resources.files("clip_embedder.db.migrations").iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(url: str) -> list[str]:
    """Apply procrastinate's queue schema when absent, then the pending migrations, each in its own
    transaction, under a PostgreSQL advisory lock so concurrent starts apply each once.

    Returns:
        The names of the migrations applied now (empty when the database was current).
    """
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            # the queue's tables first: a migration may index them
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:  # type: ignore[index]
                from procrastinate.schema import SchemaManager  # noqa: PLC0415

                with conn.transaction():
                    conn.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
                applied.append("procrastinate schema")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(f"{version:04d}_{name}")
                log.info("database migration %04d_%s applied", version, name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
