"""Run pilot: a form that builds a PilotSpec and hands it to Ray (engine.jobs), as
`roilab pilot --detach` does. The pilot runs in a Ray worker, not in this script: closing the
tab, reloading or a second browser changes nothing. The page then watches the run from the
store (queued with its place, running with its variants done, then the outcome), re-read
every few seconds; Results shows the same for any run.
"""
from __future__ import annotations

import json
from typing import Any

import streamlit as st

from app import data, nav, ui
from engine.backends.base import default_dtype
from engine.core.domain import Run, Status
from engine.core.errors import RoilabError, SpecError
from engine.ingest.review import default_workload, small_workload_warning
from engine.jobs.ray_executor import asked
from engine.pilot.detect import Detected, detect_hardware, runs_on_mismatch
from engine.specs.pilot import PilotSpec, parse_pilot_spec, pilot_variants
from engine.techniques import MODULES as TECHNIQUE_KINDS

WATCH_EVERY_S = 3.0  # how often a page watching a pilot re-reads the store


def render() -> None:
    st.title("Run a pilot")
    workloads = {w.id: w for w in data.workloads()}
    if not workloads:
        st.info("Upload a request log first.")
        st.page_link(nav.page("upload"), label="Upload a log", icon=":material/upload_file:")
        return
    values = _render_form(workloads)
    if values is None:
        _render_watch()
        return
    try:
        _check_hardware(values)
        spec = parse_pilot_spec(_spec_dict(values))  # SpecError for bad JSON or fields
    except RoilabError as exc:
        ui.show_error(exc)
        return
    mismatch = runs_on_mismatch(data.hardware_catalog()[values["hardware"]], values["device"])
    if mismatch:
        st.warning(ui.escape_md(f"{mismatch} The results carry this caveat."),
                   icon=":material/warning:")
    skipped = _other_backend(values)
    if skipped:
        st.info(f"Not in this pilot: {', '.join(skipped)}.")
    # left at the detected device: the node that runs it prices it as its own device
    _run(spec, reprice=values["hardware"] == values["detected"].key and values["price"] is None)
    _render_watch()


def _render_form(workloads: dict) -> dict[str, Any] | None:
    """The form; returns its values when submitted, else None."""
    catalog = data.hardware_catalog()  # the built-ins and the user's own entries
    hw_keys = list(catalog)
    detected = detect_hardware("auto", catalog)  # the form's device default is "auto"
    v: dict[str, Any] = {"workload_id": _render_workload_select(workloads), "detected": detected}
    with st.form("pilot"):
        v["name"] = st.text_input("Run name", value="pilot")
        st.markdown("**Variants** (the baseline always runs first; the others are compared "
                    "with it)")
        st.checkbox("baseline (the model as it is)", value=True, disabled=True)
        v["int8"] = st.checkbox("int8 weights (torchao weight-only quantization; transformers "
                                "backend)", value=True)
        v["fp8"] = st.checkbox("FP8 weights (vLLM backend)", value=True)
        v["fp8kv"] = st.checkbox("FP8 KV cache (vLLM backend)", value=False)
        v["lingua"] = st.checkbox("LLMLingua prompt compression", value=True)
        v["rate"] = st.slider("LLMLingua rate (fraction of prompt tokens kept)", 0.1, 0.9, 0.5,
                              0.05)
        v["prefix"] = st.checkbox("Prefix caching (vLLM backend; every other variant then runs "
                                  "with vLLM's prefix cache off)", value=False)
        v["ngram"] = st.checkbox("N-gram speculative decoding (vLLM backend; drafts copied from "
                                 "the prompt, no draft model)", value=False)
        v["extra"] = st.text_area(
            "More variants (JSON list, optional)", value="", height=90,
            placeholder='[{"name": "int4-hqq", "techniques": [{"kind": "quantize_weights", '
                        '"bits": 4, "method": "hqq"}]}]',
            help="Each entry is a variant: a name and technique specs, applied in order. "
                 f"Technique kinds: {', '.join(sorted(TECHNIQUE_KINDS))}. Unknown fields are "
                 "refused with the field named.")
        left, mid, right, far = st.columns([3, 2, 1, 1])
        v["model"] = left.text_input("Model", value=data.settings().default_model,
                                     help="embedded:smollm2-135m-instruct, or a local Hugging "
                                          "Face model folder (the one holding config.json)")
        v["backend"] = mid.selectbox(
            "Serving backend", ["transformers", "vllm"],
            help="transformers: every technique, on CPU or GPU. vllm: the engine teams serve "
                 "with; its variants are FP8 weights, FP8 KV cache and LLMLingua (and any "
                 "`vllm` options or exported checkpoints under More variants). Each variant's "
                 "engine is shut down before the next one starts.")
        v["device"] = right.selectbox("Device", ["auto", "cpu", "cuda"])
        v["dtype"] = far.selectbox("dtype", ["auto", "float32", "bfloat16", "float16"],
                                   help="auto: bfloat16 for vLLM on a GPU, else float32")
        a, b, c = st.columns(3)
        v["max_requests"] = a.number_input("Max requests", min_value=1, value=12)
        v["max_new_tokens"] = b.number_input("Max new tokens", min_value=1, max_value=4096,
                                             value=48)
        v["batch_size"] = c.number_input("Batch size", min_value=1, max_value=256, value=8)
        a, b, c = st.columns(3)
        v["hardware"] = a.selectbox(
            "Priced as hardware", hw_keys,
            index=hw_keys.index(detected.key) if detected.key in hw_keys else None,
            placeholder="choose what this machine costs like",
            format_func=lambda k: f"{catalog[k].name} - {ui.price(catalog[k].price_per_hour)}",
            help="Default: the catalog entry of the device this machine runs the pilot on "
                 "(a GPU by its name, the CPU as the smallest instance with its vCPUs).")
        v["price"] = b.number_input("$/hour", min_value=0.0, value=None, step=0.01,
                                    format="%.5f", placeholder="catalog price",
                                    help="Per GPU (per device); leave empty for the catalog "
                                         "price of that hardware. A variant that spans several "
                                         "GPUs (vLLM tensor_parallel_size) pays this times its "
                                         "GPUs.")
        v["volume"] = c.number_input("Requests / month", min_value=0, value=1_000_000,
                                     step=100_000)
        span, age = ui.price_dates([hw.price_date for hw in catalog.values()
                                    if not hw.user_defined])
        st.caption(ui.escape_md(f"Default hardware: {detected.describe(catalog)}. Catalog "
                                f"{span}: each entry's date is on the Hardware page."))
        if age:
            st.warning(ui.escape_md(age), icon=":material/event_busy:")
        r, m = st.columns(2)
        v["repeats"] = r.number_input(
            "Timed passes per variant", min_value=1, max_value=20, value=None,
            placeholder="device default",
            help="Each variant is timed this many times over the same requests (the first "
                 "pass's outputs are scored); the report shows the median and the spread, and "
                 "the baseline is timed once more at the end. Empty: 3 on a GPU, 2 on CPU, 1 "
                 "for an endpoint.")
        v["min_pass_s"] = m.number_input(
            "Minimum seconds per pass", min_value=0.0, max_value=3600.0, value=None,
            step=5.0, placeholder="device default",
            help="A timed pass replays the requests until it lasts at least this long, so a "
                 "one-off stall is a small part of it. Empty: 10 s on a GPU, one replay on a "
                 "CPU or an endpoint.")
        submitted = st.form_submit_button("Run pilot", type="primary")
    return v if submitted else None


