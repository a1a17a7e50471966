"""Korean receipts through the rules, from text lines as Tesseract (kor+eng, one column: --psm 4) reads a till
receipt: whole-won amounts, 2-syllable item names, the 단가 / 수량 / 금액 columns, 합계, the three date forms."""
from __future__ import annotations

from datetime import date

import pytest

from clip_embedder.models.ocr import OcrLine
from clip_embedder.receipts.parsing import item_numbers, won_amounts
from clip_embedder.receipts.rules import RulesExtractor

TODAY = date(2026, 1, 1)


def lines(*texts: str) -> list[OcrLine]:
    return [OcrLine(t, 0.9, (10.0, 40.0 * i, 500.0, 40.0 * i + 24)) for i, t in enumerate(texts)]


@pytest.mark.parametrize(("printed", "expected"), [
    ("2025년 03월 06일 08:16", ("2025-03-06", "08:16")),
    ("2024.04.11 19:04", ("2024-04-11", "19:04")),
    ("2024-12-01 09:30", ("2024-12-01", "09:30")),
])
def test_a_korean_till_receipt(printed, expected):
    r = RulesExtractor().extract(lines(
        "올리브영 명동점", "사업자번호 822-87-29262", "서울특별시 중구 명동길 53", "전화 02-456-9725", printed,
        "상품명 단가 수량 금액", "식빵 3,200 1 3.200", "사과 5,000 3 15,000", "생수 900 2 1,800",
        "아메리카노 4,500 4,500",
        "합계 24,500", "부가세 2.227", "카드 24,500"), today=TODAY)
    assert (r.merchant, r.date, r.time, r.total, r.currency) == ("올리브영 명동점", *expected, 24500.0, "KRW")
    assert r.address == "서울특별시 중구 명동길 53"
    assert [(it.name, it.quantity, it.unit_price, it.amount) for it in r.items] == [
        ("식빵", 1, 3200, 3200), ("사과", 3, 5000, 15000), ("생수", 2, 900, 1800), ("아메리카노", 1, 4500, 4500)]
    assert r.tax == 2227 and r.payment_method == "card" and not r.needs_review, r.review_reasons


def test_won_amounts_read_ocr_dots_as_thousands():
    assert won_amounts("부가세 3.055") == [3055.0]
    assert won_amounts("사과 5,000 3 15,000") == [5000.0, 3.0, 15000.0]
    assert won_amounts("합계 ₩12,500원") == [12500.0]


@pytest.mark.parametrize(("numbers", "expected"), [
    ([3200, 1, 3200], (1, 3200, 3200)),      # price, quantity, amount
    ([5000, 3, 15000], (3, 5000, 15000)),
    ([3, 5000, 15000], (3, 5000, 15000)),     # quantity first
    ([4500, 4500], (1, 4500, 4500)),          # quantity 1 not read
    ([2500, 5000], (2, 2500, 5000)),          # quantity 2 not read: the amount is a multiple of the price
    ([1.2, 8.6], (None, 1.2, 8.6)),           # not a multiple: a price and an amount
    ([9.0], (None, None, 9.0)),
])
def test_item_numbers(numbers, expected):
    assert item_numbers(numbers) == expected
