"""The "analyse" mode: a photo (uploaded, or an indexed one from `?image_id=`) → `POST /api/analyze` → the photo with
every labelled box drawn (one colour per source), the sensitive-content verdict with its reasons, the description,
the text read, and the whole analysis as JSON to download."""
from __future__ import annotations

import io
import json

import streamlit as st
from PIL import Image

from ui.common import PHOTO_TYPES, Api, answer, draw_boxes, upload_mb

#: one colour per label source (the legend under the photo says which), with the name the legend uses
SOURCE_COLOURS = {"detector": "#4363d8", "tagger": "#808080", "face": "#e6194b", "nudity": "#f032e6",
                  "text": "#f58231", "provider": "#3cb44b"}
COLOUR_NAMES = {"#4363d8": "blue", "#808080": "grey", "#e6194b": "red", "#f032e6": "magenta", "#f58231": "orange",
                "#3cb44b": "green"}
TASKS = ["describe", "sensitive", "labels"]


def _photo(api: Api, params, health: dict) -> tuple[str, bytes, str] | None:
    up = st.file_uploader("Upload a photo to analyse", type=PHOTO_TYPES, max_upload_size=upload_mb(health),
                          help=f"JPEG, PNG, WebP, BMP or TIFF, up to {upload_mb(health)} MB (the service's limit)")
    if up is not None:
        return up.name, up.getvalue(), up.type or "application/octet-stream"
    image_id = str(params.get("image_id", ""))
    if image_id.isdigit():
        got = api.get(f"/api/images/{image_id}/file")
        if got.status_code != 200:
            st.error(f"Indexed image {image_id} is not available: {got.json().get('detail', got.text)}")
            return None
        st.caption(f"analysing indexed image #{image_id}")
        return f"image-{image_id}.jpg", got.content, got.headers.get("content-type", "image/jpeg")
    st.info("Upload a photo, or open an indexed one with “analyse” from its results (?mode=analyse&image_id=…).")
    return None


def _verdict(sensitive: dict | None) -> None:
    if sensitive is None:
        return
    if sensitive["verdict"]:
        st.error(f"**Sensitive** (score {sensitive['score']:.2f})")
        for r in sensitive["reasons"]:
            box = f" · box {[round(v) for v in r['bbox_xyxy']]}" if r.get("bbox_xyxy") else ""
            st.markdown(f"- **{r['category']}** {r['score']:.2f}: {r['evidence']}{box}")
    else:
        st.success("**Not sensitive**: no identifiable face, no personal data in the text read, no nudity")


def _show(data: bytes, res: dict, name: str) -> None:
    photo = Image.open(io.BytesIO(data))
    shown = st.multiselect("boxes to draw", list(SOURCE_COLOURS), default=[s for s in SOURCE_COLOURS if s != "tagger"])
    boxes = [(tuple(lb["bbox_xyxy"]), f"{lb['label']} {lb['score']:.2f}", SOURCE_COLOURS[lb["source"]])
             for lb in res["labels"] if lb["source"] in shown]
    left, right = st.columns([3, 2])
    left.image(draw_boxes(photo, boxes, scale=photo.width / res["image"]["width"]), width="stretch",
               caption=" · ".join(f"{s}: {COLOUR_NAMES[c]}" for s, c in SOURCE_COLOURS.items() if s in shown) or None)
    with right:
        if res["description"]:
            st.markdown(f"**{res['description']}**")
        _verdict(res.get("sensitive"))
        if res["text"]:
            st.caption("text read: " + " · ".join(f"“{t['text']}”" for t in res["text"]))
        st.caption(f"{res['provider']} · {res['model']} · {res['elapsed_ms']:.0f} ms"
                   + (f" · {res['usage']['input_tokens']}+{res['usage']['output_tokens']} tokens"
                      if res.get("usage") else ""))
        st.download_button("Download the analysis (JSON)", json.dumps(res, indent=2, ensure_ascii=False),
                           file_name=f"{name.rsplit('.', 1)[0]}.analysis.json", mime="application/json")
    if res["labels"]:
        st.dataframe([{"label": lb["label"], "source": lb["source"], "score": round(lb["score"], 3),
                       "bbox_xyxy": [round(v) for v in lb["bbox_xyxy"]]} for lb in res["labels"]], hide_index=True)


def analyse_mode(api: Api, params, health: dict, api_key: str) -> None:
    """The mode: a photo → `POST /api/analyze` (the tasks chosen in the sidebar) → what it holds."""
    tasks = st.sidebar.multiselect("tasks", TASKS, default=TASKS)
    prompt = st.sidebar.text_input("extra instruction (hosted providers)", help="added to each task's prompt when "
                                   "the service uses a hosted vision-language model; the local models ignore it")
    query = _photo(api, params, health)
    if query is None or not tasks:
        return
    name, data, ctype = query
    with st.spinner("analysing…"):
        r = api.post("/api/analyze", params={"tasks": ",".join(tasks)}, files={"file": (name, data, ctype)},
                     data={"prompt": prompt} if prompt else None, headers={"X-API-Key": api_key} if api_key else None)
    res = answer(r, "analysis")
    if res is not None:
        _show(data, res, name)
