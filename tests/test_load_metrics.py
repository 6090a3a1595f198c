"""Load-test metrics, schedules, spec validation and storage: pure, checked against numbers
worked out by hand in the comments."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from sqlalchemy import text

from engine.core.domain import LoadSample, LogRequest
from engine.core.errors import SpecError
from engine.ingest.logs import parse_log
from engine.load.metrics import Slo, capacity_at_slo, level_stats, levels_frame, percentiles
from engine.load.schedules import (
    plan_levels,
    poisson_arrivals,
    request_timestamp,
    trace_arrivals,
    trace_order,
)
from engine.load.spec import parse_load_spec, stored_load_spec
from engine.store.store import Store


def stored_spec(workload_id: int, **changes) -> dict:
    """The JSON a load run stores: a whole LoadSpec, as run_load writes it."""
    return parse_load_spec({"workload_id": workload_id, "targets": [
        {"name": "t", "base_url": "http://h:1/v1", "model": "m"}], **changes}
    ).model_dump(mode="json")


def _s(arrival, chunks, end, out, error=None, level=1.0, variant="v"):
    return LoadSample(variant=variant, level=level, request_index=0, arrival_s=arrival,
                      sent_s=arrival, first_token_s=chunks[0] if chunks else None, end_s=end,
                      output_tokens=out, chunk_times_s=tuple(chunks), error=error)


# A: ttft 0.5, e2e 1.1, gaps 0.2 0.3 (mean 0.25)      B: ttft 0.2, e2e 1.0, gap 0.4
# C: failed                                          D: ttft 2.0, e2e 2.5, one chunk
SAMPLES = [_s(0.0, [0.5, 0.7, 1.0], 1.1, 3), _s(1.0, [1.2, 1.6], 2.0, 2),
           _s(2.0, [], 2.5, 0, error="HTTP 500"), _s(0.5, [2.5], 3.0, 1)]
SLO = Slo(ttft_s=1.0, itl_s=0.3, e2e_s=2.0)


def test_percentiles_interpolate_linearly():
    # [1, 2, 3, 4]: p50 = 2.5; p90 at rank 2.7 -> 3.7; p99 at rank 2.97 -> 3.97
    assert percentiles([4, 1, 3, 2]) == pytest.approx({"p50": 2.5, "p90": 3.7, "p99": 3.97})
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


def test_level_stats_by_hand():
    st = level_stats(SAMPLES, SLO)
    assert (st.n, st.n_ok) == (4, 3)
    assert st.duration_s == pytest.approx(3.0)  # last end 3.0 - first arrival 0.0
    # TTFT of the ok ones sorted [0.2, 0.5, 2.0]: p50 0.5, p90 0.5+0.8*1.5, p99 0.5+0.98*1.5
    assert st.ttft == pytest.approx({"p50": 0.5, "p90": 1.7, "p99": 1.97})
    # all gaps pooled [0.2, 0.3, 0.4]
    assert st.itl == pytest.approx({"p50": 0.3, "p90": 0.38, "p99": 0.398})
    # E2E [1.0, 1.1, 2.5]
    assert st.e2e == pytest.approx({"p50": 1.1, "p90": 2.22, "p99": 2.472})
    assert st.output_tokens_per_s == pytest.approx(6 / 3)  # 3 + 2 + 1 tokens over 3 s
    assert st.output_tokens_per_request == pytest.approx(6 / 3)  # over the 3 ok requests
    assert level_stats([SAMPLES[2]], SLO).output_tokens_per_request is None  # none ok
    assert st.requests_per_s == pytest.approx(3 / 3)
    # only A meets all: B's mean ITL 0.4 > 0.3, D's TTFT 2.0 > 1.0, C failed
    assert st.n_slo == 1 and st.goodput_rps == pytest.approx(1 / 3)
    assert st.slo_attainment == pytest.approx(0.25)


def test_slo_thresholds_left_out_are_not_checked():
    assert level_stats(SAMPLES, Slo()).n_slo == 3  # every successful request
    assert level_stats(SAMPLES, Slo(ttft_s=1.0)).n_slo == 2  # A and B


def test_levels_frame_groups_by_variant_then_level():
    samples = [_s(0, [1], 2, 1, level=4), _s(0, [1], 2, 1, level=1),
               _s(0, [1], 4, 1, variant="w", level=2)]
    frame = levels_frame(samples, Slo())
    assert list(zip(frame.variant, frame.level, strict=True)) == [("v", 1), ("v", 4), ("w", 2)]
    assert frame.requests_per_s.tolist() == pytest.approx([0.5, 0.5, 0.25])


def test_capacity_is_the_best_level_that_meets_the_slo():
    levels = pd.DataFrame({
        "variant": ["a", "a", "a", "b"], "level": [1, 2, 4, 1],
        "requests_per_s": [1.0, 1.8, 2.5, 0.7], "slo_attainment": [1.0, 0.95, 0.5, 0.2],
        "e2e_p99_s": [1.0, 1.5, 4.0, 9.0]})
    cap = capacity_at_slo(levels, min_attainment=0.9)
    assert (cap["a"].requests_per_s, cap["a"].level, cap["a"].e2e_p99_s) == (1.8, 2, 1.5)
    assert cap["b"].requests_per_s is None  # no level met the SLO
    assert capacity_at_slo(levels, min_attainment=0.5)["a"].requests_per_s == 2.5
    assert cap["a"].output_tokens_per_request is None  # a frame without the column


def test_tables_show_the_tokens_generated_per_request():
    from engine.cli.load import format_levels

    # "fixed" generated its 4 tokens each time; "natural" stopped at 4, 2 and 1 (mean 2.33)
    samples = [*[_s(0, [1, 1.5], 2, 4, variant="fixed") for _ in range(3)],
               *[_s(0, [1, 1.5], 2, n, variant="natural") for n in (4, 2, 1)]]
    frame = levels_frame(samples, Slo())
    assert frame.output_tokens_per_request.tolist() == pytest.approx([4.0, 7 / 3])
    assert frame.output_tokens_per_s.tolist() == pytest.approx([6.0, 3.5])  # over 2 s
    header, fixed, natural = format_levels(frame).splitlines()
    end = header.index("tok/req") + len("tok/req")  # numbers are right-aligned
    assert fixed[:end].split()[-1] == "4.000" and natural[:end].split()[-1] == "2.333"
    caps = capacity_at_slo(frame)
    assert (caps["fixed"].output_tokens_per_request, caps["natural"].output_tokens_per_request
            ) == pytest.approx((4.0, 7 / 3))


def test_fixed_output_is_the_default_and_old_stored_specs_read_as_natural():
    from datetime import datetime

    from engine.core.domain import LoadRun

    assert parse_load_spec(stored_spec(1)).fixed_output is True  # new specs: fixed
    old = stored_spec(1, max_new_tokens=64)  # a spec stored before the field existed
    del old["fixed_output"], old["workload_id"]

    def run(spec):
        return LoadRun(id=3, workload_id=7, name="old", spec=spec, status="done",
                       created_at=datetime(2026, 11, 1))
    spec = stored_load_spec(run(old))
    assert (spec.fixed_output, spec.workload_id, spec.max_new_tokens) == (False, 7, 64)
    assert stored_load_spec(run(stored_spec(1))).fixed_output is True
    assert stored_load_spec(run(stored_spec(1, fixed_output=False))).fixed_output is False
    with pytest.raises(SpecError, match=r"Load run 3's stored spec.*levels.*another version"):
        stored_load_spec(run(old | {"levels": []}))


def test_poisson_arrivals_are_seeded_with_the_right_mean_gap():
    a = poisson_arrivals(4.0, 20_001, seed=3)
    assert a == poisson_arrivals(4.0, 20_001, seed=3) and a != poisson_arrivals(4.0, 20_001, 4)
    assert a[0] == 0.0 and all(x <= y for x, y in zip(a, a[1:], strict=False))
    assert a[-1] / 20_000 == pytest.approx(0.25, rel=0.03)  # mean gap 1 / rate


def test_trace_timing_from_metadata():
    assert trace_arrivals([100.0, 102.0, 101.0], speedup=2) == [0.0, 1.0, 0.5]
    iso = LogRequest(line=1, messages=(), metadata={"timestamp": "2024-05-02T09:09:25Z"})
    ms = LogRequest(line=2, messages=(), metadata={"created": 1714640966000})
    assert request_timestamp(iso) == 1714640965.0 and request_timestamp(ms) == 1714640966.0
    bare = LogRequest(line=3, messages=(), metadata={"team": "x"})
    assert [i for i, _ in trace_order([ms, iso])] == [1, 0]
    with pytest.raises(SpecError, match=r"1 of 2 requests carry no timestamp.*concurrency or "
                                        "poisson"):
        trace_order([iso, bare])


def test_bundled_proxy_log_replays_at_its_own_timing(settings):
    raw = (settings.samples_dir / "doc_summarisation_proxy.jsonl").read_bytes()
    reqs = parse_log(raw, "x.jsonl").requests
    spec = parse_load_spec({"workload_id": 1, "schedule": "trace", "levels": [10],
                            "requests_per_level": 5,
                            "targets": [{"name": "t", "base_url": "http://h:1/v1", "model": "m"}]})
    offsets = [a for _, a in plan_levels(spec, reqs)[10]]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] > 0


@pytest.mark.parametrize("change,message", [
    ({"levels": [1.5]}, "whole numbers"),
    ({"targets": [{"name": "t"}]}, "either base_url"),
    ({"targets": [{"name": "t", "base_url": "ftp://h:1/v1", "model": "m"}]}, "http://"),
    ({"surprise": 1}, "surprise: Extra inputs"),
    ({"slo": {"ttft_s": 0}}, "slo.ttft_s"),
])
def test_bad_specs_name_the_field(change, message):
    good = {"workload_id": 1, "targets": [{"name": "t", "base_url": "http://h:1/v1",
                                           "model": "m"}]}
    with pytest.raises(SpecError, match=message):
        parse_load_spec(good | change)


def test_store_round_trip_and_new_tables_on_an_old_database(store, settings):
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    w = store.add_workload("w", "s.jsonl", raw, parse_log(raw, "s.jsonl"))
    with store.engine.begin() as conn:  # a database from before load tests existed
        conn.execute(text("DROP TABLE load_samples"))
        conn.execute(text("DROP TABLE load_runs"))
        conn.execute(text("DROP TABLE roilab_schema_version"))  # from before migrations
    again = Store(settings.resolved_db_url())
    assert again.get_workload(w.id).n_requests == w.n_requests  # old data untouched
    run = again.create_load_run(w.id, "sweep", {"levels": [1]})
    again.add_load_samples(run.id, SAMPLES)
    again.set_load_run_status(run.id, "done")
    [listed] = again.list_load_runs()
    assert listed.status == "done" and listed.n_samples == 4 and listed.finished_at
    assert again.get_load_samples(run.id) == SAMPLES  # frozen objects, chunk times included
    assert len(again.load_samples_frame(run.id)) == 4


def _measured(name, rps, hw):
    from engine.business.case import MeasuredVariant

    return MeasuredVariant(
        name=name, techniques="", ok=True, error=None, hardware=hw, batch=1, n_requests=4,
        wall_s=8.0, tokens_per_s=10.0, requests_per_s=rps, latency_p95_s=2.0,
        weight_bytes=1e6, kv_bytes_per_token=0.0, input_tokens_total=400, output_tokens_total=80,
        prefill_s=1.0, decode_s=7.0, prompt_tokens_original=100, prompt_tokens_sent=100,
        output_tokens=20, context_p95_tokens=150, metrics={"base_cosine": 1.0})


def test_business_case_sizes_with_capacity_at_slo_from_a_load_run(store, settings):
    from engine.business.capacity import capacity_assumption
    from engine.business.case import Assumptions, assemble_case
    from engine.economics.hardware import CATALOG

    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    w = store.add_workload("w", "s.jsonl", raw, parse_log(raw, "s.jsonl"))
    run = store.create_load_run(w.id, "sweep", stored_spec(w.id, slo={"ttft_s": 0.5},
                                                            max_new_tokens=2))
    # "served" (the load run's name for the pilot's "baseline"): level 1 -> 1 req/s all in SLO
    # (E2E 1.0 s); level 2 -> 2 req/s, one of two misses TTFT 0.5 s -> 50% < 90%: capacity 1.
    store.add_load_samples(run.id, [
        _s(0.0, [0.1, 0.5], 1.0, 2, level=1, variant="served"),
        _s(1.0, [1.2, 1.6], 2.0, 2, level=1, variant="served"),
        _s(0.0, [0.3], 1.0, 1, level=2, variant="served"),
        _s(0.0, [0.9], 1.0, 1, level=2, variant="served")])
    fields = capacity_assumption(store, run.id, names={"served": "baseline"})
    assert fields["load_capacity"] == (("baseline", pytest.approx(1.0), pytest.approx(1.0)),)
    # the tokens a request generated at the capacity level (1), so a reader sees the work
    assert "output tokens per request (fixed at 2): baseline 2.0" in \
        fields["load_capacity_source"]
    hw = CATALOG["cpu-c7i-large"]
    # peak = 86400 * 10 / 86400 * 1 = 10 req/s at utilisation 1 on the measured hardware:
    # single-stream 0.25 req/s -> 40 devices; capacity at SLO 1 req/s -> 10 devices
    a = Assumptions(requests_per_day=864_000, peak_factor=1.0, utilisation=1.0,
                    target_hardware=hw.key, bootstrap_resamples=10)
    single = assemble_case([_measured("baseline", 0.25, hw)], a, CATALOG)
    loaded = assemble_case([_measured("baseline", 0.25, hw)], replace(a, **fields), CATALOG)
    assert single.rows[0].provisioning.gpus == 40
    assert loaded.rows[0].provisioning.gpus == 10
    assert loaded.rows[0].monthly_cost == pytest.approx(10 * hw.price_per_hour * 730)
    assert loaded.rows[0].provisioning.latency_p95_s == pytest.approx(1.0)  # E2E p99 there
    assert "load run" in loaded.methods["capacity"] and "capacity" not in single.methods
    assert "output tokens per request" in loaded.methods["capacity"]


class _Endpoint(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server: streams two tokens whatever it is asked, and in
    "refuse" mode answers what OpenAI does to fields it does not take."""

    mode = "ignore"
    bodies: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.mode == "refuse" and "ignore_eos" in body:
            self._send(400, json.dumps({"error": {"message": "Unrecognized request argument "
                                                             "supplied: ignore_eos"}}).encode())
            return
        chunks = [{"choices": [{"delta": {"content": w}}]} for w in ("Hello", " there")]
        chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        self._send(200, b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
                   + b"data: [DONE]\n\n", "text/event-stream")


