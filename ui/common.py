"""What the page's modes share: the API client, boxes drawn on a photo, the API's answers shown with their
warnings, and results laid out in a grid."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import streamlit as st
from PIL import Image, ImageDraw

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080"]
COLUMNS = 5
#: the photo formats the uploaders accept (what the API decodes)
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
DEFAULT_UPLOAD_MB = 10  # an API too old to say its limit: MAX_UPLOAD_BYTES' default


CONTENT_CHOICES = {"all photos": None, "hide sensitive photos": "exclude", "only sensitive photos": "only"}


def content_filter(health: dict) -> dict:
    """The sidebar's content filter (from the stored analyses) as search parameters: `sensitive`, `faces`."""
    counts = health.get("counts", {})
    help_text = (f"{counts.get('analysed', 0)} of {counts.get('images', 0)} photos analysed "
                 f"({counts.get('sensitive', 0)} sensitive, {counts.get('with_faces', 0)} with faces); photos not "
                 "analysed yet pass no filter")
    choice = st.sidebar.selectbox("content", list(CONTENT_CHOICES), help=help_text, key="content")
    faces = st.sidebar.checkbox("only photos with a face", help=help_text, key="faces_only")
    out: dict = {}
    if CONTENT_CHOICES[choice]:
        out["sensitive"] = CONTENT_CHOICES[choice]
    if faces:
        out["faces"] = True
    return out


def upload_mb(health: dict) -> int:
    """The service's per-photo upload limit in whole MB (what Streamlit's uploader takes), from `/api/health`."""
    limit = (health.get("limits") or {}).get("max_upload_bytes")
    return max(1, -(-int(limit) // 2**20)) if limit else DEFAULT_UPLOAD_MB


@dataclass
class Api:
    """The search API at `url` (API_URL), over one HTTP client."""

    client: httpx.Client
    url: str

    def get(self, path: str, **params) -> httpx.Response:
        return self.client.get(f"{self.url}{path}", params=params)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(f"{self.url}{path}", **kw)

    def image(self, url: str) -> Image.Image | None:
        """The image at an API link (absolute or relative to the API), or None when the API has none."""
        r = self.client.get(url if url.startswith("http") else f"{self.url}{url}")
        return Image.open(io.BytesIO(r.content)) if r.status_code == 200 else None


def post_files(api: Api, path: str, files: list, key: str) -> str | None:
    """POST Streamlit's uploaded files as multipart `files` to `path` (with the API key when there is one); the batch
    id of the 202 answer, or None after showing why the API refused."""
    r = api.post(path, headers={"X-API-Key": key} if key else {},
                 files=[("files", (f.name, f.getvalue(), f.type or "application/octet-stream")) for f in files])
    if r.status_code != 202:
        answer(r, "upload")
        return None
    return r.json()["batch"]


def draw_boxes(img: Image.Image, boxes: Sequence[tuple[Any, ...]], scale: float = 1.0) -> Image.Image:
    """A copy of `img` with xyxy pixel boxes (multiplied by `scale`) outlined and labelled; each box is (box, text) —
    coloured from `PALETTE` in turn — or (box, text, colour)."""
    img = img.convert("RGB").copy()
    d = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 250))
    for n, entry in enumerate(boxes):
        box, text = entry[0], str(entry[1])
        color = str(entry[2]) if len(entry) > 2 else PALETTE[n % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        d.rectangle((x1, y1, x2, y2), outline=color, width=width)
        if text:
            tw = d.textlength(text)
            d.rectangle((x1, max(0, y1 - 12), x1 + tw + 4, max(12, y1)), fill=color)
            d.text((x1 + 2, max(0, y1 - 12)), text, fill="white")
    return img


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


def grid(api: Api, hits: list[dict], *, use_crop: bool, outline: bool = False) -> None:
    """Results in rows of COLUMNS: the crop (or thumbnail) with label and similarity."""
    for row in range(0, len(hits), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, h in zip(cols, hits[row:row + COLUMNS]):
            img = api.image(h["crop_url"] if use_crop else h["thumbnail_url"])
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
                        + f" · [more like this](?mode=image&image_id={h['image_id']})"
                        + f" · [analyse](?mode=analyse&image_id={h['image_id']})")
