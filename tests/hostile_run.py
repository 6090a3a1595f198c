"""A stored run whose user text is hostile: a formula in a prompt and an output, escape codes
in names. Built through the real Store (no model), for the dashboard, CLI and browser tests."""
from __future__ import annotations

import json

from engine.core.domain import RequestResult, VariantMeasurements
from engine.ingest.logs import parse_log
from engine.specs.pilot import PilotSpec, VariantSpec
from engine.store.store import Store

HYPERLINK = '=HYPERLINK("http://x","y")'
RED = "\x1b[31mred\x1b[0m"
HOSTILE_LOG = b"".join(json.dumps(row).encode() + b"\n" for row in [
    {"prompt": HYPERLINK, "reference": "@SUM(1+1)"},
    {"prompt": "What is 2 + 2?", "reference": "4"},
])


def hostile_run(store: Store) -> int:
    """A done run of two variants over the hostile log; the outputs hold the formula."""
    workload = store.add_workload(f"workload {RED}", f"{RED}.jsonl", HOSTILE_LOG,
                                  parse_log(HOSTILE_LOG, "hostile.jsonl"))
    spec = PilotSpec(name=f"run {RED}", workload_id=workload.id,
                     variants=(VariantSpec(name="baseline", model="m"),
                               VariantSpec(name="+1+1 variant", model="m")))
    data = spec.model_dump(mode="json")
    run = store.create_run(workload.id, spec.name, data, data["variants"])
    for v in run.variants:
        results = [RequestResult(request_index=i, output_text=out, prompt_tokens_logged=None,
                                 prompt_tokens_original=5, prompt_tokens_sent=5,
                                 output_tokens=3, ttft_s=0.1, latency_s=0.2)
                   for i, out in enumerate([HYPERLINK, "4"])]
        store.finish_variant(v.id, results, VariantMeasurements(
            wall_s=0.4, throughput_tok_s=15.0, load_s=0.1, device="cpu"))
    store.set_run_status(run.id, "done")
    return run.id
