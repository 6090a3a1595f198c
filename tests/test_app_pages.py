"""Dashboard pages through Streamlit's AppTest: real Streamlit, real SQLite, real engine.

Each test points ROILAB_DB_URL at its own SQLite file. Tests marked ``slow`` run the
embedded model (SmolLM2-135M) for a few requests with a few new tokens.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import streamlit as st
from conftest import make_settings
from streamlit.testing.v1 import AppTest

from app import ui
from engine.business.playbook import workload_playbook
from engine.cli.main import main
from engine.core.settings import Settings
from engine.ingest.logs import parse_log
from engine.pilot.runner import run_pilot
from engine.specs.pilot import GenerationSettings, PilotSpec, QuantizeWeights, VariantSpec
from engine.store.store import Store

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds per script run: the first import of transformers is slow on 2 cores
XSS = "<script>alert(1)</script> and **bold** and [link](http://x)"

GOOD_LOG = b"\n".join(json.dumps(row).encode() for row in [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}],
     "reference": "Paris"},
    {"prompt": "Name a primary colour.", "reference": "red"},
    {"messages": [{"role": "robot", "content": "hi"}]},  # line 3: bad role
]) + b"\n"
PILOT_LOG = b"\n".join(json.dumps(row).encode() for row in [
    {"prompt": f"Repeat exactly: {XSS}", "reference": "bold"},
    {"prompt": "What is the capital of France? Answer in one word.", "reference": "Paris"},
    {"prompt": "What is 2 + 2? Answer with a number.", "reference": "4"},
]) + b"\n"


def _use(settings: Settings, monkeypatch) -> Settings:
    """Point the app (which reads ROILAB_* through get_settings) at these settings."""
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    return settings


@pytest.fixture
def env(settings, monkeypatch) -> Settings:
    """An empty store and data dir, without the model (prompts counted in words)."""
    return _use(settings, monkeypatch)


@pytest.fixture
def model_env(model_settings, monkeypatch) -> Settings:
    """An empty store and data dir that shares the prepared embedded model."""
    return _use(model_settings, monkeypatch)


def page(name: str, **query: str) -> AppTest:
    """AppTest of one page's render(), the way the router calls it."""
    at = AppTest.from_string(f"from app.views import {name}\n{name}.render()",
                             default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _store(settings: Settings) -> Store:
    return Store(settings.resolved_db_url())


def _frame_with(at: AppTest, column: str):
    """The first st.dataframe shown that has this column (dataframes carry no key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _dollars(cells) -> list[float]:
    """"$0.03908" cells of a readable table back to numbers."""
    return [float(c.replace("$", "").replace(",", "")) for c in cells]


def _texts(at: AppTest) -> list[str]:
    return [e.value for e in at.text]


# ---- router, overview, hardware ------------------------------------------------------
def test_router_opens_overview(env):
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "roilab"


def test_overview_with_empty_store(env):
    at = page("overview")
    assert not at.exception
    assert "Nothing stored yet" in at.info[0].value


def test_hardware_page_shows_prices_with_sources(env):
    at = page("hardware")
    table = at.dataframe[0].value
    assert {"$/hour", "source", "prices as of"} <= set(table.columns)
    prices = dict(zip(table.key, table["$/hour"], strict=True))
    assert prices["cpu-c7i-large"] == "$0.08925"  # as stored and priced, not 0.0892
    assert "built-in prices as of 2025-01 to 2025-10" in at.caption[0].value


# ---- upload --------------------------------------------------------------------------
def test_upload_valid_file_reports_and_stores_raw_bytes(env):
    at = page("upload")
    at.file_uploader[0].upload("mylog.jsonl", GOOD_LOG, "application/json")
    at.text_input[0].input("my workload")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and not at.error
    # 1 of 3 rows rejected is over engine.ingest.review.REJECTED_WARN_FRACTION: a warning
    assert "Stored workload \\#1, but 1 of 3 rows was rejected" in at.warning[0].value
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Format"] in ("chat_jsonl", "prompt_jsonl")
    assert metrics["Valid requests"] == "2" and metrics["Invalid rows"] == "1"
    issues = at.dataframe[0].value
    assert list(issues.line) == [3] and "role" in issues.field[0]
    assert at.get("plotly_chart"), "prompt-length histogram missing"
    [workload] = _store(env).list_workloads()
    assert workload.name == "my workload"
    assert _store(env).get_raw_upload(workload.id) == GOOD_LOG  # byte for byte


def test_upload_page_states_the_upload_size_limit(env):
    at = page("upload")
    limit = re.search(r"^maxUploadSize = (\d+)", (REPO / ".streamlit" / "config.toml")
                      .read_text(), re.M).group(1)
    caption = at.caption[0].value
    assert f"Files up to {limit} MB" in caption and "roilab ingest" in caption


@pytest.mark.parametrize("filename,raw", [
    ("empty.jsonl", b""),
    ("binary.jsonl", b"\x00\x01\x02garbage"),
    ("noprompt.csv", b"foo,bar\n1,2\n"),
])
def test_upload_unusable_file_shows_error_and_stores_nothing(env, filename, raw):
    at = page("upload")
    at.file_uploader[0].upload(filename, raw, "text/plain")
    at.button[0].click().run()
    assert not at.exception
    assert filename.replace(".", "\\.") in at.error[0].value  # message, escaped markdown
    assert not at.success
    assert _store(env).list_workloads() == []


@pytest.mark.slow
def test_upload_counts_tokens_with_the_embedded_tokenizer(model_env):
    at = page("upload")
    at.file_uploader[0].upload("mylog.jsonl", GOOD_LOG, "application/json")
    at.button[0].click().run()
    assert not at.exception
    stats = _frame_with(at, "tokens")
    assert stats["tokens"]["max"] > 0
    assert "Prompt length (tokens)" in str(at.get("plotly_chart")[0].proto.spec)
    # the input side (issue 21): the stored shared-prefix split, in words under the chart
    from app.ui import escape_md
    from engine.ingest.stats import prefix_text

    [w] = Store(model_env.resolved_db_url()).list_workloads()
    prefix = Store(model_env.resolved_db_url()).workload_stats(w.id)["prefix"]
    said = [m.value for m in at.markdown if m.value.startswith("Input side")]
    assert said == [escape_md(prefix_text(prefix))]
    assert prefix["n"] == w.n_requests and prefix["of"] == w.n_requests


def test_upload_bundled_sample(env):
    at = page("upload")
    at.selectbox(key="upload.sample").select("ticket_classification.csv")
    at.button(key="upload.load_sample").click().run()
    assert not at.exception and not at.error
    [workload] = _store(env).list_workloads()
    assert workload.format == "csv" and workload.n_requests > 0
    raw = (REPO / "data" / "samples" / "ticket_classification.csv").read_bytes()
    assert _store(env).get_raw_upload(workload.id) == raw


# ---- run pilot -----------------------------------------------------------------------
def test_run_pilot_without_workload_points_to_upload(env):
    at = page("run_pilot")
    assert "Upload a request log first" in at.info[0].value


def test_run_pilot_form_renders_defaults(env):
    _store(env).add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    at = page("run_pilot")
    assert not at.exception
    numbers = {n.label: n.value for n in at.number_input}
    assert numbers["Max requests"] == 12 and numbers["Max new tokens"] == 48
    assert numbers["Batch size"] == 8 and numbers["$/hour"] is None  # None = catalog price
    assert at.text_input[1].value == "embedded:smollm2-135m-instruct"
    # baseline, int8 (transformers), FP8 weights and FP8 KV cache (vLLM), LLMLingua, prefix
    # caching and n-gram speculative decoding (vLLM)
    assert [c.value for c in at.checkbox] == [True, True, True, False, True, False, False]
    assert at.checkbox[0].disabled  # the baseline always runs
    boxes = {s.label: s.value for s in at.selectbox}
    assert boxes["Serving backend"] == "transformers" and boxes["dtype"] == "auto"


@pytest.mark.parametrize("extra, needle", [
    ('[{"name": "x", "techniques": [{"kind": "prune", "sparsity": 1.5}]', "invalid JSON"),
    ('{"name": "x"}', "must be a JSON list"),
    ('[{"name": "x", "techniques": [{"kind": "magic"}]}]', "kind"),
])
def test_run_pilot_refuses_bad_extra_variants_and_stores_nothing(env, extra, needle):
    _store(env).add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    at = page("run_pilot")
    at.text_area[0].set_value(extra)
    at.button[0].click().run()
    assert not at.exception
    assert needle in at.error[0].value.replace("\\", "")
    assert _store(env).list_runs() == []


def _submitted_and_finished(at: AppTest, settings: Settings, run_id: int = 1) -> AppTest:
    """The Run pilot page after its form was submitted: the pilot was handed to Ray (it runs
    in a Ray worker, not in the page); wait for it in the store, then run the page again, as
    its watch fragment does every few seconds."""
    from test_jobs import wait_finished

    assert not at.exception
    said = at.success[0].value.replace("\\", "")
    assert said.startswith(f"Pilot #{run_id} (") and "handed to Ray at 127.0.0.1:" in said
    assert "close this tab or reload and it goes on" in said
    wait_finished(_store(settings), run_id)
    return at.run()


@pytest.mark.slow
def test_run_pilot_form_runs_a_real_pilot(model_env, dashboard_ray):
    env = model_env
    _store(env).add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    at = page("run_pilot")
    at.checkbox[4].uncheck()  # no LLMLingua: keep it tiny
    at.number_input[0].set_value(2)  # max requests
    at.number_input[1].set_value(8)  # max new tokens
    next(n for n in at.number_input if n.label == "Minimum seconds per pass").set_value(0.5)
    at = _submitted_and_finished(at.button[0].click().run(timeout=600), env)
    assert not at.exception
    assert "Results stored as run #1" in at.success[-1].value
    assert at.get("progress")[0].proto.text == "Pilot #1: done"
    run = _store(env).get_run(1)
    assert run.status == "done" and [v.name for v in run.variants] == ["baseline", "int8-weights"]
    assert run.spec["max_requests"] == 2 and run.spec["generation"]["max_new_tokens"] == 8
    assert run.spec["measurement"]["repeats"] is None  # "Timed passes" left empty: per device
    assert run.spec["measurement"]["min_pass_s"] == 0.5
    passes = _store(env).get_passes(run.variants[0].id)
    assert passes and passes[0].replays >= 1


# ---- results -------------------------------------------------------------------------
def _failed_run(settings: Settings) -> int:
    """A real run whose only variant fails fast (its model folder does not exist)."""
    store = _store(settings)
    workload = store.add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    spec = PilotSpec(workload_id=workload.id,
                     variants=(VariantSpec(name="**base**", model="/nonexistent/model"),))
    return run_pilot(spec, store, settings).id


def test_results_of_a_failed_run_show_the_reason(env):
    run_id = _failed_run(env)
    at = page("results", run=str(run_id))
    assert not at.exception
    assert at.error[0].value == "Run #1 failed."  # the run, then its variant
    assert ("The baseline '**base**' failed: Refused before the pilot started: Model folder "
            "/nonexistent/model does not exist") in at.code[0].value
    assert "\\*\\*base\\*\\* failed" in at.error[1].value  # variant name escaped
    assert "/nonexistent/model does not exist" in at.code[1].value
    assert not at.get("plotly_chart") and "nothing to chart" in at.info[0].value
    assert _frame_with(at, "$ per 1k requests").status.tolist() == ["failed"]
    # no PDF of n/a figures: the button is replaced by why, and what to do
    assert not at.download_button
    refusal = at.error[-1].value.replace("\\", "")
    assert "Run #1 has no measured baseline" in refusal and "run the pilot again" in refusal


@pytest.mark.slow
def test_results_of_an_interrupted_run_say_so_and_keep_the_finished_variant(model_env):
    store = _store(model_env)
    workload = store.add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=1,
                     generation=GenerationSettings(max_new_tokens=4),
                     variants=(VariantSpec(name="baseline"), VariantSpec(name="second")))

    def ctrl_c_in_second(p) -> None:
        if p.variant == "second":
            raise KeyboardInterrupt("user stopped")

    with pytest.raises(KeyboardInterrupt):
        run_pilot(spec, store, model_env, on_progress=ctrl_c_in_second)
    at = page("results", run="1")
    assert not at.exception
    assert at.warning[0].value.startswith("Run #1 was interrupted")
    assert "Resume runs only the others (as `roilab resume 1`)" in at.warning[0].value
    assert "Interrupted: KeyboardInterrupt: user stopped" in at.code[0].value
    assert _frame_with(at, "$ per 1k requests").status.tolist() == ["done", "failed"]
    assert main(["cancel", "1"]) == 0
    st.cache_data.clear()  # the page's queries are cached for a while
    at = page("results", run="1")
    assert not at.exception
    assert at.warning[0].value.startswith("Run #1 was cancelled")
    assert _frame_with(at, "$ per 1k requests").status.tolist() == ["done", "cancelled"]


@pytest.mark.slow
def test_run_pilot_form_says_a_failed_pilot_failed(env, dashboard_ray):
    _store(env).add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    at = page("run_pilot")
    at.checkbox[1].uncheck()  # the baseline alone, on a model folder that does not exist
    at.checkbox[4].uncheck()
    at.text_input[1].set_value("/nonexistent/model")
    at = _submitted_and_finished(at.button[0].click().run(), env)
    assert not at.exception
    said = at.error[0].value.replace("\\", "")
    assert said.startswith("Pilot #1 failed, stored as such. The baseline 'baseline' failed: "
                           "Refused before the pilot started: Model folder /nonexistent/model "
                           "does not exist")
    assert not at.success  # not "Results stored"
    assert _store(env).get_run(1).status == "failed"


def test_results_with_unknown_run_param_falls_back_to_latest(env):
    _failed_run(env)
    at = page("results", run="99")
    assert not at.exception
    assert "no run 99" in at.warning[0].value
    assert at.query_params["run"] == "1"  # the URL now names the run shown


def test_results_with_empty_store(env):
    at = page("results")
    assert "No runs yet" in at.info[0].value


# ---- results of one real run, shared by the tests below ------------------------------
@pytest.fixture(scope="module")
def pilot_settings(tmp_path_factory, embedded_model_dir) -> Settings:
    """A store holding one real run: baseline + int8 weights on 3 requests, 8 new tokens."""
    settings = make_settings(tmp_path_factory.mktemp("pilot") / "data", embedded_model_dir)
    store = Store(settings.resolved_db_url())
    workload = store.add_workload("xss", "x.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "x.jsonl"))
    model = "embedded:smollm2-135m-instruct"
    spec = PilotSpec(name="tiny", workload_id=workload.id,
                     variants=(VariantSpec(name="baseline", model=model),
                               VariantSpec(name="int8-weights", model=model,
                                           techniques=(QuantizeWeights(bits=8),))),
                     generation=GenerationSettings(max_new_tokens=8, batch_size=8))
    run = run_pilot(spec, store, settings)
    assert run.status == "done" and all(v.status == "done" for v in run.variants)
    return settings


@pytest.fixture
def results_env(pilot_settings, monkeypatch) -> Settings:
    return _use(pilot_settings, monkeypatch)


@pytest.mark.slow
def test_overview_with_a_run(results_env):
    at = page("overview")
    assert not at.exception
    assert "Latest finished run #1" in at.subheader[0].value
    # the run's business case (issue 12): "Monthly cost" alone when nothing moves (issue 19)
    assert at.metric[0].label.split(",")[0] in ("Before / month", "Monthly cost")
    assert list(at.dataframe[0].value.run) == [1]


@pytest.mark.slow
def test_results_shows_charts_and_variant_table(results_env):
    at = page("results", run="1")
    assert not at.exception
    assert len(at.get("plotly_chart")) == 5  # cost, latency, accuracy, speed, memory
    table = _frame_with(at, "$ per 1k requests")
    assert list(table.variant) == ["baseline", "int8-weights"]
    assert {"$ per 1k requests", "p95 latency (s)", "tokens/s", "peak memory (MiB)",
            "error"} <= set(table.columns)
    assert at.json, "technique report / spec JSON missing"
    assert at.download_button[0].proto.label == "Download pilot measurements PDF"


@pytest.mark.slow
def test_results_pdf_is_rendered_from_the_report(results_env):
    from app import data

    pdf = data.pdf_report(data.report(1))
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


@pytest.mark.slow
def test_engine_start_up_is_the_stored_load_in_show_results_and_pdf(results_env, capsys):
    """Issue 18, item 4: each variant's engine start-up, as stored (on the CPU, transformers
    compiles nothing apart: the load itself), in `roilab show`, the Results page's table and
    the pilot PDF; the untimed warm-up beside it."""
    import subprocess

    from engine.pilot.report import build_report
    from engine.reports.pilot_pdf import render_pdf

    store = _store(results_env)
    run = store.get_run(1)
    want = {v.name: f"{v.load_s:.1f}" for v in run.variants}
    warm = {v.name: (v.technique_report.get("measurement", {}).get("warm_up") or {})
            .get("seconds") for v in run.variants}  # None: stored without one
    rep = build_report(store, 1)
    assert [(v.cold_start_s, v.warm_up_s) for v in rep.variants] == \
        [(v.load_s, warm[v.name]) for v in run.variants]

    assert main(["show", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in out if "start_up_s" in line.split())
    col = header.index("start_up_s")
    rows = [r.split() for r in out if len(r.split()) == len(header)]  # the table's rows
    shown = {r[0]: r[col] for r in rows if r[0] in want}
    assert shown == want
    assert any("autoscales" in line for line in out)
    if warm["baseline"] is not None:
        assert any(f"baseline {warm['baseline']:.1f} s" in line for line in out)

    at = page("results", run="1")
    assert not at.exception
    table = _frame_with(at, "engine start-up (s)")
    assert dict(zip(table.variant, table["engine start-up (s)"], strict=True)) == want
    assert any("autoscales" in c.value for c in at.caption)

    text = " ".join(subprocess.run(["pdftotext", "-layout", "-", "-"], input=render_pdf(rep),
                                   capture_output=True, check=True).stdout.decode().split())
    assert "Engine start-up per variant" in text
    for name, s in want.items():
        w = "n/a" if warm[name] is None else f"{warm[name]:.1f}"
        assert f"{name} {s} {s} {w}" in text


@pytest.mark.slow
def test_results_explains_in_plain_text(results_env):
    at = page("results", run="1")
    summary = "\n".join(_texts(at))
    assert "the baseline 'baseline' has a unit cost of" in summary  # no month: the case's
    assert "Price source" in set(_frame_with(at, "assumption").assumption)


@pytest.mark.slow
def test_results_reprices_live(results_env):
    at = page("results", run="1")
    before = _dollars(_frame_with(at, "$ per 1k requests")["$ per 1k requests"])
    price = next(n for n in at.number_input if n.label == "$/hour")
    price.set_value(price.value * 10).run()
    assert not at.exception  # unit costs are $/h over measured throughput: 10x the price
    after = _dollars(_frame_with(at, "$ per 1k requests")["$ per 1k requests"])
    # shown to 4 significant digits, and to the cent from $1 up ($0.1173 -> $1.17)
    assert after == pytest.approx([10 * b for b in before], rel=2e-3, abs=0.005)


@pytest.mark.slow
def test_results_shows_prompts_literally(results_env):
    at = page("results", run="1")
    sbs = _frame_with(at, "variant output")
    assert any(XSS in prompt for prompt in sbs.prompt)
    assert any(XSS in t for t in _texts(at)), "prompt not shown as plain text"
    as_markdown = [*at.markdown, *at.caption, *at.error, *at.warning, *at.info, *at.success]
    rendered = [e.value for e in as_markdown]
    assert not any("<script>" in r or "**bold**" in r for r in rendered)
    assert not at.get("html")


# ---- partial and failed runs, random weights (speed and memory only) -------------------
def _random_weights_run(settings: Settings, *variants: VariantSpec) -> int:
    """A real pilot of random:tiny-llama variants (2 layers: seconds on this CPU)."""
    store = _store(settings)
    workload = store.add_workload("w", "w.jsonl", PILOT_LOG, parse_log(PILOT_LOG, "w.jsonl"))
    spec = PilotSpec(workload_id=workload.id, variants=variants, max_requests=2,
                     generation=GenerationSettings(max_new_tokens=4, batch_size=2))
    return run_pilot(spec, store, settings).id


@pytest.mark.slow
def test_pages_label_a_partial_run_and_its_random_weights(model_env):
    tiny = "random:tiny-llama"
    run_id = _random_weights_run(model_env, VariantSpec(name="bf16", model=tiny),
                                 VariantSpec(name="fp8", model=tiny),
                                 VariantSpec(name="gpu-only", model=tiny, device="cuda"))
    assert _store(model_env).get_run(run_id).status == "partial"
    label = "bf16, fp8: random weights: speed and memory only; accuracy not measured"

    at = page("overview")
    assert not at.exception
    assert "Latest finished run #1" in at.subheader[0].value  # partial counts as finished
    # the partial run is the first caveat line, naming the variant (once: no second box)
    assert at.warning[0].value.replace("\\", "").startswith(
        "Partial run: 'gpu-only' was not measured (refused before the pilot started")
    assert sum("Partial run" in w.value for w in at.warning) == 1
    # the random weights are one caveat line beside the answer (issue 19)
    assert any("Random weights (bf16, fp8): speed and memory only" in w.value.replace("\\", "")
               for w in at.warning)
    assert list(at.dataframe[0].value.status) == ["partial"]

    at = page("results", run=str(run_id))
    assert not at.exception
    assert at.warning[0].value.startswith("Run #1 is partial")
    assert any(label in i.value.replace("\\", "") for i in at.info)
    table = _frame_with(at, "measured")
    assert list(table.measured) == ["speed and memory only"] * 2 + ["speed, memory and accuracy"]
    assert at.download_button[0].proto.label == "Download pilot measurements PDF"  # baseline ok

    at = page("business_case", run=str(run_id))
    assert not at.exception
    assert not at.error  # no variant to recommend yet: a neutral box, not an error
    assert "every measured variant has random weights" in at.info[0].value.replace("\\", "")
    texts = "\n".join(_texts(at))
    assert "every measured variant has random weights (bf16, fp8)" in texts
    assert "'bf16' (random weights: speed and memory only; accuracy not measured)" in texts
    assert "'fp8' would save" in texts and "if its quality holds" in texts
    assert "roilab pilot --workload 1 --spec pilot.json" in texts
    table = next(d.value for d in at.dataframe if "Figures" in d.value.columns)
    assert list(table.Accuracy) == ["not measured", "not measured", "-"]  # gpu-only failed
    assert at.download_button[0].proto.label == "Download business case PDF"


@pytest.mark.slow
def test_business_case_refuses_a_run_whose_baseline_failed(model_env):
    run_id = _random_weights_run(model_env, VariantSpec(name="bf16", model="/nonexistent/ckpt"),
                                 VariantSpec(name="fp8", model="random:tiny-llama"))
    at = page("business_case", run=str(run_id))
    assert not at.exception
    said = at.error[0].value.replace("\\", "")
    assert said.startswith("Run #1 has no measured baseline, so there is no business case to "
                           "report: its baseline 'bf16'")
    assert "Model folder /nonexistent/ckpt does not exist" in said
    assert not at.metric and not at.download_button  # no n/a figures, no PDF


# ---- playbook (issue 21) ---------------------------------------------------------------
def _step_lines(at: AppTest) -> list[str]:
    """The Playbook page's five steps, as markdown."""
    return [m.value for m in at.markdown if re.match(r":material/\w+: \*\*\d\. ", m.value)]


