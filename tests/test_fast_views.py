"""Fast views (issue 12 item 7): a workload's prompt statistics are worked out once at ingest
and stored; pages read them (and bounded slices of requests), never every request.

Speed itself is measured by bench/bench_views.py, not here: these tests check that the
stored figures are the ones the on-the-fly computation gives, that old workloads get theirs,
and that the pages show them without reading or counting every request.
"""
from __future__ import annotations

import json
from argparse import Namespace

import hypothesis
import pytest
import streamlit as st
from hypothesis import strategies
from streamlit.testing.v1 import AppTest

from engine.cli.workloads import embedded_token_counter, ingest_log
from engine.core.settings import Settings
from engine.ingest.logs import parse_log
from engine.ingest.stats import histogram, token_stats, tokenizer_counter, workload_stats
from engine.store import store as store_module
from engine.store.store import Store

TIMEOUT = 120
LOG = b"\n".join(json.dumps(row).encode() for row in [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris."}], "reference": "Paris"},
    {"prompt": "Name a primary colour, please, and nothing else at all."},
    {"prompt": "2 + 2 = ?", "reference": "4"},
    {"prompt": "Unicode: naïve café ✓ 東京", "reference": "ok"},
]) + b"\n"


def _words(texts):
    return [len(t.split()) for t in texts]


def _without_extras(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("histograms", "version", "prefix")}


# ---- the statistics ------------------------------------------------------------------
def test_histogram_bins_cover_every_value_in_at_most_30_equal_bins():
    assert histogram([]) == {"start": 0, "width": 1, "counts": []}
    assert histogram([5, 5, 7]) == {"start": 5, "width": 1, "counts": [2, 0, 1]}
    values = list(range(3, 1000)) + [1000] * 5
    h = histogram(values)
    assert h["start"] == 3 and len(h["counts"]) <= 30 and sum(h["counts"]) == len(values)
    assert h["start"] + h["width"] * len(h["counts"]) > 1000  # the maximum is in the last bin
    assert h["counts"][-1] >= 5


def test_workload_stats_are_token_stats_plus_histograms():
    requests = parse_log(LOG, "l.jsonl").requests
    stats = workload_stats(requests, count_tokens=_words)
    assert _without_extras(stats) == token_stats(requests, count_tokens=lambda t: len(t.split()))
    assert stats["with_reference"] == 3 and stats["with_logged_output"] == 1
    assert sum(stats["histograms"]["words"]["counts"]) == len(requests)
    assert stats["histograms"]["tokens"] == stats["histograms"]["words"]  # same counter here
    assert "tokens" not in workload_stats(requests)["histograms"]


def test_stats_are_stored_at_ingest_and_read_without_the_requests(store, monkeypatch):
    parsed = parse_log(LOG, "l.jsonl")
    w = store.add_workload("w", "l.jsonl", LOG, parsed, count_tokens=_words)
    monkeypatch.setattr(Store, "get_requests", lambda *a, **k: pytest.fail("requests read"))
    monkeypatch.setattr(store_module, "workload_stats", lambda *a: pytest.fail("recounted"))
    stored = store.workload_stats(w.id, count_tokens=_words)
    assert stored == json.loads(json.dumps(workload_stats(parsed.requests, _words)))


def test_stats_without_tokens_get_them_once_the_tokenizer_is_there(store):
    parsed = parse_log(LOG, "l.jsonl")
    w = store.add_workload("w", "l.jsonl", LOG, parsed)  # no model at ingest
    assert "prompt_tokens" not in store.workload_stats(w.id)
    with_tokens = store.workload_stats(w.id, count_tokens=_words)  # worked out and saved
    assert with_tokens["prompt_tokens"] == with_tokens["prompt_words"]
    assert store.workload_stats(w.id) == with_tokens


def test_an_old_workload_without_stats_gets_them_on_first_read(store):
    parsed = parse_log(LOG, "l.jsonl")
    w = store.add_workload("w", "l.jsonl", LOG, parsed)
    with store.engine.begin() as conn:  # as revision 0005 leaves a workload stored before it
        conn.exec_driver_sql("UPDATE workloads SET stats_json = NULL")
    assert store.workload_stats(w.id) == json.loads(json.dumps(workload_stats(parsed.requests)))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT stats_json FROM workloads").scalar() is not None


