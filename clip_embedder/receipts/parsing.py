"""What the extractors share: reading dates (day first, as Malaysian and Korean receipts print them) and amounts,
and the keyword sets of receipts (rows of lines: `clip_embedder.models.ocr.line_rows`)."""
from __future__ import annotations

import re
from datetime import date, datetime

#: date-like spans: 25/12/2018, 25-12-18, 2018-12-25, 25 Dec 2018, 25-DEC-2018, 2024년 3월 5일, and a date OCR glued
#: to the time after it ("25/12/20188:13:39PM")
DATE_SPAN = re.compile(
    r"\b\d{1,2}\s*[/\-.]\s*\d{1,2}\s*[/\-.]\s*(?:\d{4}(?=\d{1,2}:\d{2})|\d{2,4}\b)"
    r"|\b\d{4}\s*[/\-.]\s*\d{1,2}\s*[/\-.]\s*\d{1,2}\b"
    r"|\b\d{1,2}[\s\-/]*(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*[\s\-/,]*\d{2,4}\b"
    r"|\d{4}\s*년\s*\d{1,2}\s*월\s*\d{1,2}\s*일", re.I)
TIME_SPAN = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?\s*(AM|PM)?\b", re.I)
#: an amount as printed on a receipt: 9.00, 1,234.50, RM 9.00, ₩12,500 (no year-like integers)
AMOUNT = re.compile(r"(?<![\d.])(?:RM|MYR|\$|₩|€|£)?\s*-?\d{1,3}(?:[,\s]\d{3})*(?:\.\d{2})(?![\d.])|(?<![\d,.])"
                    r"\d{1,3}(?:,\d{3})+(?=\s*원|\s*$)")
COMPANY_WORDS = ("SDN BHD", "SDN. BHD", "BHD", "ENTERPRISE", "TRADING", "S/B", "PLT", "RESTAURANT", "RESTORAN",
                 "STORE", "MART", "HARDWARE", "BOOK", "SUPERMARKET", "STATIONERY", "BAKERY", "CAFE", "(M)", "SHOP",
                 "MARKETING", "INDUSTRIES", "HOLDINGS", "CORPORATION", "LTD", "PHARMACY", "주식회사", "(주)")
ADDRESS_WORDS = ("JALAN", "JLN", "TAMAN", "LOT", "NO.", "NO ", "LORONG", "KAMPUNG", "BATU", "SELANGOR", "JOHOR",
                 "KUALA LUMPUR", "PERAK", "PUCHONG", "SHAH ALAM", "PETALING", "KLANG", "SEKSYEN", "BANDAR", "PERSIARAN",
                 "BLOCK", "BLK", "ROAD", "STREET", "AVENUE", "MALAYSIA", "시", "구", "로", "길", "동")
TOTAL_WORDS = ("ROUNDED TOTAL", "ROUND TOTAL", "ROUNDING TOTAL", "GRAND TOTAL", "NETT TOTAL", "NET TOTAL",
               "TOTAL AMOUNT", "AMOUNT DUE", "TOTAL PAYABLE", "TOTAL SALES", "TOTAL", "합계", "총액", "결제금액")
NOT_TOTAL_WORDS = ("SUBTOTAL", "SUB TOTAL", "SUB-TOTAL", "TOTAL QTY", "TOTAL QUANTITY", "TOTAL ITEM", "TOTAL DISC",
                   "TOTAL SAVING", "TOTAL GST", "TOTAL TAX", "TOTAL EXCL", "TOTAL INCL. GST 0")
STOP_ADDRESS = ("TEL", "FAX", "GST", "INVOICE", "RECEIPT", "DATE", "CASHIER", "PHONE", "EMAIL", "CO.REG", "CO REG",
                "REG NO", "COMPANY NO", "BILL", "TAX", "H/P", "WEBSITE", "DOC", "TABLE", "전화")
PAYMENT_WORDS = {"CASH": "cash", "VISA": "card", "MASTER": "card", "CREDIT": "card", "DEBIT": "card", "CARD": "card",
                 "현금": "cash", "카드": "card"}


def normalise(text: str) -> str:
    """Upper case, white space collapsed (SROIE's comparison for merchant and address)."""
    return " ".join(text.upper().split())


