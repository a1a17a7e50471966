"""Receipts in the ledger (migration 0006): write what an extractor read, read a receipt back with its items,
apply a user's corrections (each kept in `receipt_corrections` beside the extractor's value), delete."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from clip_embedder.db.common import Repository
from clip_embedder.db.records import CorrectionRecord, StoredReceipt
from clip_embedder.receipts.records import Receipt, ReceiptItem

#: the receipt fields that are columns of `receipts` (items live in `receipt_items`)
SCALAR_FIELDS = ("merchant", "address", "date", "time", "subtotal", "tax", "total", "currency", "payment_method")


def _number(v: Decimal | None) -> float | None:
    return None if v is None else float(v)


def _current(row: DictRow, items: list[DictRow]) -> Receipt:
    """A receipt's current values: its columns and items over the extractor's answer (lines, confidence)."""
    extracted = Receipt.model_validate(row["extraction"])
    values: dict[str, Any] = {f: row[f] for f in SCALAR_FIELDS}
    values["date"] = row["date"].isoformat() if row["date"] else None
    for f in ("subtotal", "tax", "total"):
        values[f] = _number(row[f])
    values["currency"] = row["currency"].strip() if row["currency"] else None
    return extracted.model_copy(update={
        **values, "needs_review": row["needs_review"], "review_reasons": list(row["review_reasons"]),
        "items": [ReceiptItem(name=it["name"], quantity=_number(it["quantity"]), unit_price=_number(
            it["unit_price"]), amount=_number(it["amount"])) for it in items]})


def _columns(receipt: Receipt) -> dict[str, Any]:
    out: dict[str, Any] = {f: getattr(receipt, f) for f in SCALAR_FIELDS}
    out["date"] = date.fromisoformat(receipt.date) if receipt.date else None
    return out


def _write_items(c: psycopg.Connection[DictRow], receipt_id: int, items: list[ReceiptItem]) -> None:
    c.execute("DELETE FROM receipt_items WHERE receipt_id = %s", (receipt_id,))
    with c.cursor() as cur:
        cur.executemany("INSERT INTO receipt_items (receipt_id, position, name, quantity, unit_price, amount) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        [(receipt_id, i, it.name, it.quantity, it.unit_price, it.amount) for i, it in enumerate(items)])


class ReceiptRepository(Repository):
    """The `receipts`, `receipt_items` and `receipt_corrections` tables."""

    def add(self, *, sha256: str, original: str, file_name: str, size: tuple[int, int], receipt: Receipt,
            extractor_version: str | None, category: str | None) -> tuple[int, bool]:
        """Write an extracted receipt (its fields, items, review flags and the extractor's whole answer) in one
        transaction. The same photo (sha256) twice is one receipt: the second write changes nothing.

        Returns:
            (receipt id, whether it was written now).
        """
        cols = _columns(receipt)
        with self.conn() as c:
            row = c.execute(
                "INSERT INTO receipts (sha256, original, file_name, width, height, merchant, address, date, time, "
                "subtotal, tax, total, currency, payment_method, category, needs_review, review_reasons, "
                "extractor, extractor_version, extraction) VALUES (%(sha256)s, %(original)s, %(file_name)s, "
                "%(width)s, %(height)s, %(merchant)s, %(address)s, %(date)s, %(time)s, %(subtotal)s, %(tax)s, "
                "%(total)s, %(currency)s, %(payment_method)s, %(category)s, %(needs_review)s, %(review_reasons)s, "
                "%(extractor)s, %(extractor_version)s, %(extraction)s) ON CONFLICT (sha256) DO NOTHING RETURNING id",
                {**cols, "sha256": sha256, "original": original, "file_name": file_name, "width": size[0],
                 "height": size[1], "category": category, "needs_review": receipt.needs_review,
                 "review_reasons": receipt.review_reasons, "extractor": receipt.extractor,
                 "extractor_version": extractor_version,
                 "extraction": Jsonb(receipt.model_dump(mode="json"))}).fetchone()
            if row is None:
                existing = c.execute("SELECT id FROM receipts WHERE sha256 = %s", (sha256,)).fetchone()
                assert existing is not None
                return int(existing["id"]), False
            _write_items(c, row["id"], receipt.items)
        return int(row["id"]), True

    def get(self, receipt_id: int) -> StoredReceipt | None:
        """A receipt with its current values and the extractor's answer, or None."""
        with self.conn() as c:
            row = c.execute("SELECT r.*, EXISTS (SELECT 1 FROM receipt_corrections x WHERE x.receipt_id = r.id) "
                            "AS corrected FROM receipts r WHERE r.id = %s", (receipt_id,)).fetchone()
            if row is None:
                return None
            items = c.execute("SELECT * FROM receipt_items WHERE receipt_id = %s ORDER BY position",
                              (receipt_id,)).fetchall()
        return StoredReceipt(id=row["id"], sha256=row["sha256"], file_name=row["file_name"], original=row["original"],
                             width=row["width"], height=row["height"], category=row["category"],
                             category_source=row["category_source"], duplicate_of=row["duplicate_of"],
                             extractor_version=row["extractor_version"], receipt=_current(row, items),
                             extracted=Receipt.model_validate(row["extraction"]), corrected=row["corrected"],
                             created_at=row["created_at"], updated_at=row["updated_at"])

    def ids_by_sha(self, sha256s: list[str]) -> dict[str, int]:
        """sha256 → receipt id, for those of `sha256s` already in the ledger."""
        if not sha256s:
            return {}
        with self.conn() as c:
            rows = c.execute("SELECT sha256, id FROM receipts WHERE sha256 = ANY(%s)", (list(sha256s),)).fetchall()
        return {r["sha256"]: int(r["id"]) for r in rows}

    def find_same(self, merchant: str | None, day: str | None, total: float | None, *, exclude: int) -> int | None:
        """The earliest other receipt with this merchant (case-insensitive), date and total — a possible duplicate —
        or None (also when any of the three is unknown)."""
        if not merchant or not day or total is None:
            return None
        with self.conn() as c:
            row = c.execute("SELECT id FROM receipts WHERE upper(merchant) = upper(%s) AND date = %s AND total = %s "
                            "AND id <> %s ORDER BY id LIMIT 1", (merchant, date.fromisoformat(day), total,
                                                                 exclude)).fetchone()
        return int(row["id"]) if row else None

    def set_review(self, receipt_id: int, *, duplicate_of: int | None, needs_review: bool, reasons: list[str]) -> None:
        """Set a receipt's review flags and the receipt it may duplicate."""
        with self.conn() as c:
            c.execute("UPDATE receipts SET duplicate_of = %s, needs_review = %s, review_reasons = %s WHERE id = %s",
                      (duplicate_of, needs_review, reasons, receipt_id))

    def correct(self, receipt_id: int, corrected: Receipt, fields: list[str], *, category: str | None,
                category_source: str) -> bool:
        """Apply a user's corrections: the `fields` of `corrected` (scalar fields, "items"; "category" for
        `category`) become the receipt's values, each change is written to the audit beside the extractor's value and
        the value before, and the review flags are `corrected`'s — one transaction, the row locked meanwhile.

        Returns:
            False when there is no such receipt.
        """
        with self.conn() as c:
            row = c.execute("SELECT * FROM receipts WHERE id = %s FOR UPDATE", (receipt_id,)).fetchone()
            if row is None:
                return False
            items = c.execute("SELECT * FROM receipt_items WHERE receipt_id = %s ORDER BY position",
                              (receipt_id,)).fetchall()
            before = _current(row, items).model_dump(mode="json") | {"category": row["category"]}
            extracted = row["extraction"] | {"category": None}
            after = corrected.model_dump(mode="json") | {"category": category}
            changed = [f for f in fields if before.get(f) != after.get(f)]
            for f in changed:
                c.execute("INSERT INTO receipt_corrections (receipt_id, field, extracted, before, after) "
                          "VALUES (%s, %s, %s, %s, %s)", (receipt_id, f, Jsonb(extracted.get(f)), Jsonb(before.get(f)),
                                                          Jsonb(after.get(f))))
            cols = _columns(corrected)
            c.execute("UPDATE receipts SET merchant = %(merchant)s, address = %(address)s, date = %(date)s, "
                      "time = %(time)s, subtotal = %(subtotal)s, tax = %(tax)s, total = %(total)s, "
                      "currency = %(currency)s, payment_method = %(payment_method)s, category = %(category)s, "
                      "category_source = %(source)s, needs_review = %(needs_review)s, review_reasons = %(reasons)s, "
                      "updated_at = now() WHERE id = %(id)s",
                      {**cols, "category": category, "source": category_source, "id": receipt_id,
                       "needs_review": corrected.needs_review, "reasons": corrected.review_reasons})
            if "items" in changed:
                _write_items(c, receipt_id, corrected.items)
        return True

    def corrections(self, receipt_id: int) -> list[CorrectionRecord]:
        """A receipt's corrections, oldest first."""
        with self.conn() as c:
            rows = c.execute("SELECT field, extracted, before, after, corrected_at FROM receipt_corrections "
                             "WHERE receipt_id = %s ORDER BY id", (receipt_id,)).fetchall()
        return [CorrectionRecord(**r) for r in rows]

    def delete(self, receipt_id: int) -> tuple[str, bool] | None:
        """Delete a receipt, its items and corrections. Returns (its original's key, whether no image or other
        receipt still uses that key — then the caller deletes the file), or None for no such receipt."""
        with self.conn() as c:
            row = c.execute("DELETE FROM receipts WHERE id = %s RETURNING original, sha256", (receipt_id,)).fetchone()
            if row is None:
                return None
            shared = c.execute("SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = %s OR path = %s) AS used",
                               (row["sha256"], row["original"])).fetchone()
        return row["original"], not (shared and shared["used"])

    def recategorise(self, assign: dict[int, str]) -> None:
        """File receipts under new categories (receipt id → category name), those a user filed left alone."""
        if not assign:
            return
        with self.conn() as c, c.cursor() as cur:
            cur.executemany("UPDATE receipts SET category = %s WHERE id = %s AND category_source = 'rule'",
                            [(name, rid) for rid, name in assign.items()])
