"""Streamlit search page: `streamlit run streamlit_app.py`.

Five modes, one module each in `ui/`: "image" (upload a photo → its detected objects drawn on it → for each object
a grid of the nearest indexed crops, plus the nearest whole images), "text" (type words → matching images with the
matched object outlined) and "add photos" (upload many files → a progress bar while the workers index them →
failures with their reason → the new photos, each a link to search like it) and "analyse" (a photo → its boxes
drawn by source, the sensitive-content verdict with reasons, the description, the JSON to download) and "ledger"
(receipt photos → the household ledger: monthly totals, CSV, a receipt beside its fields to correct). This file lays
the page out and dispatches. Talks to the API over HTTP at API_URL; adding photos (and analysing with a hosted provider)
sends API_KEY (or the key typed in the sidebar).
"""
from __future__ import annotations

import httpx
import streamlit as st

from clip_embedder.config import Settings  # API_URL from the environment or .env
from ui.add_photos import add_photos
from ui.analyse_mode import analyse_mode
from ui.common import Api
from ui.image_mode import image_mode
from ui.ledger_mode import ledger_mode
from ui.text_mode import text_mode

MODES = ["image", "text", "add photos", "analyse", "ledger"]


def sidebar(health: dict, params) -> tuple[str, int]:
    """The mode switch, top_k (searches only), what the index holds, refused spaces and the detector's classes;
    returns the chosen (mode, top_k)."""
    with st.sidebar:
        if params.get("mode") == "add":
            params["mode"] = "add photos"
        mode = st.radio("Mode", MODES, horizontal=True,
                        index=MODES.index(params.get("mode")) if params.get("mode") in MODES else 0)
        top_k = 10 if mode in ("add photos", "analyse", "ledger") else st.slider("results per list (top_k)", 1, 50, 10)
        counts = health["counts"]
        st.caption(f"{counts.get('images', 0)} images · {counts.get('objects', 0)} objects indexed · "
                   f"spaces: {', '.join(health['spaces']) or 'none'} · {counts.get('receipts', 0)} receipts")
        for space, why in health.get("refused", {}).items():
            st.warning(f"space {space} unavailable: {why}")
        det = health.get("detector", {})
        with st.expander(f"detector knows {det.get('classes', 0)} object classes"):
            st.caption(", ".join(det.get("class_names", [])) + ". Other things are found through ImageNet tags "
                       "(1,000 classes) and the text read in the photos.")
    return mode, top_k


def main() -> None:
    st.set_page_config(page_title="Visual search", layout="wide")
    st.title("Object-level visual search")
    settings = Settings()
    api = Api(httpx.Client(timeout=60), settings.api_url.rstrip("/"))
    try:
        health = api.get("/api/health").raise_for_status().json()
    except httpx.HTTPError as e:
        st.error(f"The search API at {api.url} is not reachable ({type(e).__name__}: {e}). Start it with "
                 "`uvicorn api.main:app --port 8000`, or set API_URL to where it runs.")
        st.stop()
        return
    params = st.query_params  # shareable links: ?mode=text&q=handbag, ?mode=image&image_id=12, ?mode=add&batch=…
    mode, top_k = sidebar(health, params)
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    if mode == "add photos":
        add_photos(api, params, health, key)
    elif mode == "analyse":
        analyse_mode(api, params, health, key)
    elif mode == "ledger":
        ledger_mode(api, params, health, key)
    elif mode == "image":
        image_mode(api, params, health, top_k)
    else:
        text_mode(api, params, health, top_k)


main()