@pytest.mark.slow
def test_tokens_at_ingest_equal_the_dashboards_former_on_the_fly_count(model_settings):
    """The stored token counts are those app/data.py counted on every render before: the
    Hugging Face tokenizer's encode(text, add_special_tokens=False) over each prompt."""
    from transformers import AutoTokenizer

    from engine.models.prep import embedded_model_dir

    folder = embedded_model_dir(model_settings)
    tok = AutoTokenizer.from_pretrained(folder)
    parsed = parse_log(LOG, "l.jsonl")
    expected = token_stats(parsed.requests,
                           lambda t: len(tok.encode(t, add_special_tokens=False)))
    store = Store(model_settings.resolved_db_url())
    counter = embedded_token_counter(model_settings)
    assert counter is not None
    w = store.add_workload("w", "l.jsonl", LOG, parsed, count_tokens=counter)
    assert _without_extras(store.workload_stats(w.id)) == json.loads(json.dumps(expected))
    assert counter(["Hello world"]) == tokenizer_counter(folder / "tokenizer.json")(
        ["Hello world"]) == [len(tok.encode("Hello world", add_special_tokens=False))]


def test_roilab_ingest_stores_the_statistics(settings, tmp_path, capsys):
    log = tmp_path / "l.jsonl"
    log.write_bytes(LOG)
    workload_id = ingest_log(Namespace(log=str(log), name="w"), settings)
    stats = Store(settings.resolved_db_url()).workload_stats(workload_id)
    assert stats["n"] == 4 and "prompt_tokens" not in stats  # no model in this data dir
    assert embedded_token_counter(settings) is None


# ---- the Upload page -----------------------------------------------------------------
def _use(settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()


def test_upload_page_shows_the_stored_stats_without_reading_every_request(settings,
                                                                         monkeypatch):
    _use(settings, monkeypatch)
    store = Store(settings.resolved_db_url())
    w = store.add_workload("w", "l.jsonl", LOG, parse_log(LOG, "l.jsonl"))
    with store.engine.begin() as conn:  # figures only the stored row can have given
        stored = store.workload_stats(w.id) | {"with_reference": 1234, "n": 5678}
        conn.exec_driver_sql("UPDATE workloads SET stats_json = ?", (json.dumps(stored),))
    real = Store.get_requests

    def bounded(self, workload_id, limit=None):
        assert limit is not None, "a page read every request of a workload"
        return real(self, workload_id, limit=limit)

    monkeypatch.setattr(Store, "get_requests", bounded)
    monkeypatch.setattr(store_module, "workload_stats", lambda *a: pytest.fail("recounted"))
    at = AppTest.from_string("from app.views import upload\nupload.render()",
                             default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "1,234 of 5,678 requests have a reference answer" in [t.value for t in at.text][0]
    words = next(d.value for d in at.dataframe if "words" in d.value.columns)
    assert words["words"]["max"] == stored["prompt_words"]["max"]
    [chart] = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert "Prompt length (words)" in str(spec["layout"]["title"])
    assert sum(spec["data"][0]["y"]) == 4  # the stored histogram's counts


# ---- bounded reads of requests --------------------------------------------------------
def _result(index: int):
    from engine.core.domain import RequestResult

    return RequestResult(request_index=index, output_text=f"out {index}",
                         prompt_tokens_logged=None, prompt_tokens_original=5,
                         prompt_tokens_sent=5, output_tokens=2, ttft_s=0.1, latency_s=0.2)


def test_get_requests_reads_all_the_first_or_those_at_given_indices(store):
    parsed = parse_log(LOG, "l.jsonl")
    w = store.add_workload("w", "l.jsonl", LOG, parsed)
    everything = store.get_requests(w.id)
    assert [r.request for r in everything] == list(parsed.requests)  # read back unchanged
    assert [r.index for r in everything] == [0, 1, 2, 3]
    assert store.get_requests(w.id, limit=2) == everything[:2]
    assert store.get_requests(w.id, indices=[3, 1, 3]) == [everything[1], everything[3]]
    assert store.get_requests(w.id, indices=[]) == []


def test_results_page_reads_only_the_runs_requests(settings, monkeypatch):
    """A run stored as the runner stores one (its spec, measured variants, per-request
    results): the Results page's side-by-side table shows its requests without reading the
    rest of the workload."""
    from engine.core.domain import Status, VariantMeasurements
    from engine.pilot.runner import create_pilot_run
    from engine.specs.pilot import PilotSpec, QuantizeWeights, VariantSpec

    _use(settings, monkeypatch)
    store = Store(settings.resolved_db_url())
    w = store.add_workload("w", "l.jsonl", LOG, parse_log(LOG, "l.jsonl"))
    spec = PilotSpec(workload_id=w.id, max_requests=2, variants=(
        VariantSpec(name="baseline"),
        VariantSpec(name="int8", techniques=(QuantizeWeights(bits=8),))))
    run = create_pilot_run(spec, store)
    for v in run.variants:
        store.finish_variant(v.id, [_result(0), _result(1)],
                             VariantMeasurements(wall_s=1.0, throughput_tok_s=4.0,
                                                 peak_mem_bytes=10**8, weight_bytes=10**8))
    store.set_run_status(run.id, Status.DONE)
    real = Store.get_requests

    def bounded(self, workload_id, limit=None, indices=None):
        assert limit is not None or indices is not None, "read every request of a workload"
        return real(self, workload_id, limit=limit, indices=indices)

    monkeypatch.setattr(Store, "get_requests", bounded)
    at = AppTest.from_string("from app.views import results\nresults.render()",
                             default_timeout=TIMEOUT)
    at.query_params["run"] = str(run.id)
    at.run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "variant output" in d.value.columns)
    assert list(table.request) == ["1", "2"] and "capital of France" in table.prompt[0]


@pytest.mark.slow
def test_upload_page_shows_stored_token_counts_without_loading_the_tokenizer(model_settings,
                                                                           monkeypatch):
    import app.data

    _use(model_settings, monkeypatch)
    store = Store(model_settings.resolved_db_url())
    w = store.add_workload("w", "l.jsonl", LOG, parse_log(LOG, "l.jsonl"),
                           count_tokens=embedded_token_counter(model_settings))
    app.data._counter.clear()
    monkeypatch.setattr(app.data, "tokenizer_counter", lambda *a: pytest.fail("tokenizer"))
    at = AppTest.from_string("from app.views import upload\nupload.render()",
                             default_timeout=TIMEOUT).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "tokens" in d.value.columns)
    assert table["tokens"]["max"] == store.workload_stats(w.id)["prompt_tokens"]["max"]
    assert "Prompt length (tokens)" in at.get("plotly_chart")[0].proto.spec


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(strategies.lists(strategies.lists(strategies.integers(0, 3), max_size=40),
                                   max_size=30))
