"""roilab dashboard entry point: ``streamlit run app/main.py``.

A router only. Pages live in app/views/ (each a ``render()``), read and write through
app/data.py, and leave every computation to engine/.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on sys.path, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import login, nav  # noqa: E402

st.set_page_config(page_title="roilab", page_icon=nav.FAVICON, layout="wide")
if login.allowed():  # before any page, and before navigation lists them
    st.navigation(nav.sections()).run()
