"""The "add photos" mode: upload → queue → a progress bar while the workers index them → failures with their reason
→ the new photos, each a link to search like it."""
from __future__ import annotations

import time

import streamlit as st

from ui.common import COLUMNS, PHOTO_TYPES, Api, answer, post_files, upload_mb

POLL_SECONDS = 0.5
POLL_LIMIT_SECONDS = 600


def follow_batch(api: Api, batch: str, *, wait: bool) -> list[dict] | None:
    """Poll `GET /api/tasks?batch=…` with a progress bar until every task is done (or `wait` is False, or no worker
    runs); returns the batch's tasks (None when the API refused)."""
    bar = st.progress(0.0, text="queued …")
    deadline = time.time() + POLL_LIMIT_SECONDS
    while True:
        r = api.get("/api/tasks", batch=batch)
        if r.status_code != 200:
            answer(r, "batch")
            return None
        res = r.json()
        tasks, counts = res["tasks"], res["counts"]
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        bar.progress(done / max(1, len(tasks)), text=f"{done} of {len(tasks)} done · " + " · ".join(
            f"{n} {status}" for status, n in sorted(counts.items())))
        if done == len(tasks) or not wait or time.time() > deadline:
            return tasks
        if not api.get("/api/health").json().get("workers"):
            st.warning("No indexing worker is running, so these photos wait in the queue. Start one with "
                       "`python -m clip_embedder.worker` (`make demo` starts one).")
            return tasks
        time.sleep(POLL_SECONDS)


def show_batch(api: Api, batch: str, *, wait: bool) -> None:
    """Follow a batch (`_follow`), then list the failures with their reason and show the indexed photos."""
    tasks = follow_batch(api, batch, wait=wait)
    if tasks is None:
        return
    for t in tasks:
        if t["status"] == "failed":
            st.error(f"{t['file_name']}: {t['error'] or 'failed'}")
    ok = [t for t in tasks if t["status"] == "succeeded" and t["image_id"]]
    gone = [t for t in tasks if t["status"] == "succeeded" and not t["image_id"] and t.get("kind", "image") == "image"]
    if gone:
        st.caption(f"{len(gone)} of these photos were deleted since: " + ", ".join(t["file_name"] for t in gone[:10]))
    done = sum(1 for t in tasks if t["status"] in ("succeeded", "failed"))
    if done < len(tasks):
        st.info(f"{len(tasks) - done} still queued or indexing: reopen [this batch](?mode=add&batch={batch}) "
                "to follow them")
    if not ok:
        return
    st.subheader(f"{len(ok)} photos searchable")
    reading = sum(1 for t in ok if t.get("enrichments", {}).get("ocr") in ("queued", "running"))
    if reading:
        st.caption(f"The text in {reading} of them is still being read (OCR runs after a photo is searchable): "
                   f"reopen [this batch](?mode=add&batch={batch}) to see them found by their words too.")
    for row in range(0, len(ok), COLUMNS):
        for col, t in zip(st.columns(COLUMNS), ok[row:row + COLUMNS]):
            img = api.image(f"/api/images/{t['image_id']}/thumbnail")
            if img is not None:
                col.image(img, caption=t["file_name"], width="stretch")
            col.caption(f"#{t['image_id']} · [search like this](?mode=image&image_id={t['image_id']})")


def add_photos(api: Api, params, health: dict, default_key: str) -> None:
    """The mode: the API key in the sidebar, an uploader, and the batch followed until its photos are searchable."""
    key = st.sidebar.text_input("API key (X-API-Key)", value=default_key, type="password",
                                help="one of the server's API_KEYS; `make demo` prints it")
    if params.get("batch"):
        st.caption(f"batch {params['batch']}")
        show_batch(api, str(params["batch"]), wait=True)
        return
    mb = upload_mb(health)
    most = (health.get("limits") or {}).get("max_files_per_upload", 200)
    files = st.file_uploader("Photos to add to the index", accept_multiple_files=True, type=PHOTO_TYPES,
                             max_upload_size=mb, help=f"up to {mb} MB per photo and {most} photos at once (the "
                                                      "service's limits)")
    if not files:
        st.info("Choose photos: each is checked, stored once (the same photo twice is one image) and indexed "
                "by the workers; this page follows them until they are searchable.")
        return
    if not st.button(f"Add {len(files)} photos", type="primary"):
        return
    batch = post_files(api, "/api/images", files, key)
    if batch is None:
        return
    st.query_params["batch"] = batch
    show_batch(api, batch, wait=True)
