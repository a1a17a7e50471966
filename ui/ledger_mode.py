"""The "ledger" mode: receipt photos uploaded (`POST /api/receipts`, followed until the workers have read them), the
household ledger filtered by dates, merchant and category, monthly totals as a chart, the CSV to download, and one
receipt beside its fields — each field's source line outlined on the photo — with a form to correct them
(`PATCH /api/receipts/{id}`: the extractor's values stay in the audit shown below)."""
from __future__ import annotations

import datetime as dt

import streamlit as st

from ui.add_photos import follow_batch
from ui.common import PHOTO_TYPES, Api, answer, draw_boxes, post_files, upload_mb

#: one colour per field (the caption under the photo says which)
FIELD_COLOURS = {"merchant": "#4363d8", "address": "#911eb4", "date": "#3cb44b", "total": "#e6194b"}
TEXT_FIELDS = ("merchant", "address", "time", "currency", "payment_method")
AMOUNT_FIELDS = ("subtotal", "tax", "total")


def _upload(api: Api, health: dict, key: str) -> None:
    files = st.file_uploader("Receipt photos to add to the ledger", accept_multiple_files=True, type=PHOTO_TYPES,
                             max_upload_size=upload_mb(health), key="receipt_files",
                             help=f"up to {upload_mb(health)} MB per photo; the same photo twice is one receipt")
    if not files or not st.button(f"Read {len(files)} receipts", type="primary"):
        return
    batch = post_files(api, "/api/receipts", files, key)
    if batch is None:
        return
    tasks = follow_batch(api, batch, wait=True) or []
    for t in tasks:
        if t["status"] == "failed":
            st.error(f"{t['file_name']}: {t['error'] or 'failed'}")
    read = [t for t in tasks if t.get("receipt_id")]
    if read:
        st.success(f"{len(read)} receipts in the ledger")
        st.query_params["receipt"] = str(read[-1]["receipt_id"])


def _filters(api: Api) -> dict:
    cats = api.get("/api/categories").json().get("categories", [])
    c1, c2, c3, c4 = st.columns(4)
    today = dt.date.today()
    start = c1.date_input("from", value=None, max_value=today, key="ledger_from")
    end = c2.date_input("to", value=None, max_value=today, key="ledger_to")
    merchant = c3.text_input("merchant holds", key="ledger_merchant")
    category = c4.selectbox("category", ["all", *[c["name"] for c in cats]], key="ledger_category")
    out = {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None,
           "merchant": merchant or None, "category": None if category == "all" else category}
    return {k: v for k, v in out.items() if v}


def _overview(api: Api, where: dict) -> list[dict]:
    res = answer(api.get("/api/ledger", group_by="month", **where), "ledger query")
    if res is None:
        return []
    totals = " · ".join(f"{t['total']:,.2f} {t['currency'] or '(no currency)'} in {t['receipts']} receipts"
                        for t in res["totals"])
    st.markdown(f"**{totals or 'No receipts yet'}**")
    currencies = sorted({g["currency"] or "?" for g in res["groups"]})
    for col, currency in zip(st.columns(max(1, len(currencies))), currencies):  # one scale per currency
        col.caption(f"monthly totals, {currency}")
        with col:
            st.bar_chart([{"month": g["key"] or "no date", currency: g["total"]} for g in res["groups"]
                          if (g["currency"] or "?") == currency], x="month", y=currency, height=200)
    csv = api.get("/api/ledger.csv", **where)
    st.download_button("Download CSV", csv.content, file_name="ledger.csv", mime="text/csv",
                       disabled=csv.status_code != 200)
    rows = res["receipts"]
    st.dataframe([{"id": r["id"], "date": r["date"], "merchant": r["merchant"], "category": r["category"],
                   "total": r["total"], "currency": r["currency"], "review": "⚠" if r["needs_review"] else "",
                   "file": r["file_name"]} for r in rows], hide_index=True)
    return rows


