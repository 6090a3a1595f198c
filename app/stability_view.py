"""The measurement protocol's warnings (engine.pilot.stability), drawn the same way on every
page that shows a run's figures: unstable figures, a drifting baseline, a busy machine."""
from __future__ import annotations

import streamlit as st

from app import ui
from engine.pilot.stability import stability_lines


def render_warnings(rep) -> None:
    """One warning per problem with how ``rep``'s figures were measured; nothing if none."""
    for line in stability_lines(rep):
        st.warning(ui.escape_md(line), icon=":material/speed:")