def parse_date(text: str, *, today: date | None = None) -> date | None:
    """The first calendar date printed in `text` (day before month unless the year comes first or day first is
    impossible; Korean "2024년 3월 5일"), not after `today`; None when there is none.

    Uses `dateparser` (DATE_ORDER DMY) on each date-like span of `DATE_SPAN`.
    """
    import dateparser  # noqa: PLC0415

    today = today or date.today()
    for m in DATE_SPAN.finditer(text):
        span = m.group(0)
        k = re.match(r"(\d{4})\s*년\s*(\d{1,2})\s*월\s*(\d{1,2})\s*일", span)
        if k:
            span = f"{k.group(1)}-{k.group(2)}-{k.group(3)}"
        # day first (Malaysia, Europe); month first only when day first is no date ("12/13/2016")
        for order in (("YMD",) if re.match(r"\d{4}", span.strip()) else ("DMY", "MDY")):
            parsed = dateparser.parse(re.sub(r"\s+", " ", span), languages=["en"], settings={
                "DATE_ORDER": order, "REQUIRE_PARTS": ["day", "month", "year"], "PREFER_DAY_OF_MONTH": "first"})
            if parsed is not None and parsed.date() <= today and parsed.year >= 1990:
                return parsed.date()
    return None


def parse_time(text: str) -> str | None:
    """The first time of day in `text` as HH:MM[:SS] (24 h), or None."""
    m = TIME_SPAN.search(text)
    if m is None:
        return None
    hour, minute, second, half = int(m.group(1)), m.group(2), m.group(3), (m.group(4) or "").upper()
    hour = hour % 12 + (12 if half == "PM" else 0) if half else hour
    return f"{hour:02d}:{minute}" + (f":{second}" if second else "")


def amounts(text: str) -> list[float]:
    """Every amount printed in `text`, left to right (`price-parser` reads each span: "1,234.50" → 1234.5)."""
    from price_parser import Price  # noqa: PLC0415

    out = []
    for m in AMOUNT.finditer(text):
        value = Price.fromstring(m.group(0).replace(" ", "")).amount_float
        if value is not None:
            out.append(round(float(value), 2))
    return out


def parse_amount(text: str) -> float | None:
    """The amount a key field or a cell holds: its first printed amount ("RM 9.00", "$8.60"), else the plain number
    ("9", "170.5"); None when there is none."""
    found = amounts(text)
    if found:
        return found[0]
    return round(float(text), 2) if re.fullmatch(r"\s*\d+(\.\d+)?\s*", text) else None


#: a number as a won amount is printed: 12,500 (OCR reads the comma as a dot at times: 3.055), 900, 3
WON_NUMBER = re.compile(r"(?<![\d,.])\d{1,3}(?:[,.]\d{3})+(?![\d,.])|(?<![\d,.])\d+(?![\d,.])")
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def won_amounts(text: str) -> list[float]:
    """Every number in `text` read as whole won (KRW has no minor unit, so "3.055" is OCR's 3,055), left to right."""
    return [float(re.sub(r"[,.]", "", m.group(0))) for m in WON_NUMBER.finditer(text)]


def item_numbers(numbers: list[float]) -> tuple[float | None, float | None, float | None]:
    """(quantity, unit price, amount) from the numbers of an item row, left to right: the last is the amount; among
    the two before it, a unit price and a whole quantity (≤ 99) whose product is the amount, in either order; two
    numbers: the quantity is 1 when both are equal, the ratio when the amount is a whole multiple of the price."""
    if not numbers:
        return None, None, None
    amount = numbers[-1]
    if len(numbers) >= 3:
        x, y = numbers[-3], numbers[-2]
        for qty, price in ((y, x), (x, y)):
            if qty == int(qty) and 1 <= qty <= 99 and abs(qty * price - amount) <= 0.01 * max(abs(amount), 1):
                return qty, price, amount
    if len(numbers) >= 2:
        price = numbers[-2]
        if price > 0:
            ratio = amount / price
            if abs(ratio - round(ratio)) < 1e-6 and 1 <= round(ratio) <= 99:
                return float(round(ratio)), price, amount
        return None, price, amount
    return None, None, amount


def has_any(text: str, words: tuple[str, ...]) -> bool:
    up = text.upper()
    return any(w in up for w in words)


def total_rank(text: str) -> int:
    """How strongly a line says "the total": the index of its first keyword in `TOTAL_WORDS` from the end (higher is
    stronger: "ROUNDED TOTAL" beats "TOTAL"), -1 when it has none or is a subtotal / quantity / tax line. Tesseract's
    common misreading of 합계 (합겨, 합게) counts as 합계."""
    up = re.sub(r"합\s*[겨게개]", "합계", normalise(text))
    if has_any(up, NOT_TOTAL_WORDS):
        return -1
    for i, w in enumerate(TOTAL_WORDS):
        if w in up:
            return len(TOTAL_WORDS) - i
    return -1


def iso(d: date | datetime | None) -> str | None:
    return d.isoformat()[:10] if d is not None else None