def _photo(api: Api, rec: dict) -> None:
    img = api.image(rec["image_url"])
    if img is None:
        st.warning("the receipt photo is not available")
        return
    boxes = [(tuple(ln["bbox_xyxy"]), ln["field"], FIELD_COLOURS[ln["field"]]) for ln in rec["fields"]["lines"]
             if ln.get("bbox_xyxy") and ln.get("field") in FIELD_COLOURS]
    shown = draw_boxes(img, boxes, scale=img.width / rec["width"]) if boxes else img
    st.image(shown, width="stretch", caption=" · ".join(f"{f}: {c}" for f, c in (
        ("merchant", "blue"), ("address", "purple"), ("date", "green"), ("total", "red"))))


def _number(text: str) -> float | None:
    return float(text.replace(",", "")) if text.strip() else None


def _form(api: Api, rec: dict, key: str) -> None:
    fields = rec["fields"]
    with st.form(f"correct-{rec['id']}"):
        values: dict = {f: st.text_input(f.replace("_", " "), value=fields.get(f) or "") for f in TEXT_FIELDS}
        day = st.text_input("date (YYYY-MM-DD)", value=fields.get("date") or "")
        amounts = {f: st.text_input(f, value="" if fields.get(f) is None else f"{fields[f]:.2f}")
                   for f in AMOUNT_FIELDS}
        category = st.text_input("category", value=rec.get("category") or "")
        if not st.form_submit_button("Save corrections", type="primary"):
            return
    try:
        new = {f: (v or None) for f, v in values.items()} | {"date": day or None} | {
            f: _number(v) for f, v in amounts.items()}
    except ValueError as e:
        st.error(f"an amount is not a number: {e}")
        return
    changes = {f: v for f, v in new.items() if v != fields.get(f)}
    if category and category != rec.get("category"):
        changes["category"] = category
    if not changes:
        st.info("nothing changed")
        return
    r = api.client.patch(f"{api.url}/api/receipts/{rec['id']}", json=changes,
                         headers={"X-API-Key": key} if key else {})
    if answer(r, "correction") is not None:
        st.success("saved: " + ", ".join(changes))
        st.rerun()


def _receipt(api: Api, receipt_id: str, key: str) -> None:
    rec = answer(api.get(f"/api/receipts/{receipt_id}"), f"receipt {receipt_id}")
    if rec is None:
        return
    st.subheader(f"Receipt #{rec['id']} · {rec['file_name']}")
    for reason in rec["review_reasons"]:
        st.warning(f"needs review: {reason}")
    left, right = st.columns([3, 2])
    with left:
        _photo(api, rec)
    with right:
        st.caption(f"read by {rec['extractor']} {rec['extractor_version'] or ''} · filed under "
                   f"{rec['category']} ({'by hand' if rec['category_source'] == 'user' else 'by the rules'})")
        _form(api, rec, key)
    if rec["fields"]["items"]:
        st.dataframe(rec["fields"]["items"], hide_index=True)
    if rec["corrections"]:
        st.caption("corrections (the extractor's value is kept)")
        st.dataframe([{"field": c["field"], "extractor read": c["extracted"], "before": c["before"],
                       "after": c["after"], "at": c["corrected_at"]} for c in rec["corrections"]], hide_index=True)


def ledger_mode(api: Api, params, health: dict, default_key: str) -> None:
    """The mode: upload receipts, the ledger with its monthly chart and CSV, one receipt to look at and correct."""
    key = st.sidebar.text_input("API key (X-API-Key)", value=default_key, type="password", key="ledger_key",
                                help="one of the server's API_KEYS (uploads and corrections need it)")
    _upload(api, health, key)
    rows = _overview(api, _filters(api))
    if not rows:
        return
    labels = {str(r["id"]): f"#{r['id']} · {r['date'] or 'no date'} · {r['merchant'] or '?'} · "
                            f"{r['total'] if r['total'] is not None else '?'} {r['currency'] or ''}" for r in rows}
    wanted = str(params.get("receipt", ""))
    chosen = st.selectbox("receipt", list(labels), format_func=labels.__getitem__,
                          index=list(labels).index(wanted) if wanted in labels else 0)
    if chosen:
        _receipt(api, chosen, key)

