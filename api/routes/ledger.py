"""The ledger: receipts listed and summed (per day, month, merchant or category; per currency), as JSON or CSV; the
category rules receipts are filed by."""
from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from api.deps import LedgerDep, StoreDep, WriteKey
from api.ledger_schemas import (
    GROUP_BY_DOC,
    NO_NUL,
    CategoriesAnswer,
    CategoryPublic,
    CategoryRule,
    LedgerAnswer,
)
from api.schemas import ERRORS
from clip_embedder.db.ledger import GroupBy, LedgerFilter
from clip_embedder.db.records import Category
from clip_embedder.receipts.ledger import refile

router = APIRouter(prefix="/api", tags=["ledger"])
#: a leading character that makes a spreadsheet read a cell as a formula (OWASP "CSV injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def ledger_filter(date_from: Annotated[date | None, Query(alias="from", description="first day (YYYY-MM-DD)")] = None,
                  date_to: Annotated[date | None, Query(alias="to", description="last day, inclusive")] = None,
                  merchant: Annotated[str | None, Query(max_length=200, pattern=NO_NUL,
                                                        description="merchant holds this (case-insensitive)")] = None,
                  category: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None) -> LedgerFilter:
    if date_from and date_to and date_from > date_to:
        raise HTTPException(422, f"from={date_from} is after to={date_to}")
    return LedgerFilter(date_from, date_to, merchant or None, category or None)


FilterDep = Annotated[LedgerFilter, Depends(ledger_filter)]
GroupQuery = Annotated[GroupBy | None, Query(description=GROUP_BY_DOC)]


@router.get("/ledger", response_model=LedgerAnswer, responses=ERRORS)
def ledger(where: FilterDep, repo: LedgerDep, group_by: GroupQuery = None,
           limit: int = Query(1000, ge=1, le=10_000, description="receipts listed (the sums cover all)")):
    """The household ledger: the receipts the filters cover (newest first), their totals per currency and, with
    `group_by`, per day, month, merchant or category. A receipt without a date is left out once `from` or `to` is
    given."""
    return LedgerAnswer(receipts=repo.rows(where, limit=limit), totals=repo.totals(where), group_by=group_by,
                        groups=repo.groups(where, group_by) if group_by else [])


def _cell(v: object) -> object:
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return "" if v is None else v


@router.get("/ledger.csv", responses={**ERRORS, 200: {"content": {"text/csv": {}}}}, response_class=Response)
def ledger_csv(where: FilterDep, repo: LedgerDep, group_by: GroupQuery = None):
    """The ledger as CSV (UTF-8 with a byte-order mark, which spreadsheets need to read Hangul): one row per receipt,
    or with `group_by` one row per group and currency. Text that a spreadsheet would run as a formula is quoted
    with a leading apostrophe."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if group_by:
        w.writerow([group_by, "currency", "receipts", "total"])
        for g in repo.groups(where, group_by):
            w.writerow([_cell(g.key), _cell(g.currency), g.receipts, f"{g.total:.2f}"])
    else:
        cols = ["id", "date", "time", "merchant", "category", "total", "tax", "currency", "payment_method",
                "needs_review", "duplicate_of", "file_name"]
        w.writerow(cols)
        for r in repo.rows(where, limit=1_000_000):
            w.writerow([_cell(getattr(r, c)) for c in cols])
    name = f"ledger{'-by-' + group_by if group_by else ''}.csv"
    return Response("\ufeff" + buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _categories(repo, refiled: int | None = None) -> CategoriesAnswer:
    return CategoriesAnswer(categories=[CategoryPublic(name=c.name, keywords=c.keywords, position=c.position)
                                        for c in repo.categories()], refiled=refiled)


@router.get("/categories", response_model=CategoriesAnswer, responses=ERRORS)
def categories(repo: LedgerDep):
    """The category rules, in the order they are tried."""
    return _categories(repo)


CategoryName = Annotated[str, PathParam(min_length=1, max_length=100, pattern=r"^[^/\x00]+$")]


@router.put("/categories/{name}", response_model=CategoriesAnswer, responses=ERRORS, dependencies=[WriteKey])
def put_category(name: CategoryName, rule: CategoryRule, store: StoreDep):
    """Create or replace a category's rule; every receipt the rules filed is filed again (`refiled`: how many moved).
    Receipts filed by hand stay where they are."""
    keywords = sorted({k.strip().upper() for k in rule.keywords if k.strip()})
    store.ledger.put_category(Category(name.strip(), keywords, rule.position))
    return _categories(store.ledger, refile(store))


@router.delete("/categories/{name}", response_model=CategoriesAnswer, responses=ERRORS, dependencies=[WriteKey])
def delete_category(name: CategoryName, store: StoreDep):
    """Delete a category's rule; the receipts the rules filed under it are filed again."""
    if not store.ledger.delete_category(name):
        raise HTTPException(404, f"no category named {name!r}")
    return _categories(store.ledger, refile(store))
