"""The ledger's reads (receipts listed and summed per day, month, merchant or category, per currency) and its
category rules (migration 0006)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from psycopg.rows import class_row

from clip_embedder.db.common import Repository
from clip_embedder.db.records import Category, LedgerGroup, LedgerRow

GroupBy = Literal["day", "month", "merchant", "category"]
#: the SQL of each grouping key (a fixed set: never user text spliced into SQL)
_GROUP_KEY: dict[str, str] = {"day": "to_char(date, 'YYYY-MM-DD')", "month": "to_char(date, 'YYYY-MM')",
                              "merchant": "merchant", "category": "category"}


@dataclass(frozen=True)
class LedgerFilter:
    """Which receipts a ledger query covers: dates within [date_from, date_to] (inclusive; a receipt without a date
    is left out once either is given), a merchant holding `merchant` (case-insensitive), one category."""

    date_from: date | None = None
    date_to: date | None = None
    merchant: str | None = None
    category: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause and its parameters."""
        parts: list[str] = ["true"]
        args: dict[str, Any] = {}
        if self.date_from:
            parts.append("date >= %(date_from)s")
            args["date_from"] = self.date_from
        if self.date_to:
            parts.append("date <= %(date_to)s")
            args["date_to"] = self.date_to
        if self.merchant:
            parts.append("merchant ILIKE %(merchant)s")
            args["merchant"] = "%" + self.merchant.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if self.category:
            parts.append("category = %(category)s")
            args["category"] = self.category
        return " AND ".join(parts), args


class LedgerRepository(Repository):
    """Reads over `receipts`; the `categories` rules."""

    def rows(self, where: LedgerFilter, *, limit: int = 10_000) -> list[LedgerRow]:
        """The receipts `where` covers, newest first (those without a date last)."""
        clause, args = where.where()
        with self.conn() as c, c.cursor(row_factory=class_row(LedgerRow)) as cur:
            return cur.execute(
                "SELECT id, date, time, merchant, category, total::float8 AS total, tax::float8 AS tax, "
                "trim(currency) AS currency, payment_method, needs_review, duplicate_of, file_name FROM receipts "
                f"WHERE {clause} ORDER BY date DESC NULLS LAST, id DESC LIMIT %(limit)s",
                {**args, "limit": limit}).fetchall()

    def groups(self, where: LedgerFilter, group_by: GroupBy) -> list[LedgerGroup]:
        """Receipt counts and summed totals per `group_by` key and currency (never summed across currencies),
        in key order."""
        key = _GROUP_KEY[group_by]
        clause, args = where.where()
        with self.conn() as c, c.cursor(row_factory=class_row(LedgerGroup)) as cur:
            return cur.execute(
                f"SELECT {key} AS key, trim(currency) AS currency, count(*)::int AS receipts, "
                f"coalesce(sum(total), 0)::float8 AS total FROM receipts WHERE {clause} "
                "GROUP BY 1, 2 ORDER BY 1 NULLS LAST, 2", args).fetchall()

    def totals(self, where: LedgerFilter) -> list[LedgerGroup]:
        """Receipt counts and summed totals per currency (`key` None)."""
        clause, args = where.where()
        with self.conn() as c, c.cursor(row_factory=class_row(LedgerGroup)) as cur:
            return cur.execute(
                "SELECT NULL::text AS key, trim(currency) AS currency, count(*)::int AS receipts, "
                f"coalesce(sum(total), 0)::float8 AS total FROM receipts WHERE {clause} GROUP BY 2 ORDER BY 2",
                args).fetchall()

    def categories(self) -> list[Category]:
        """The category rules, in the order they are tried."""
        with self.conn() as c, c.cursor(row_factory=class_row(Category)) as cur:
            return cur.execute("SELECT name, keywords, position FROM categories ORDER BY position, name").fetchall()

    def put_category(self, category: Category) -> bool:
        """Create or replace a category's rule. Returns True when it is new."""
        with self.conn() as c:
            row = c.execute("INSERT INTO categories (name, keywords, position) VALUES (%s, %s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET keywords = EXCLUDED.keywords, "
                            "position = EXCLUDED.position RETURNING (xmax = 0) AS created",
                            (category.name, category.keywords, category.position)).fetchone()
        return bool(row and row["created"])

    def delete_category(self, name: str) -> bool:
        """Delete a category's rule (its receipts keep the name until re-filed). False: no such category."""
        with self.conn() as c:
            return c.execute("DELETE FROM categories WHERE name = %s", (name,)).rowcount > 0

    def filed_by_rule(self) -> list[tuple[int, str | None, list[str], str | None]]:
        """(receipt id, merchant, item names, category) of every receipt the rules filed (to re-file them after
        the rules change)."""
        with self.conn() as c:
            rows = c.execute(
                "SELECT r.id, r.merchant, r.category, coalesce(array_agg(i.name ORDER BY i.position) FILTER "
                "(WHERE i.name IS NOT NULL), '{}') AS items FROM receipts r LEFT JOIN receipt_items i "
                "ON i.receipt_id = r.id WHERE r.category_source = 'rule' GROUP BY r.id").fetchall()
        return [(r["id"], r["merchant"], list(r["items"]), r["category"]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Receipts in the ledger and those needing review."""
        with self.conn() as c:
            row = c.execute("SELECT count(*) AS n, count(*) FILTER (WHERE needs_review) AS r FROM receipts").fetchone()
        assert row is not None
        return {"receipts": row["n"], "receipts_to_review": row["r"]}