def _render_workload_select(workloads: dict) -> int:
    """Outside the form, so the warning follows the choice at once. Defaults to the newest
    workload with enough requests to measure anything, else the largest."""
    ids = list(workloads)
    chosen = st.selectbox(
        "Workload", ids, index=ids.index(default_workload(list(workloads.values())).id),
        format_func=lambda i: f"#{i} {workloads[i].name} ({workloads[i].n_requests} requests)")
    warning = small_workload_warning(workloads[chosen].n_requests)
    if warning:
        st.warning(ui.escape_md(warning), icon=":material/warning:")
    return chosen


def _check_hardware(v: dict[str, Any]) -> None:
    """A SpecError when no hardware was chosen (nothing detected matched the catalog)."""
    if v.get("hardware") is None:
        found: Detected = v["detected"]
        raise SpecError(f"Choose 'Priced as hardware': {found.describe(data.hardware_catalog())}. "
                        "Pick the entry closest to this machine and give its $/hour, or add "
                        "this machine on the Hardware page.")


def _other_backend(v: dict[str, Any]) -> list[str]:
    """Ticked built-in variants that the chosen backend does not run."""
    if v.get("backend", "transformers") == "vllm" and v["int8"]:
        return ["int8 weights (a transformers technique; vLLM's 8-bit form is FP8 weights)"]
    return []  # the FP8, prefix-cache and n-gram boxes say they are vLLM's


def _spec_dict(v: dict[str, Any]) -> dict[str, Any]:
    """Form values -> PilotSpec JSON (validated by parse_pilot_spec)."""
    backend = v.get("backend", "transformers")
    dtype = v.get("dtype", "auto")
    if dtype == "auto":
        dtype = default_dtype(backend, v["device"])
    base = {"model": v["model"].strip(), "device": v["device"], "backend": backend,
            "dtype": dtype}
    ticked = {"int8": v["int8"] and backend == "transformers",
              "fp8": v.get("fp8") and backend == "vllm",
              "fp8-kv": v.get("fp8kv") and backend == "vllm", "llmlingua": v["lingua"],
              "prefix-cache": v.get("prefix") and backend == "vllm",
              "ngram-spec": v.get("ngram") and backend == "vllm"}
    variants = [x.model_dump(mode="json") for x in pilot_variants(
        [k for k, on in ticked.items() if on], rate=v.get("rate", 0.5), **base)]
    variants.extend({**base, **extra} for extra in _extra_variants(v.get("extra", "")))
    return {"name": v["name"].strip() or "pilot", "workload_id": v["workload_id"],
            "variants": variants, "max_requests": int(v["max_requests"]),
            "generation": {"max_new_tokens": int(v["max_new_tokens"]),
                           "batch_size": int(v["batch_size"])},
            "measurement": {"repeats": None if v.get("repeats") is None else int(v["repeats"]),
                            "min_pass_s": None if v.get("min_pass_s") is None
                            else float(v["min_pass_s"])},
            "cost": {"hardware": v["hardware"], "price_per_hour": v["price"],
                     "requests_per_month": int(v["volume"])}}


