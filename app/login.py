"""The dashboard's door: nothing renders until it says so (app/main.py asks first).

Served on loopback with no password set, it is open (a developer's own machine). With
ROILAB_DASHBOARD_PASSWORD set, every browser session logs in once; served beyond loopback
without one, it refuses to show anything (``roilab dashboard`` refuses earlier, this covers
a bare ``streamlit run``). The rules and the comparison live in engine.core.dashboard_access.
"""
from __future__ import annotations

import time

import streamlit as st

from engine.core.dashboard_access import (
    PASSWORD_ENV,
    configured_password,
    is_local_address,
    password_matches,
)
from engine.core.settings import get_settings

WRONG_PASSWORD_DELAY_S = 1.0
SESSION_KEY = "login.ok"  # a plain bool in session state: this browser session logged in


def allowed() -> bool:
    """True when the pages may render; otherwise it has drawn the login form or refusal."""
    password = configured_password(get_settings().dashboard_password)
    if password is None:
        if is_local_address(st.get_option("server.address")):
            return True
        st.error(f"This dashboard is served beyond this machine without a password. Its "
                 f"operator must set {PASSWORD_ENV} and restart it (or serve it on "
                 f"127.0.0.1).", icon=":material/lock:")
        return False
    if st.session_state.get(SESSION_KEY):
        return True
    _render_form(password)
    return False


def _render_form(password: str) -> None:
    st.title("roilab")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="login.password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        if password_matches(given, password):
            st.session_state[SESSION_KEY] = True
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)  # slows guessing from one session
        st.error("Wrong password.", icon=":material/lock:")
