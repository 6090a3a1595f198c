"""Page registry: one place that names every page, for the router and for links.

Page modules are imported when a page object is made (not at import time), because the
pages themselves import this module to link to each other.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import streamlit as st

# The browser tab's icon: a file, not a ":material/...:" name, which Streamlit's frontend
# loads from fonts.gstatic.com on every page (failing offline); a file is sent inline.
FAVICON = Path(__file__).resolve().parent / "static" / "favicon.svg"

_PAGES = {  # url path: (module in app.views, title, icon)
    "overview": ("overview", "Overview", ":material/dashboard:"),
    "playbook": ("playbook", "Playbook", ":material/route:"),
    "upload": ("upload", "Upload log", ":material/upload_file:"),
    "run": ("run_pilot", "Run pilot", ":material/play_arrow:"),
    "results": ("results", "Results", ":material/bar_chart:"),
    "load": ("load_test", "Load test", ":material/speed:"),
    "business": ("business_case", "Business case", ":material/savings:"),
    "hardware": ("hardware", "Hardware & prices", ":material/memory:"),
}


def page(key: str) -> st.Page:
    """The st.Page for a key; a new object each call, identified by its url_path."""
    module, title, icon = _PAGES[key]
    render = importlib.import_module(f"app.views.{module}").render
    return st.Page(render, title=title, icon=icon, url_path=key, default=key == "overview")


def url_paths() -> tuple[str, ...]:
    """Every page's url path, e.g. for a test that visits them all."""
    return tuple(_PAGES)


def sections() -> dict[str, list[st.Page]]:
    return {"Pilot": [page(k) for k in ("overview", "playbook", "upload", "run", "results",
                                        "load")],
            "Decide": [page("business")],
            "Reference": [page("hardware")]}