def _extra_variants(text: str) -> list[dict[str, Any]]:
    """The optional JSON list of further variants; a clear error if it is not one."""
    if not text.strip():
        return []
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"More variants: invalid JSON at line {exc.lineno} column {exc.colno} "
                        f"({exc.msg}); give a list like [{{\"name\": ..., \"techniques\": "
                        "[...]}]") from exc
    if not isinstance(extra, list) or not all(isinstance(e, dict) for e in extra):
        raise SpecError("More variants must be a JSON list of objects, each with a name and "
                        "techniques.")
    return extra


def _run(spec: PilotSpec, reprice: bool = False) -> None:
    """Hand the pilot to Ray; it runs in a Ray worker, so the page only watches it.
    ``reprice``: priced as the device detected here, to be priced as the node's instead."""
    try:
        with st.spinner("Handing the pilot to Ray (its first use on this machine starts it, "
                        "10-30 s)"):
            run, sub = data.submit_run(spec, reprice)
    except RoilabError as exc:  # Ray unreachable, unknown workload: nothing was created
        ui.show_error(exc)
        return
    st.session_state["run_pilot.last_run_id"] = run.id
    where = f"{sub.address} (local)" if sub.local else sub.address
    asks = asked(sub.resources)
    st.success(ui.escape_md(
        f"Pilot #{run.id} ({len(spec.variants)} variants) handed to Ray at {where}, asking "
        f"{asks}. It runs on its own: close this tab or reload and it goes on; follow it here "
        "or on Results."), icon=":material/send:")


def _render_watch() -> None:
    """The pilot this session last started, as the store says it stands now."""
    run_id = st.session_state.get("run_pilot.last_run_id")
    if run_id is not None:
        watch_run(run_id)


def now_measuring(run: Run) -> str:
    """Which variant the pilot is at: the one its process last named (interleaved variants
    are all 'running' at once, so the first of them is not it), else the running ones."""
    names = [v.name for v in run.variants]
    said = run.progress.variant if run.progress and run.status == Status.RUNNING else None
    if said in names:
        return f"Now measuring '{said}' (variant {names.index(said) + 1} of {len(names)})."
    running = [v.name for v in run.variants if v.status == Status.RUNNING]
    if len(running) == 1:
        return (f"Now measuring '{running[0]}' (variant {names.index(running[0]) + 1} of "
                f"{len(names)}).")
    if running:
        return "Now measuring " + ", ".join(f"'{n}'" for n in running) + \
            " in interleaved rounds."
    return ""


@st.fragment(run_every=WATCH_EVERY_S)
def watch_run(run_id: int, rerun_page_when_finished: bool = False) -> None:
    """Queued / running / finished, re-read from the store every few seconds while the page
    is open (the pilot runs in Ray: nothing here drives it). Results passes
    ``rerun_page_when_finished`` so its figures follow once the run ends."""
    run, state = data.live_run(run_id)
    if run.status.finished and rerun_page_when_finished:
        data.clear_queries()
        st.rerun(scope="app")
    n = len(run.variants)
    done = sum(v.status == Status.DONE for v in run.variants)
    # the pilot's own fraction when its process has said (interleaved variants finish
    # together, at the end), else the variants done
    said = run.progress.fraction if run.progress and run.status == Status.RUNNING else None
    st.progress(said if said is not None else (done / n if n else 0.0),
                text=f"Pilot #{run.id}: {state}")
    if not run.status.finished:
        if text := now_measuring(run):
            st.caption(ui.escape_md(text))
        return
    if run.status == Status.FAILED:  # engine.pilot.runner.pilot_outcome says which and why
        st.error(ui.escape_md(f"Pilot #{run.id} failed, stored as such. {run.error}"))
    elif run.status == Status.PARTIAL:
        st.warning(ui.escape_md(f"Pilot #{run.id} is partial: {run.error} Each reason is "
                                "also on the Results page."))
    elif run.status in (Status.INTERRUPTED, Status.CANCELLED):
        st.warning(ui.escape_md(f"Pilot #{run.id} was {run.status}: {run.error} Results "
                                "resumes it."))
    if run.status in (Status.DONE, Status.PARTIAL):
        st.success(f"Results stored as run #{run.id}.")
    st.page_link(nav.page("results"), label=f"Open results of run #{run.id}",
                  query_params={"run": str(run.id)}, icon=":material/bar_chart:")
