"""Streamlit search page: `streamlit run streamlit_app.py`.

Three modes: "image" (upload a photo → its detected objects drawn on it → for each object a grid of
the nearest indexed crops, plus the nearest whole images), "text" (type words → matching images
with the matched object outlined) and "add photos" (upload many files → a progress bar while the
workers index them → failures with their reason → the new photos, each a link to search like it).
Talks to the API over HTTP at API_URL; adding photos sends API_KEY (or the key typed in the sidebar).
"""
from __future__ import annotations

import io
import time

import httpx
import streamlit as st
from PIL import Image, ImageDraw

from clip_embedder.config import Settings  # API_URL from the environment or .env

_SETTINGS = Settings()
API_URL = _SETTINGS.api_url.rstrip("/")
DEFAULT_KEY = _SETTINGS.api_key.get_secret_value() if _SETTINGS.api_key else ""
POLL_SECONDS = 0.5
POLL_LIMIT_SECONDS = 600
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080"]
COLUMNS = 5


def api_get(client: httpx.Client, path: str, **params) -> httpx.Response:
    return client.get(f"{API_URL}{path}", params=params)


def draw_boxes(img: Image.Image, boxes: list[tuple[tuple[float, float, float, float], str]],
               scale: float = 1.0) -> Image.Image:
    """A copy of `img` with xyxy pixel boxes (multiplied by `scale`) outlined and labelled."""
    img = img.convert("RGB").copy()
    d = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 250))
    for n, (box, text) in enumerate(boxes):
        color = PALETTE[n % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in box)
        d.rectangle((x1, y1, x2, y2), outline=color, width=width)
        if text:
            tw = d.textlength(text)
            d.rectangle((x1, max(0, y1 - 12), x1 + tw + 4, max(12, y1)), fill=color)
            d.text((x1 + 2, max(0, y1 - 12)), text, fill="white")
    return img


def fetch_image(client: httpx.Client, url: str) -> Image.Image | None:
    r = client.get(url if url.startswith("http") else f"{API_URL}{url}")
    return Image.open(io.BytesIO(r.content)) if r.status_code == 200 else None


def answer(r: httpx.Response, what: str) -> dict | None:
    """The API's JSON answer with its warnings shown, or None after showing why the API refused."""
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        st.error(f"The API refused this {what} ({r.status_code}): {detail}")
        return None
    res = r.json()
    for w in res.get("warnings", []):
        st.warning(w)
    return res


def grid(client: httpx.Client, hits: list[dict], *, use_crop: bool, outline: bool = False) -> None:
    """Results in rows of COLUMNS: the crop (or thumbnail) with label and similarity."""
    for row in range(0, len(hits), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, h in zip(cols, hits[row:row + COLUMNS]):
            img = fetch_image(client, h["crop_url"] if use_crop else h["thumbnail_url"])
            tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in h.get("tags", [])[:2])
            caption = (f"{h['label'] or 'image'} · sim {h['similarity']:.2f} · #{h['image_id']}"
                       + (f" · {tags}" if tags else "") + (" · weak match" if h.get("weak") else ""))
            if img is None:
                col.caption(f"(image unavailable) {caption}")
                continue
            if outline and h["kind"] == "object":
                img = draw_boxes(img, [(tuple(h["bbox"]), h["label"] or "")], scale=img.width / h["image_width"])
            col.image(img, caption=caption, width="stretch")
            col.caption("found by " + ", ".join(f"{s} #{v['rank']}" for s, v in h["spaces"].items())
                        + f" · [more like this](?mode=image&image_id={h['image_id']})")


