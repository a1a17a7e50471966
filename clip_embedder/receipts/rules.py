"""The rules extractor (`RECEIPT_EXTRACTOR=rules`, the baseline): keyword and pattern rules over a receipt's text
lines, with `dateparser` and `price-parser` reading what they find, then the consistency checks every extractor's
answer gets (`check`)."""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from clip_embedder.models.ocr import OcrLine, line_rows
from clip_embedder.receipts.parsing import (
    ADDRESS_WORDS,
    COMPANY_WORDS,
    HANGUL,
    PAYMENT_WORDS,
    STOP_ADDRESS,
    amounts,
    has_any,
    iso,
    item_numbers,
    normalise,
    parse_date,
    parse_time,
    total_rank,
    won_amounts,
)
from clip_embedder.receipts.records import Receipt, ReceiptItem, ReceiptLine

CURRENCY_MARKS = (("RM", "MYR"), ("MYR", "MYR"), ("₩", "KRW"), ("원", "KRW"), ("€", "EUR"), ("£", "GBP"),
                  ("S$", "SGD"), ("$", "USD"))


def _letters(text: str) -> float:
    return sum(c.isalpha() for c in text) / max(len(text), 1)


#: a Korean shop's branch: a Hangul word ending in 점 ("역삼점", "명동점")
BRANCH = re.compile(r"[\uac00-\ud7a3]+점(?![\uac00-\ud7a3])")
#: a registration line between a merchant and its address, skipped there ("사업자번호 123-45-67890")
REGISTRATION = re.compile(r"[\s(]*[\dA-Z]{4,}-[A-Z\d]+[)\s]*|.*사업자.*")
Amounts = Callable[[str], list[float]]


def find_merchant(lines: list[OcrLine], top: int) -> int | None:
    """The merchant's line among the first `top` lines: the first with a company word (SDN BHD, ENTERPRISE …) or a
    Korean branch name (…점), else the first mostly-letters line."""
    head = list(range(min(top, len(lines))))
    for i in head:
        if has_any(lines[i].text, COMPANY_WORDS) or BRANCH.search(lines[i].text):
            return i
    return next((i for i in head if len(lines[i].text) >= 4 and _letters(lines[i].text) >= 0.6), None)


def find_address(lines: list[OcrLine], start: int) -> list[int]:
    """The address lines after the merchant's: consecutive lines with an address word or a postcode, up to the first
    telephone / tax / invoice / date line (registration numbers in between are skipped)."""
    out: list[int] = []
    for i in range(start, min(start + 8, len(lines))):
        text = lines[i].text
        if has_any(text, STOP_ADDRESS) or parse_date(text):
            break
        if REGISTRATION.fullmatch(text.strip()):  # (123456-X), 사업자번호 …: a registration number
            continue
        if has_any(text, ADDRESS_WORDS) or re.search(r"\b\d{5}\b", text) or (out and _letters(text) > 0.5):
            out.append(i)
        elif out:
            break
    return out


def find_total(lines: list[OcrLine], row_of: list[list[int]], amounts: Amounts = amounts
               ) -> tuple[float | None, int | None]:
    """The total: the amount on the row (or, failing that, the next row) of the strongest total keyword; among equal
    keywords the last row wins (a "TOTAL" after the items, before "CASH" / "CHANGE")."""
    best: tuple[int, int, float, int] | None = None  # (rank, row index, amount, line index)
    for r, row in enumerate(row_of):
        text = " ".join(lines[i].text for i in row)
        rank = total_rank(text)
        if rank < 0:
            continue
        found = amounts(text)
        where = row[-1]
        if not found and r + 1 < len(row_of):
            found = amounts(" ".join(lines[i].text for i in row_of[r + 1]))
            where = row_of[r + 1][-1]
        if found and (best is None or (rank, r) > (best[0], best[1])):
            best = (rank, r, found[-1], where)
    return (best[2], best[3]) if best else (None, None)


def find_items(lines: list[OcrLine], row_of: list[list[int]], first: int, last: int,
               amounts: Amounts = amounts) -> list[ReceiptItem]:
    """Rows between the header (`first`) and the total row (`last`) that end with an amount and name something
    (two letters are a name in Hangul: 우유, 두부); quantity and unit price from the numbers before the amount
    (`item_numbers`) or a "2 PCS" / "2 X" mark."""
    items = []
    for row in row_of[first:last]:
        text = " ".join(lines[i].text for i in row)
        found = amounts(text)
        name = re.sub(r"[\d.,:*@xX]+", " ", text)
        name = " ".join(w for w in name.split() if len(w) > 1 and w.upper() not in ("RM", "PC", "PCS", "QTY"))
        if not found or _letters(name) < 0.5 or len(name) < (2 if HANGUL.search(name) else 3) or \
                total_rank(text) >= 0 or has_any(text, ("TAX", "GST", "CASH", "CHANGE", "ROUNDING", "SUBTOTAL",
                                                        "DISCOUNT", "부가세", "할인")):
            continue
        qty, price, amount = item_numbers(found)
        mark = re.search(r"\b(\d{1,3})\s*(?:PC|PCS|X|@)\b", text, re.I)
        if qty is None and mark:
            qty = float(mark.group(1))
        items.append(ReceiptItem(name=name, quantity=qty, unit_price=price, amount=amount))
    return items


