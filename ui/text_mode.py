"""The "text" mode: words (quoted: text in the photo) → matching images with the matched object outlined."""
from __future__ import annotations

import streamlit as st

from ui.common import Api, answer, content_filter, grid


def text_mode(api: Api, params, health: dict, top_k: int) -> None:
    """The mode: a class filter and "weak matches" in the sidebar, a query box, `GET /api/search_text`, the results."""
    labels = ["(any)"] + health.get("labels", [])
    label = st.sidebar.selectbox("only objects of class", labels)
    query = st.text_input("Describe what you are looking for", value=params.get("q", ""),
                          placeholder='e.g. handbag, a red car, a macaw, "EXIT" (quotes: text in the photo)')
    include_weak = st.sidebar.checkbox("also show weak matches", key="include_weak",
                                       help="results below the relevance floor, flagged 'weak match'")
    content = content_filter(health)
    if not query.strip():
        st.info("Type a few words: images are ranked by the text spaces " + ", ".join(
            s for s, v in health["spaces"].items() if v.get("text_queries")))
        return
    request = {"query": query, "top_k": top_k, "include_weak": include_weak, **content}
    if label != "(any)":
        request["label"] = label
    res = answer(api.get("/api/search_text", **request), "query")
    if res is None:
        return
    n, hidden = len(res["results"]), res.get("hidden_weak", 0)
    found = f"**{n} {'image' if n == 1 else 'images'}** for “{res['query']}”"
    st.markdown(found + (f" ({hidden} weaker {'match' if hidden == 1 else 'matches'} hidden)" if hidden else "")
                + f" · spaces {', '.join(res['spaces'])} · {res['took_ms']:.0f} ms")
    if hidden:
        st.button(f"Show the {hidden} weaker {'match' if hidden == 1 else 'matches'} too", on_click=_show_weak)
    grid(api, res["results"], use_crop=False, outline=True)


def _show_weak() -> None:
    st.session_state["include_weak"] = True  # the sidebar checkbox, ticked for the rerun