def show_batch(client: httpx.Client, batch: str, *, wait: bool) -> None:
    """Poll `GET /api/tasks?batch=…` with a progress bar until every task is done (or `wait` is False);
    then list the failures with their reason and show the indexed photos."""
    bar = st.progress(0.0, text="queued …")
    deadline = time.time() + POLL_LIMIT_SECONDS
    while True:
        r = api_get(client, "/api/tasks", batch=batch)
        if r.status_code != 200:
            answer(r, "batch")
            return
        res = r.json()
        tasks, counts = res["tasks"], res["counts"]
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        bar.progress(done / max(1, len(tasks)), text=f"{done} of {len(tasks)} done · " + " · ".join(
            f"{n} {status}" for status, n in sorted(counts.items())))
        if done == len(tasks) or not wait or time.time() > deadline:
            break
        if not api_get(client, "/api/health").json().get("workers"):
            st.warning("No indexing worker is running, so these photos wait in the queue. Start one with "
                       "`python -m clip_embedder.worker` (`make demo` starts one).")
            break
        time.sleep(POLL_SECONDS)
    for t in tasks:
        if t["status"] == "failed":
            st.error(f"{t['file_name']}: {t['error'] or 'failed'}")
    ok = [t for t in tasks if t["status"] == "succeeded" and t["image_id"]]
    if done < len(tasks):
        st.info(f"{len(tasks) - done} still queued or indexing: reopen [this batch](?mode=add&batch={batch}) "
                "to follow them")
    if not ok:
        return
    st.subheader(f"{len(ok)} photos searchable")
    for row in range(0, len(ok), COLUMNS):
        for col, t in zip(st.columns(COLUMNS), ok[row:row + COLUMNS]):
            img = fetch_image(client, f"/api/images/{t['image_id']}/thumbnail")
            if img is not None:
                col.image(img, caption=t["file_name"], width="stretch")
            col.caption(f"#{t['image_id']} · [search like this](?mode=image&image_id={t['image_id']})")


def add_photos(client: httpx.Client, params) -> None:
    """The "add photos" mode: upload → queue → progress → failures → the new photos."""
    key = st.sidebar.text_input("API key (X-API-Key)", value=DEFAULT_KEY, type="password",
                                help="one of the server's API_KEYS; `make demo` prints it")
    if params.get("batch"):
        st.caption(f"batch {params['batch']}")
        show_batch(client, str(params["batch"]), wait=True)
        return
    files = st.file_uploader("Photos to add to the index", accept_multiple_files=True,
                             type=["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"])
    if not files:
        st.info("Choose photos: each is checked, stored once (the same photo twice is one image) and indexed "
                "by the workers; this page follows them until they are searchable.")
        return
    if not st.button(f"Add {len(files)} photos", type="primary"):
        return
    r = client.post(f"{API_URL}/api/images", headers={"X-API-Key": key} if key else {},
                    files=[("files", (f.name, f.getvalue(), f.type or "application/octet-stream")) for f in files])
    if r.status_code != 202:
        answer(r, "upload")
        return
    batch = r.json()["batch"]
    st.query_params["batch"] = batch
    show_batch(client, batch, wait=True)


