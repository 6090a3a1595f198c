"""Engine start-up as a figure (issue 18, item 4): each variant's cold start, from what its
run stored, in `roilab show`, the Results page, the pilot PDF and bench/bench_pilot_time.py.

The pure function over stored variants by hand; then a stored run of two variants sharing
one vLLM engine (stored as the runner stores one: no engine runs here) read back by every
surface. The real CPU pilot's figure is checked in test_app_pages (its fixture's run).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_app_pages import _use, page

from engine.cli.main import main
from engine.core.domain import (
    LogRequest,
    ParsedLog,
    RequestResult,
    TimedPass,
    VariantMeasurements,
    VariantRun,
)
from engine.pilot.report import build_report
from engine.pilot.startup import cold_start, cold_start_text, cold_starts
from engine.reports.pilot_pdf import render_pdf
from engine.store.store import Store

REPO = Path(__file__).resolve().parents[1]
ARGS = {"dtype": "float16", "max_model_len": 2048}


def _v(name: str, load_s: float | None, report: dict) -> VariantRun:
    return VariantRun(id=0, run_id=0, name=name, spec={}, status="done", load_s=load_s,
                      technique_report=report)


def test_cold_start_is_load_plus_what_the_backend_compiled_apart():
    # transformers with torch.compile: 4.0 s load + 9.5 s compile + 1.5 s scorer = 15.0 s;
    # the 2.25 s warm-up rounds are kept apart
    v = _v("lingua", 4.0, {"serving": {"warm_up_s": 9.5},
                           "compress_prompt": {"scorer_load_s": 1.5},
                           "measurement": {"warm_up": {"seconds": 2.25, "batches": 2}}})
    c = cold_start(v)
    assert (c.seconds, c.load_s, c.compile_s, c.scorer_load_s, c.warm_up_s, c.reused) == \
        (15.0, 4.0, 9.5, 1.5, 2.25, False)
    assert cold_start_text(c.seconds) == "15.0"
    # no compile, no warm-up stored (a run stored before either): the load alone
    plain = cold_start(_v("baseline", 3.04, {}))
    assert (plain.seconds, plain.compile_s, plain.warm_up_s) == (3.04, None, None)
    assert cold_start_text(plain.seconds) == "3.0"
    assert cold_start_text(cold_start(_v("failed", None, {})).seconds) == "n/a"


def test_a_reused_vllm_engine_names_whose_it_is_instead_of_zero():
    first = _v("baseline", 41.0, {"serving": {"engine_args": ARGS, "engine_reused": False}})
    other = _v("fp8", 52.0, {"serving": {"engine_args": {**ARGS, "quantization": "fp8"},
                                         "engine_reused": False}})
    again = _v("baseline-again", 41.0, {"serving": {"engine_args": ARGS, "engine_reused": True}})
    starts = cold_starts([first, other, again])
    assert [s.seconds for s in starts] == [41.0, 52.0, None]
    assert (starts[2].reused, starts[2].shared_with) == (True, "baseline")
    assert cold_start_text(None, True, "baseline") == "shared with baseline"
    # started before this run (another run in the same process): reused, no name
    alone = cold_starts([again])[0]
    assert (alone.reused, alone.shared_with) == (True, None)
    assert cold_start_text(alone.seconds, alone.reused, alone.shared_with) == "reused"


def _shared_engine_run(store: Store) -> int:
    """Two variants on one vLLM engine (the second reused it), each with two timed passes;
    the baseline measured again at the end. Start 41.0 s; warm-ups 3.0 s and 2.0 s."""
    reqs = tuple(LogRequest(line=i + 1, messages=({"role": "user", "content": f"q{i}"},))
                 for i in range(2))
    w = store.add_workload("support", "s.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), 2))
    run = store.create_run(w.id, "shared engine", {"workload_id": w.id, "generation":
                           {"batch_size": 2}, "cost": {"hardware": "nvidia-a100-80gb"}},
                           [{"name": "baseline", "backend": "vllm"},
                            {"name": "same-engine", "backend": "vllm"}])
    for v, reused, warm in zip(run.variants, (False, True), (3.0, 2.0), strict=True):
        results = [RequestResult(request_index=i, output_text="o", prompt_tokens_logged=None,
                                 prompt_tokens_original=10, prompt_tokens_sent=10,
                                 output_tokens=20, ttft_s=0.1, latency_s=1.0) for i in range(2)]
        report = {"serving": {"engine_args": ARGS, "engine_start_s": 41.0,
                              "engine_reused": reused},
                  "measurement": {"warm_up": {"seconds": warm, "batches": 1}}}
        passes = tuple(TimedPass(pass_index=k, wall_s=wall, throughput_tok_s=40 / wall,
                                 output_tokens=40) for k, wall in enumerate((1.0, 1.5)))
        store.finish_variant(v.id, results, VariantMeasurements(
            load_s=41.0, wall_s=1.25, throughput_tok_s=32.0, device="cuda:0",
            technique_report=report, passes=passes))
    store.add_passes(run.variants[0].id, [TimedPass(pass_index=0, role="baseline_end",
                                                    wall_s=1.2, throughput_tok_s=33.3,
                                                    output_tokens=40)])
    store.set_run_status(run.id, "done")
    return run.id


def _pdf_text(pdf: bytes) -> str:
    out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                         check=True).stdout.decode()
    return " ".join(out.split())


def test_a_shared_engine_reads_shared_on_every_surface(settings, monkeypatch, capsys):
    env = _use(settings, monkeypatch)
    store = Store(env.resolved_db_url())
    run_id = _shared_engine_run(store)
    rep = build_report(store, run_id)
    base, same = rep.variants
    assert (base.cold_start_s, base.warm_up_s, base.engine_reused) == (41.0, 3.0, False)
    assert (same.cold_start_s, same.engine_reused, same.engine_shared_with) == \
        (None, True, "baseline")

    assert main(["show", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert "start_up_s" in out and "autoscales" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "41.0" in rows["baseline"] and "shared with baseline" in rows["same-engine"]
    assert "Untimed warm-up before the timed passes: baseline 3.0 s, same-engine 2.0 s." in out

    at = page("results", run=str(run_id))
    assert not at.exception
    table = next(d.value for d in at.dataframe if "engine start-up (s)" in d.value.columns)
    assert list(table["engine start-up (s)"]) == ["41.0", "shared with baseline"]
    assert any("autoscales" in c.value for c in at.caption)

    text = _pdf_text(render_pdf(rep))
    assert "Engine start-up per variant" in text
    assert "baseline 41.0 41.0 3.0" in text and "same-engine shared with baseline - 2.0" in text


def test_bench_pilot_time_splits_the_stored_wall_time(settings):
    url = settings.resolved_db_url()
    run_id = _shared_engine_run(Store(url))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_pilot_time.py"),
                          str(run_id), "--db-url", url], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    rows = [line.split("  ") for line in out.splitlines()[1:4]]
    # start-up 41 + 0 (shared), warm-up 3 + 2, timed (1.0 + 1.5) each, re-measure 1.2
    assert [[c.strip() for c in r if c.strip()] for r in rows] == [
        ["baseline", "41.0", "3.0", "2.5", "1.2"],
        ["same-engine", "0 (shared with baseline)", "2.0", "2.5", "0.0"],
        ["all variants", "41.0", "5.0", "5.0", "1.2"]]
    assert out.splitlines()[0].split()[:3] == ["variant", "start-up", "(s)"]
    run = Store(url).get_run(run_id)
    wall = (run.finished_at - run.created_at).total_seconds()
    assert f"Run wall time {wall:.1f} s: 52.2 s above, {wall - 52.2:.1f} s other" in out
