"""Receipt parsing that needs no data: dates, times, amounts, total keywords, rows, the checks and the scoring."""
from __future__ import annotations

from datetime import date

from clip_embedder.models.ocr import OcrLine, line_rows
from clip_embedder.receipts.parsing import amounts, parse_amount, parse_date, parse_time, total_rank
from clip_embedder.receipts.records import Receipt, ReceiptItem
from clip_embedder.receipts.rules import RulesExtractor, check
from clip_embedder.receipts.sroie import Score, field_right

TODAY = date(2026, 11, 30)


def test_dates_day_first_year_first_words_korean_and_not_future():
    assert parse_date("DATE: 25/12/2018 8:13:39 PM", today=TODAY) == date(2018, 12, 25)
    assert parse_date("05-03-2024", today=TODAY) == date(2024, 3, 5)  # day first
    assert parse_date("12/13/2016", today=TODAY) == date(2016, 12, 13)  # month first only when day first is no date
    assert parse_date("2018-01-19 10:01", today=TODAY) == date(2018, 1, 19)
    assert parse_date("Date 25 Dec 2018", today=TODAY) == date(2018, 12, 25)
    assert parse_date("2024년 3월 5일", today=TODAY) == date(2024, 3, 5)
    assert parse_date("25/12/20188:13:39PM", today=TODAY) == date(2018, 12, 25)  # OCR glued the time to it
    assert parse_date("31/12/2030", today=TODAY) is None and parse_date("TOTAL 9.00", today=TODAY) is None


def test_times_amounts_and_total_keywords():
    assert parse_time("25/12/2018 8:13:39 PM") == "20:13:39" and parse_time("14:05") == "14:05"
    assert amounts("ROUND D TOTAL (RM): 9.00") == [9.0] and amounts("1,234.50 RM 12.00") == [1234.5, 12.0]
    assert amounts("합계 12,500") == [12500.0] and amounts("TEL 03-1234 5678") == []
    assert parse_amount("$8.60") == 8.6 and parse_amount("170") == 170.0 and parse_amount("n/a") is None
    assert total_rank("ROUNDED TOTAL") > total_rank("TOTAL") > -1
    assert total_rank("SUBTOTAL") == total_rank("TOTAL QTY: 3") == total_rank("CASH") == -1


def test_rules_on_a_small_receipt_and_rows():
    lines = [OcrLine("KEDAI BUKU SDN BHD", 1, (50, 10, 400, 40)), OcrLine("NO 5, JALAN SAGU 18,", 1, (60, 50, 380, 70)),
             OcrLine("81100 JOHOR BAHRU", 1, (60, 75, 380, 95)), OcrLine("TEL: 07-1234567", 1, (60, 100, 300, 120)),
             OcrLine("DATE: 25/12/2018", 1, (20, 150, 300, 170)), OcrLine("PENCIL 2B", 1, (20, 200, 200, 220)),
             OcrLine("3.00", 1, (400, 200, 440, 220)), OcrLine("ERASER", 1, (20, 230, 200, 250)),
             OcrLine("6.00", 1, (400, 230, 440, 250)), OcrLine("TOTAL (RM):", 1, (200, 280, 300, 300)),
             OcrLine("9.00", 1, (400, 280, 440, 300)), OcrLine("CASH", 1, (200, 310, 300, 330)),
             OcrLine("10.00", 1, (400, 310, 440, 330))]
    assert line_rows(lines)[5] == [5, 6]
    r = RulesExtractor().extract(lines, today=TODAY)
    assert (r.merchant, r.date, r.total) == ("KEDAI BUKU SDN BHD", "2018-12-25", 9.0)
    assert r.address == "NO 5, JALAN SAGU 18, 81100 JOHOR BAHRU"
    assert [(i.name, i.amount) for i in r.items] == [("PENCIL", 3.0), ("ERASER", 6.0)] and not r.needs_review
    assert r.payment_method == "cash" and [ln.field for ln in r.lines][:2] == ["merchant", "address"]


def test_checks_flag_instead_of_failing():
    r = check(Receipt(total=10.0, date="2031-01-01", items=[ReceiptItem(name="a", amount=3.0)], tax=12.0,
                      currency="XXQ"), today=TODAY)
    assert r.needs_review and len(r.review_reasons) == 4, r.review_reasons
    assert check(Receipt(total=9.0, date="2018-12-25", currency="MYR"), today=TODAY).needs_review is False


def test_sroie_scoring():
    assert field_right("merchant", "book ta  .k sdn bhd", "BOOK TA .K SDN BHD")
    assert field_right("date", "2018-12-25", "25/12/2018") and field_right("total", 9.0, "9.00")
    assert not field_right("total", 9.0, "19.00") and not field_right("address", None, "X")
    s = Score()
    s.add(Receipt(merchant="A", date="2018-12-25", total=9.0), {"merchant": "A", "address": "B", "date": "25/12/2018",
                                                               "total": "8.00"})
    got = s.summary()
    assert (got["precision"], got["recall"]) == (0.6667, 0.5) and got["per_field"]["address"]["recall"] == 0.0