@pytest.fixture
def endpoint() -> Iterator[type[_Endpoint]]:
    _Endpoint.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield _Endpoint
    server.shutdown()
    server.server_close()


def _sweep_spec(store, settings, url: str, **changes):
    from engine.load.spec import LoadSpec

    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    w = store.add_workload("w", "s.jsonl", raw, parse_log(raw, "s.jsonl"))
    return LoadSpec.model_validate({
        "workload_id": w.id, "levels": [1], "requests_per_level": 2, "max_new_tokens": 8,
        "targets": [{"name": "t", "base_url": url, "model": "m"}], **changes})


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_an_endpoint_without_fixed_output_says_to_sweep_with_natural_output(
        endpoint, mode, store, settings, monkeypatch):
    from engine.core.errors import BackendError
    from engine.load.client import OutputLengthRefused
    from engine.load.replay import load_levels, run_load

    monkeypatch.setattr(endpoint, "mode", mode)
    spec = _sweep_spec(store, settings, endpoint.url)
    assert spec.fixed_output  # the default
    expected = (OutputLengthRefused, r"refuses ignore_eos / min_tokens.*HTTP 400.*Unrecognized"
                r".*--natural-output.*'Fixed output length'") if mode == "refuse" else \
        (BackendError, r"asked for exactly 8 new tokens.*got 2: the endpoint ignores those "
                       r"fields.*--natural-output")
    with pytest.raises(expected[0], match=expected[1]):
        run_load(spec, store, settings)
    assert endpoint.bodies[0]["ignore_eos"] is True and endpoint.bodies[0]["min_tokens"] == 8
    assert store.list_load_runs()[0].status == "failed"
    # with natural output the same endpoint sweeps, and the table says what it generated
    endpoint.bodies.clear()
    run = run_load(spec.model_copy(update={"fixed_output": False}), store, settings)
    assert run.status == "done" and run.n_samples == 2
    assert not any("ignore_eos" in b or "min_tokens" in b for b in endpoint.bodies)
    assert load_levels(store, run.id).output_tokens_per_request.tolist() == [2.0]


def test_cli_fixes_the_output_length_unless_told_natural(tmp_path):
    import argparse

    from engine.cli.load import add_parser, build_spec

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    base = ["load", "--workload", "1", "--url", "http://h:1/v1", "--model", "m"]
    assert build_spec(parser.parse_args(base)).fixed_output is True
    assert build_spec(parser.parse_args([*base, "--fixed-output"])).fixed_output is True
    assert build_spec(parser.parse_args([*base, "--natural-output"])).fixed_output is False
    path = tmp_path / "load.json"
    path.write_text(json.dumps(stored_spec(1, fixed_output=False)))
    assert build_spec(parser.parse_args(["load", "--spec", str(path)])).fixed_output is False
    assert build_spec(parser.parse_args(["load", "--spec", str(path), "--fixed-output"])
                      ).fixed_output is True  # the flag overrides the file
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args([*base, "--fixed-output", "--natural-output"])