@pytest.mark.slow
def test_playbook_walks_a_real_run_to_its_business_case_on_the_page_and_the_cli(results_env,
                                                                               capsys):
    """The module's real run (baseline + int8 on the embedded model): every step is done,
    each names the run and links to where it is shown; the techniques carry their reasons;
    `roilab playbook 1` says the same."""
    at = page("playbook", workload="1")
    assert not at.exception
    steps = _step_lines(at)
    assert len(steps) == 5 and all("*done*" in s for s in steps), steps
    assert "run \\#1\\: int8\\-weights" in steps[2]
    assert re.search(r"int8\\-weights \d\\\.\d\dx tokens/s", steps[3]), steps[3]
    links = at.get("page_link")
    assert [link.proto.label for link in links] == [
        "Open the workload's profile", "Open the results", "Open the results",
        "Open the results", "Open the business case"]
    assert links[0].proto.query_string == "workload=1"  # the Upload page shows that one
    assert all(link.proto.query_string == "run=1" for link in links[1:])
    # the claims scorecard of run 1 (engine.business.claims), a static table: its sentences wrap
    card = at.table[0].value.reset_index()  # cells escaped for markdown (app.ui.table)
    assert len(card) == 5 and set(card.verdict) <= {"held", "not held", "not tested"}
    ptq = card.iloc[0]  # int8 weights: 4x fewer weight bytes is well past the claim's 2x
    assert (ptq.claim, ptq.verdict, ptq.variant) == (
        ui.escape_md("Post-training quantization gives 2-4x"), "held", ui.escape_md("int8-weights"))
    assert card.verdict[2] == "not tested" and ui.escape_md("--variants llmlingua") in card.note[2]
    techniques = [m.value for m in at.markdown if m.value.startswith((":material/check:",
                                                                        ":material/remove:"))]
    assert [re.search(r"\*\*(.+?)\*\*", t).group(1) for t in techniques] == [
        "8\\-bit / FP8 / 4\\-bit weights", "Prompt compression \\(LLMLingua\\)",
        "Prefix caching", "FP8 / 4\\-bit KV cache", "Distillation"]
    book = workload_playbook(Store(results_env.resolved_db_url()), 1)
    weights = book.suggestions[0].reason
    assert weights.startswith("decoding is ") and "of the baseline's median latency" in weights
    assert ui.escape_md(weights) in techniques[0]
    assert at.query_params["workload"] == "1"

    assert main(["playbook", "1"]) == 0
    out = capsys.readouterr().out
    assert "Playbook of workload 1 'xss" in out
    for i, title in enumerate(("Workload profile", "Baseline measured", "Techniques chosen",
                               "After measured", "In the portfolio"), 1):
        assert re.search(rf"^  {i}\. {title} +done +", out, re.M), out
    assert "run #1: int8-weights" in out and weights in out
    assert "Claims scorecard (run #1):" in out
    assert re.search(r"^  held +Post-training quantization gives 2-4x: ", out, re.M), out


