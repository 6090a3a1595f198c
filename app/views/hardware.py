"""Hardware & prices: the catalog behind every dollar figure, with its sources."""
from __future__ import annotations

import streamlit as st

from app import data


def render() -> None:
    st.title("Hardware & prices")
    st.caption("Editable defaults, not live quotes: each price names the public list it came "
               "from and the month it held. Overwrite $/hour with what you actually pay - "
               "on the Run pilot form or live on the Results page.")
    st.dataframe(
        data.catalog_frame(), hide_index=True,
        column_config={"price_per_hour": st.column_config.NumberColumn("$/hour", format="%.4f"),
                       "memory_gb": st.column_config.NumberColumn("memory (GB)"),
                       "price_source": "source", "price_date": "as of"})
