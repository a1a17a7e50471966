"""The "image" mode: a photo (uploaded, or an indexed one from a "more like this" link) → its detected objects drawn
on it → for each object a grid of the nearest indexed crops, plus the nearest whole images."""
from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from ui.common import PHOTO_TYPES, Api, answer, content_filter, draw_boxes, grid, upload_mb


def _indexed_photo(api: Api, image_id: str) -> tuple[str, bytes, str] | None:
    """An indexed image's bytes as the query (name, bytes, content type), with its description, tags and text shown;
    None (after an error) when the API has no such image."""
    got = api.get(f"/api/images/{image_id}/file")
    if got.status_code != 200:
        st.error(f"Indexed image {image_id} is not available: {got.json().get('detail', got.text)}")
        return None
    st.caption(f"searching like indexed image #{image_id}")
    info = api.get(f"/api/images/{image_id}")
    if info.status_code == 200:
        info_json = info.json()
        tags = ", ".join(f"{t['label']} ({t['score']:.2f})" for t in info_json.get("tags", []))
        st.caption(f"{info_json['file_name']}: {info_json['description']}"
                   + (f" · ImageNet tags: {tags}" if tags else ""))
        if info_json.get("ocr"):
            st.caption("text in the photo: " + " · ".join(f"“{ln['text']}” ({ln['confidence']:.2f})"
                                                          for ln in info_json["ocr"]))
    return f"image {image_id}", got.content, got.headers.get("content-type", "")


def _show_results(api: Api, data: bytes, res: dict) -> None:
    """The query with the objects searched outlined, the nearest whole images, and each searched object's nearest
    crops; objects too small to matter are named in one line, neither drawn nor searched."""
    query = Image.open(io.BytesIO(data))
    searched = [o for o in res["objects"] if not o["skipped"]]
    skipped = [o for o in res["objects"] if o["skipped"]]
    boxes = [(tuple(o["bbox"]), f"{o['label']} {o['score']:.2f}") for o in searched]
    left, right = st.columns([2, 3])
    left.image(draw_boxes(query, boxes, scale=query.width / res["width"]), caption="query with the objects searched",
               width="stretch")
    right.markdown(f"**{len(searched)} objects searched** · "
                   + " · ".join(f"{k} {v:.0f} ms" for k, v in res["timings_ms"].items()))
    if skipped:
        right.caption("not searched: " + "; ".join(f"{o['label']} ({o['skipped']})" for o in skipped))
    st.subheader("Similar whole images")
    grid(api, res["image_neighbours"], use_crop=False)
    for n, o in enumerate(searched):
        st.subheader(f"{n + 1}. {o['label']} ({o['score']:.2f})")
        if not o["neighbours"]:
            st.caption("no indexed crops match (try without 'same class only')")
        else:
            grid(api, o["neighbours"], use_crop=True)


def image_mode(api: Api, params, health: dict, top_k: int) -> None:
    """The mode: an uploader (or `?image_id=` from a link), then `POST /api/search_image` and its results."""
    same_class = st.sidebar.checkbox("object neighbours of the same class only", value=False)
    content = content_filter(health)
    up = st.file_uploader("Upload a photo", type=PHOTO_TYPES, max_upload_size=upload_mb(health),
                          help=f"JPEG, PNG, WebP, BMP or TIFF, up to {upload_mb(health)} MB (the service's limit)")
    if up is not None:
        query: tuple[str, bytes, str] | None = (up.name, up.getvalue(), up.type or "application/octet-stream")
    elif str(params.get("image_id", "")).isdigit():
        query = _indexed_photo(api, str(params["image_id"]))
    else:
        st.info("Upload a photo: its objects are detected and each is matched against the indexed crops.")
        return
    if query is None:
        return
    r = api.post("/api/search_image", params={"top_k": top_k, "same_class": same_class, **content},
                 files={"file": query})
    res = answer(r, "image")
    if res is not None:
        _show_results(api, query[1], res)