@pytest.mark.slow
def test_playbook_run_runs_the_suggested_pilot_with_the_flags_given(model_settings, monkeypatch,
                                                                    capsys):
    """`roilab playbook W --run` runs the suggested variants as `roilab pilot` would, with the
    pilot flags given after it, and prints that line whole (a random-weights model: seconds)."""
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    assert main(["ingest", str(model_settings.samples_dir / "support_chat.jsonl")]) == 0
    store = Store(model_settings.resolved_db_url())
    suggested = workload_playbook(store, 1).suggested
    assert suggested  # a short chat log: the weights, the playbook's first technique
    capsys.readouterr()
    flags = ["--model", "random:tiny-llama", "--max-requests", "2", "--max-new-tokens", "4",
             "--no-interleave", "--price", "1.5", "--in-process"]
    assert main(["playbook", "1", "--run", *flags]) == 0
    out = capsys.readouterr().out
    assert (f"Running the suggested pilot: roilab pilot --workload 1 --variants "
            f"{','.join(suggested)} {' '.join(flags)}\n") in out, out
    run = store.get_run(1)
    assert (run.name, run.status, len(run.variants)) == ("playbook", "done", 1 + len(suggested))
    assert {v.spec["model"] for v in run.variants} == {"random:tiny-llama"}
    assert run.spec["max_requests"] == 2 and not run.spec["measurement"]["interleave"]