def currency_of(text: str) -> str | None:
    """The currency a receipt's text names (RM, ₩, 원, €, …); a receipt in Korean without a mark is in won."""
    up = text.upper()
    found = next((code for mark, code in CURRENCY_MARKS if mark in up), None)
    if found is None and len(HANGUL.findall(text)) >= 4:
        return "KRW"
    return found


def amount_reader(currency: str | None) -> Amounts:
    """How amounts are read on a receipt in `currency`: whole won for KRW (`won_amounts`), else `amounts`."""
    return won_amounts if currency == "KRW" else amounts


def row_amount(lines: list[OcrLine], row_of: list[list[int]], words: tuple[str, ...],
               amounts: Amounts = amounts) -> float | None:
    """The last amount on the first row holding one of `words` and an amount (a subtotal, a tax), or None."""
    for row in row_of:
        text = " ".join(lines[i].text for i in row)
        found = amounts(text)
        if found and has_any(text, words):
            return found[-1]
    return None


def find_date(lines: list[OcrLine], today: date | None) -> int | None:
    """The date's line: the first with the word DATE and a date, else the first with a date."""
    dated = [i for i, ln in enumerate(lines) if parse_date(ln.text, today=today)]
    return next((i for i in dated if "DATE" in lines[i].text.upper()), dated[0] if dated else None)


class RulesExtractor:
    """Keyword and pattern rules: merchant, address, date, time, total, subtotal, tax, items, currency, payment."""

    name = "rules"
    version = "1"

    def extract(self, lines: list[OcrLine], *, today: date | None = None) -> Receipt:
        """The fields of a receipt from its text lines (boxes in the receipt image's pixels), checked (`check`)."""
        lines = sorted(lines, key=lambda ln: (ln.bbox[1], ln.bbox[0]))
        row_of = line_rows(lines)
        merchant_i = find_merchant(lines, top=max(6, len(lines) // 4))
        address = find_address(lines, merchant_i + 1) if merchant_i is not None else []
        date_i = find_date(lines, today)
        all_text = "\n".join(ln.text for ln in lines)
        currency = currency_of(all_text)
        read = amount_reader(currency)
        total, total_i = find_total(lines, row_of, read)
        fields: dict[int, str] = {a: "address" for a in address}
        for i, name in ((merchant_i, "merchant"), (date_i, "date"), (total_i, "total")):
            if i is not None:
                fields[i] = name
        total_row = next((r for r, row in enumerate(row_of) if total_i in row), len(row_of))
        start_row = next((r for r, row in enumerate(row_of) if date_i in row), 0) + 1
        receipt = Receipt(
            merchant=lines[merchant_i].text.strip() if merchant_i is not None else None,
            address=" ".join(lines[i].text.strip() for i in address) or None,
            date=iso(parse_date(lines[date_i].text, today=today)) if date_i is not None else None,
            time=parse_time(lines[date_i].text if date_i is not None else all_text),
            items=find_items(lines, row_of, start_row, total_row, read), total=total,
            subtotal=row_amount(lines, row_of, ("SUBTOTAL", "SUB TOTAL", "SUB-TOTAL", "소계"), read),
            tax=row_amount(lines, row_of, ("GST", "SST", "TAX", "부가세"), read), currency=currency,
            payment_method=next((m for w, m in PAYMENT_WORDS.items() if w in normalise(all_text)), None),
            lines=[ReceiptLine(text=ln.text, bbox_xyxy=ln.bbox, field=fields.get(i)) for i, ln in enumerate(lines)],
            confidence={k: 0.5 for k in ("merchant", "address", "date", "total")}, extractor=self.name)
        return check(receipt, today=today)


def check(receipt: Receipt, *, today: date | None = None, tolerance: float = 0.05) -> Receipt:
    """The consistency checks: a total found, items summing to the subtotal or total, tax below the total, a date
    not in the future, a currency babel knows. A failure flags the receipt `needs_review` with the reason; nothing
    is thrown away."""
    from babel.numbers import get_currency_name  # noqa: PLC0415

    reasons = []
    if receipt.total is None:
        reasons.append("no total found")
    if receipt.date is None:
        reasons.append("no date found")
    elif receipt.date > (today or date.today()).isoformat():
        reasons.append(f"the date {receipt.date} is in the future")
    sums = [it.amount for it in receipt.items if it.amount is not None]
    if sums and receipt.total is not None:
        target = receipt.subtotal if receipt.subtotal is not None else receipt.total
        if abs(sum(sums) - target) > max(tolerance, 0.01 * target) and abs(sum(sums) - receipt.total) > max(
                tolerance, 0.01 * receipt.total):
            which = "subtotal" if receipt.subtotal is not None else "total"
            reasons.append(f"the items sum to {sum(sums):.2f}, not the {which} {target:.2f}")
    if receipt.tax is not None and receipt.total is not None and receipt.tax > receipt.total:
        reasons.append(f"the tax {receipt.tax:.2f} exceeds the total {receipt.total:.2f}")
    if receipt.currency is not None and get_currency_name(receipt.currency, locale="en") == receipt.currency:
        reasons.append(f"unknown currency {receipt.currency}")
    receipt.needs_review, receipt.review_reasons = bool(reasons), reasons
    return receipt
