"""The ledger's rules that need no database: categories by keyword, the filter's SQL, the CSV's formula guard, the
correction body."""
from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from api.ledger_schemas import ReceiptCorrection
from api.routes.ledger import _cell
from clip_embedder.db.ledger import LedgerFilter
from clip_embedder.db.records import Category
from clip_embedder.receipts.ledger import categorise

RULES = [Category("groceries", ["MART", "MILK", "마트"], 1), Category("dining", ["RESTAURANT", "CAFE"], 2),
         Category("stationery", ["BOOK"], 6), Category("books", ["BOOK"], 0)]


@pytest.mark.parametrize(("merchant", "items", "expected"), [
    ("GERBANG ALAF RESTAURANTS SDN BHD", [], "dining"),          # a plural starts with the keyword
    ("GerbangAlafRestaurantsSdnBhd", [], "dining"),              # a long keyword inside OCR's glued words
    ("BOOKTA.K(TAMANDAYA)SDNBHD", [], "books"),                  # OCR's glued words; the earlier rule wins a tie
    ("EBOOK STORE", [], "other"),                                # inside a word: no
    ("SMART TRADING", [], "other"),                              # "MART" inside "SMART": no
    ("이마트 성수점", ["우유"], "groceries"),                        # Hangul: inside words
    ("CAFE MART", ["FRESH MILK", "MILK 1L"], "groceries"),       # merchant hits count 2, items 1 each: 2+2 > 2
    (None, [], "other"),
])
def test_categorise(merchant, items, expected):
    assert categorise(merchant, items, RULES) == expected


def test_ledger_filter_escapes_like_patterns_and_binds_every_value():
    clause, args = LedgerFilter(date(2024, 1, 1), date(2024, 1, 31), "50%_off\\", "dining").where()
    assert clause == ("true AND date >= %(date_from)s AND date <= %(date_to)s AND merchant ILIKE %(merchant)s "
                      "AND category = %(category)s")
    assert args["merchant"] == "%50\\%\\_off\\\\%"
    assert LedgerFilter().where() == ("true", {})


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    assert [_cell(v) for v in ("=HYPERLINK(1)", "+1", "-cmd", "@SUM", "SHOP", None, -5.0)] == \
        ["'=HYPERLINK(1)", "'+1", "'-cmd", "'@SUM", "SHOP", "", -5.0]


def test_correction_body_keeps_only_what_was_sent():
    body = ReceiptCorrection.model_validate({"total": 9, "date": "2018-12-25", "currency": "myr", "merchant": None})
    assert body.changes() == {"total": 9.0, "date": "2018-12-25", "currency": "MYR", "merchant": None}
    for bad in ({"totl": 1}, {"date": "25/12/2018"}, {"currency": "ringgit"}, {"time": "8pm"}):
        with pytest.raises(ValidationError):
            ReceiptCorrection.model_validate(bad)