def main() -> None:
    st.set_page_config(page_title="Visual search", layout="wide")
    st.title("Object-level visual search")
    client = httpx.Client(timeout=60)
    try:
        health = api_get(client, "/api/health").raise_for_status().json()
    except httpx.HTTPError as e:
        st.error(f"The search API at {API_URL} is not reachable ({type(e).__name__}: {e}). Start it with "
                 "`uvicorn api.main:app --port 8000`, or set API_URL to where it runs.")
        st.stop()
        return

    params = st.query_params  # shareable links: ?mode=text&q=handbag, ?mode=image&image_id=12, ?mode=add&batch=…
    with st.sidebar:
        modes = ["image", "text", "add photos"]
        if params.get("mode") == "add":
            params["mode"] = "add photos"
        mode = st.radio("Mode", modes, horizontal=True,
                        index=modes.index(params.get("mode")) if params.get("mode") in modes else 0)
        top_k = st.slider("results per list (top_k)", 1, 50, 10)
        counts = health["counts"]
        st.caption(f"{counts.get('images', 0)} images · {counts.get('objects', 0)} objects indexed · "
                   f"spaces: {', '.join(health['spaces']) or 'none'}")
        for space, why in health.get("refused", {}).items():
            st.warning(f"space {space} unavailable: {why}")
        det = health.get("detector", {})
        with st.expander(f"detector knows {det.get('classes', 0)} object classes"):
            st.caption(", ".join(det.get("class_names", [])) + ". Other things are found through ImageNet tags "
                       "(1,000 classes) and the text read in the photos.")

    if mode == "add photos":
        add_photos(client, params)
        return
    if mode == "image":
        same_class = st.sidebar.checkbox("object neighbours of the same class only", value=False)
        up = st.file_uploader("Upload a photo", type=["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"])
        if up is not None:
            name, data, ctype = up.name, up.getvalue(), up.type or "application/octet-stream"
        elif str(params.get("image_id", "")).isdigit():
            got = api_get(client, f"/api/images/{params['image_id']}/file")
            if got.status_code != 200:
                st.error(f"Indexed image {params['image_id']} is not available: {got.json().get('detail', got.text)}")
                return
            name, data, ctype = f"image {params['image_id']}", got.content, got.headers.get("content-type", "")
            st.caption(f"searching like indexed image #{params['image_id']}")
            info = api_get(client, f"/api/images/{params['image_id']}")
            if info.status_code == 200:
                info_json = info.json()
                tags = ", ".join(f"{t['label']} ({t['score']:.2f})" for t in info_json.get("tags", []))
                st.caption(f"{info_json['file_name']}: {info_json['description']}"
                           + (f" · ImageNet tags: {tags}" if tags else ""))
                if info_json.get("ocr"):
                    st.caption("text in the photo: " + " · ".join(f"“{ln['text']}” ({ln['confidence']:.2f})"
                                                                  for ln in info_json["ocr"]))
        else:
            st.info("Upload a photo: its objects are detected and each is matched against the indexed crops.")
            return
        r = client.post(f"{API_URL}/api/search_image", params={"top_k": top_k, "same_class": same_class},
                        files={"file": (name, data, ctype)})
        res = answer(r, "image")
        if res is None:
            return
        query = Image.open(io.BytesIO(data))
        boxes = [(tuple(o["bbox"]), f"{o['label']} {o['score']:.2f}") for o in res["objects"]]
        left, right = st.columns([2, 3])
        left.image(draw_boxes(query, boxes, scale=query.width / res["width"]), caption="query with detected objects",
                   width="stretch")
        right.markdown(f"**{len(res['objects'])} objects detected** · "
                       + " · ".join(f"{k} {v:.0f} ms" for k, v in res["timings_ms"].items()))
        st.subheader("Similar whole images")
        grid(client, res["image_neighbours"], use_crop=False)
        for n, o in enumerate(res["objects"]):
            st.subheader(f"{n + 1}. {o['label']} ({o['score']:.2f})")
            if o["skipped"]:
                st.caption(f"not searched: {o['skipped']}")
            elif not o["neighbours"]:
                st.caption("no indexed crops match (try without 'same class only')")
            else:
                grid(client, o["neighbours"], use_crop=True)
    else:
        labels = ["(any)"] + health.get("labels", [])
        label = st.sidebar.selectbox("only objects of class", labels)
        query = st.text_input("Describe what you are looking for", value=params.get("q", ""),
                              placeholder='e.g. handbag, a red car, a macaw, "EXIT" (quotes: text in the photo)')
        include_weak = st.sidebar.checkbox("also show weak matches", value=False,
                                           help="results below the relevance floor, flagged 'weak match'")
        if not query.strip():
            st.info("Type a few words: images are ranked by the text spaces " + ", ".join(
                s for s, v in health["spaces"].items() if v.get("text_queries")))
            return
        request = {"query": query, "top_k": top_k, "include_weak": include_weak}
        if label != "(any)":
            request["label"] = label
        res = answer(api_get(client, "/api/search_text", **request), "query")
        if res is None:
            return
        st.markdown(f"**{len(res['results'])} images** for “{res['query']}” · spaces {', '.join(res['spaces'])} · "
                    f"{res['took_ms']:.0f} ms")
        if not res["results"] and res.get("hidden_weak"):
            st.caption("Tick “also show weak matches” in the sidebar to see the closest ones anyway.")
        grid(client, res["results"], use_crop=False, outline=True)


main()