def test_each_requests_shared_prefix_is_its_longest_with_any_earlier_request(seqs):
    """Issue 21 item 2: PrefixIndex's neighbour search gives, for every request, the longest
    prefix it shares with any earlier one (checked against comparing it with all of them);
    the shares are over all prompt tokens, cacheable in whole 16-token blocks."""
    from engine.ingest.stats import PREFIX_BLOCK, PrefixIndex

    index = PrefixIndex()
    for i, seq in enumerate(seqs):
        brute = max((next((k for k, (a, b) in enumerate(zip(seq, old, strict=False))
                           if a != b), min(len(seq), len(old))) for old in seqs[:i]),
                    default=0)
        assert index.add(seq) == brute
    stats = index.stats(len(seqs))
    total = sum(len(s) for s in seqs)
    assert stats["n"] == len(seqs) and stats["block"] == PREFIX_BLOCK
    assert stats["shared_share"] == (sum(index.shared) / total if total else 0.0)
    assert stats["cacheable_share"] == (sum(s // 16 * 16 for s in index.shared) / total
                                        if total else 0.0)


@pytest.mark.slow
def test_a_log_sharing_a_manual_has_its_shared_prefix_counted_at_ingest(model_settings,
                                                                        tmp_path, capsys):
    """Issue 21 item 2 with the embedded model's tokenizer: three support requests carrying
    the same product manual before their question share the manual's tokens with an earlier
    request (all but the first), and the stored statistics say what share of the input a
    prefix cache could skip; a log of unrelated prompts shares next to nothing."""
    manual = ("Product manual. " + " ".join(f"Step {i}: press the button marked {i} and wait "
                                            "for the green light." for i in range(40)))
    rows = [{"prompt": f"{manual}\n\nQuestion: {q}"} for q in
            ("How do I reset it?", "Why is the light red?", "Can I pause step 3?")]
    log = tmp_path / "m.jsonl"
    log.write_bytes(b"\n".join(json.dumps(r).encode() for r in rows) + b"\n")
    store = Store(model_settings.resolved_db_url())
    counter = embedded_token_counter(model_settings)
    w = store.get_workload(ingest_log(Namespace(log=str(log), name="manual"), model_settings))
    prefix = store.workload_stats(w.id)["prefix"]
    said = capsys.readouterr().out
    assert "Input side: 6" in said and "in whole 16-token blocks" in said, said
    manual_tokens = counter([manual])[0]
    total = store.workload_stats(w.id)["prompt_tokens"]["mean"] * 3
    assert prefix["n"] == prefix["of"] == 3 and prefix["with_shared_prefix"] == 2
    assert prefix["shared_tokens"]["max"] >= manual_tokens - 1  # the manual, maybe less a
    assert prefix["shared_tokens"]["p50"] >= manual_tokens - 1  # token merged at its end
    assert 0.6 < prefix["cacheable_share"] <= prefix["shared_share"] < 2 / 3 + 1e-9
    assert prefix["shared_share"] == pytest.approx(prefix["shared_tokens"]["mean"] * 3 / total)

    unrelated = store.add_workload("other", "l.jsonl", LOG, parse_log(LOG, "l.jsonl"),
                                   count_tokens=counter)
    assert store.workload_stats(unrelated.id)["prefix"]["cacheable_share"] == 0.0
