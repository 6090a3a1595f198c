"""Hardware & prices: the catalog behind every dollar figure, with its sources, editable.

A team adds its own entries (a reserved price, an on-premise machine's amortised cost) or
overrides a built-in's price; both are stored in the database (Store.add_hardware /
update_hardware) and used by the business case. Bad input is refused with the field named.
"""
from __future__ import annotations

import streamlit as st

from app import data, ui
from engine.core.errors import RoilabError
from engine.economics.hardware import CATALOG, KINDS


def render() -> None:
    st.title("Hardware & prices")
    flash = st.session_state.pop("hw.flash", None)  # what the last write did (a plain str)
    if flash:
        st.success(ui.escape_md(flash))
    frame = data.catalog_frame()
    built_in = frame.loc[~frame.user_defined, "price_date"].tolist()
    span, age = ui.price_dates(built_in)
    st.caption(f"Editable defaults, not live quotes: each price names the public list it came "
               f"from and the month it held (built-in {span}). Add what you actually pay "
               "below; the business case uses it at once.")
    if age:
        st.warning(ui.escape_md(age.replace("Prices as of", "Built-in prices as of", 1)),
                   icon=":material/event_busy:")
    ui.dataframe(ui.readable(frame, CATALOG_COLUMNS), hide_index=True, key="hw.table")
    left, right = st.columns(2)
    with left:
        _render_add()
    with right:
        _render_override()
        _render_delete()


CATALOG_COLUMNS = {  # the $/hour exactly as stored and priced: 0.08925, not 0.0892
    "key": ui.Col("key"), "name": ui.Col("name"), "kind": ui.Col("kind"),
    "memory_gb": ui.Col("memory (GB)", "g"), "price_per_hour": ui.Col("$/hour", "price"),
    "price_source": ui.Col("source"), "price_date": ui.Col("prices as of"),
    "bandwidth_gbs": ui.Col("bandwidth (GB/s)", "g"), "bf16_tflops": ui.Col("bf16 TFLOP/s", "g"),
    "user_defined": ui.Col("your entry", "yesno"),
    "overrides": ui.Col("overrides built-in", "yesno"),
}


def _apply(action, success: str) -> None:
    """Run a store write; show its SpecError (which names the field) instead of crashing.
    On success, rerun so the table above shows the change, and say what was done."""
    try:
        action()
    except RoilabError as exc:
        ui.show_error(exc)
        return
    st.session_state["hw.flash"] = success
    st.rerun()


def _render_add() -> None:
    st.subheader("Add your own")
    with st.form("hw.add"):
        key = st.text_input("Key", placeholder="onprem-a100-reserved")
        name = st.text_input("Name", placeholder="A100 80 GB (3-year reserved)")
        kind = st.selectbox("Kind", KINDS)
        memory = st.number_input("Memory (GB)", min_value=0.0, value=80.0)
        price = st.number_input("$/hour", min_value=0.0, value=1.0, format="%.5f",
                                help="For owned hardware: purchase price / (months of use x "
                                     "730) plus power and hosting per hour.")
        source = st.text_input("Price source", placeholder="our 3-year reserved contract")
        date = st.text_input("Price as of (YYYY-MM)", placeholder="2025-06")
        bandwidth = st.number_input("Memory bandwidth (GB/s, optional)", min_value=0.0,
                                    value=None)
        tflops = st.number_input("Peak dense bf16 TFLOP/s (optional)", min_value=0.0, value=None)
        if st.form_submit_button("Add hardware"):
            fields = dict(key=key, name=name, kind=kind, memory_gb=memory, price_per_hour=price,
                          price_source=source, price_date=date, bandwidth_gbs=bandwidth,
                          bf16_tflops=tflops)
            _apply(lambda: data.add_hardware(**fields), f"Stored {key.strip()}.")


def _render_override() -> None:
    st.subheader("Override a price")
    catalog = data.hardware_catalog()
    with st.form("hw.override"):
        key = st.selectbox("Hardware", list(catalog), key="hw.override.key",
                           format_func=lambda k: f"{k} ({ui.price(catalog[k].price_per_hour)})")
        price = st.number_input("New $/hour", min_value=0.0, value=None, format="%.5f",
                                key="hw.override.price")
        source = st.text_input("Price source", key="hw.override.source",
                               placeholder="1-year reserved contract")
        date = st.text_input("Price as of (YYYY-MM)", key="hw.override.date",
                             placeholder="2025-06")
        if st.form_submit_button("Save price"):
            changes = dict(price_per_hour=price, price_source=source, price_date=date)
            _apply(lambda: data.update_hardware(key, **changes),
                   f"{key} now costs {ui.price(price)} ({source}, {date}).")


def _render_delete() -> None:
    st.subheader("Delete your entry")
    own = [k for k, hw in data.hardware_catalog().items() if hw.user_defined]
    if not own:
        st.caption("No entries of your own yet.")
        return
    with st.form("hw.delete"):
        key = st.selectbox("Your entry", own, key="hw.delete.key",
                           format_func=lambda k: k + (" (restores the built-in price)"
                                                      if k in CATALOG else ""))
        if st.form_submit_button("Delete"):
            _apply(lambda: data.delete_hardware(key), f"Deleted {key}.")
