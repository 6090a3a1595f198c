"""The measurement protocol (engine.pilot.protocol, engine.pilot.stability): repeated timed
passes stored, medians and spreads, the baseline measured again, unstable figures and a busy
machine flagged. Real pilots of ``random:tiny-llama`` (two layers: seconds on CPU) and of the
embedded model; the one fake (``SlowOncePass``) only injects a slow pass."""
from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time

import pytest

from engine.backends import _REGISTRY
from engine.backends.transformers_backend import TransformersBackend
from engine.core.errors import SpecError
from engine.ingest.logs import parse_log
from engine.pilot import protocol
from engine.pilot.report import build_report
from engine.pilot.runner import run_pilot
from engine.pilot.stability import stability_lines
from engine.specs.pilot import (
    CompressPrompt,
    GenerationSettings,
    MeasurementSettings,
    PilotSpec,
    QuantizeWeights,
    VariantSpec,
    default_repeats,
)
from engine.store.store import Store

TINY = "random:tiny-llama"
LOG = b"".join(b'{"prompt": "Tell me about item %d, please."}\n' % i for i in range(6))
# long enough that LLMLingua compresses rather than skips it
LONG_LOG = b"".join(
    b'{"prompt": "' + b"Our order %d arrived late and the box was damaged. " % i
    + b"The invoice lists three items but only two were inside, and the support line kept "
      b"us waiting for an hour before the call dropped. We have been customers for years "
      b"and expect better service than this from a company we have always recommended. " * 3
    + b'What can you do about the missing item and the delay?"}\n' for i in range(6))


@pytest.fixture
def settings(model_settings):
    """A fresh data dir and SQLite file sharing the session's converted embedded model: a
    random: shape takes its tokenizer, and a data dir without it converts the GGUF again
    (35-55 s a test on 2 cores, most of these tests' time in CI)."""
    return model_settings


@pytest.fixture(autouse=True)
def _warm_up_at_the_timed_shape(monkeypatch):
    """The protocol's own tests warm up as a pilot does (conftest sets a minimal warm-up
    for every other test)."""
    monkeypatch.setenv("ROILAB_WARM_UP", "shape")


# ---- pure figures, worked by hand ---------------------------------------------------------

def test_spread_is_median_and_range_over_the_median() -> None:
    s = protocol.spread([12.0, 10.0, None, 11.0])
    assert (s.median, s.low, s.high, s.n) == (11.0, 10.0, 12.0, 3)
    assert s.relative == pytest.approx(2 / 11)  # (12 - 10) / 11
    two = protocol.spread([100.0, 90.0])
    assert two.median == 95.0 and two.relative == pytest.approx(10 / 95)
    assert protocol.spread([5.0]).relative == 0.0 and protocol.spread([None]) is None


def test_drift_and_busy_reasons() -> None:
    assert protocol.drift(10.0, 8.5) == pytest.approx(-0.15)
    assert protocol.drift(None, 8.5) is None and protocol.drift(10.0, None) is None
    assert protocol.busy_reason({"others_cpu_pct": 60.0}) == \
        "other processes used 60% of the CPUs"
    assert protocol.busy_reason({"others_cpu_pct": 3.0, "load_avg_1m": 0.2}) is None
    assert protocol.busy_reason({"gpu_other_procs": 2}) == "2 other process(es) on the GPU"


def test_default_repeats_per_device_and_an_explicit_count_wins(monkeypatch) -> None:
    monkeypatch.delenv("ROILAB_REPEATS", raising=False)  # the suite sets 1 (tests/conftest.py)
    m = MeasurementSettings()
    assert (default_repeats(m, "transformers", "cuda"), default_repeats(m, "transformers", "cpu"),
            default_repeats(m, "endpoint", "cpu")) == (3, 2, 1)
    assert default_repeats(MeasurementSettings(repeats=5), "endpoint", "cpu") == 5
    monkeypatch.setenv("ROILAB_REPEATS", "4")  # a machine-wide default; the spec still wins
    assert default_repeats(m, "transformers", "cpu") == 4
    assert default_repeats(MeasurementSettings(repeats=5), "transformers", "cpu") == 5
    monkeypatch.setenv("ROILAB_REPEATS", "0")
    with pytest.raises(SpecError, match="ROILAB_REPEATS='0'"):
        default_repeats(m, "transformers", "cpu")


def test_the_bill_range_is_widened_by_half_the_speed_spread_either_way() -> None:
    from engine.business.ranges import SPREAD_METHOD, _with_speed_spread
    from engine.economics.roi import Interval

    def bill_at(f: float) -> Interval:  # a bill inversely proportional to speed
        return Interval(point=100 / f, low=90 / f, high=110 / f, n_resamples=10, method="m")

    assert _with_speed_spread(bill_at, 0.0) == bill_at(1.0)
    wide = _with_speed_spread(bill_at, 0.2)  # passes spread 20%: speed 0.9x..1.1x the median
    assert wide.point == 100 and wide.method == "m" + SPREAD_METHOD
    assert wide.low == pytest.approx(90 / 1.1) and wide.high == pytest.approx(110 / 0.9)


def test_repeats_from_the_cli_flag_and_over_a_spec_file(tmp_path) -> None:
    import json

    from engine.cli.main import build_parser
    from engine.cli.pilot_spec import build_spec

    parse = build_parser().parse_args
    assert build_spec(parse(["pilot", "--workload", "1"])).measurement.repeats is None
    assert build_spec(parse(["pilot", "--workload", "1", "--repeats", "4"])
                      ).measurement.repeats == 4
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps({"variants": [{"name": "b"}], "measurement": {"repeats": 2}}))
    assert build_spec(parse(["pilot", "--workload", "1", "--spec", str(path)])
                      ).measurement.repeats == 2
    assert build_spec(parse(["pilot", "--workload", "1", "--spec", str(path), "--repeats", "5"])
                      ).measurement.repeats == 5
    # interleaving: on unless --no-interleave, which also applies over a spec file
    assert build_spec(parse(["pilot", "--workload", "1"])).measurement.interleave is True
    assert build_spec(parse(["pilot", "--workload", "1", "--no-interleave"])
                      ).measurement.interleave is False
    assert build_spec(parse(["pilot", "--workload", "1", "--spec", str(path)])
                      ).measurement.interleave is True
    assert build_spec(parse(["pilot", "--workload", "1", "--spec", str(path),
                             "--no-interleave"])).measurement.interleave is False


def test_a_spec_stored_before_the_protocol_reads_back_with_its_defaults() -> None:
    old = {"workload_id": 1, "variants": [{"name": "b"}], "generation": {"batch_size": 4}}
    spec = PilotSpec.from_stored(old)
    assert spec.measurement == MeasurementSettings(repeats=None, remeasure_baseline=True)


# ---- real pilots ----------------------------------------------------------------------------

def _pilot(settings, *variants: VariantSpec, repeats: int = 3, n: int = 4, tokens: int = 6,
           interleave: bool = True, on_progress=None, log: bytes = LOG):
    store = Store(settings.resolved_db_url())
    w = store.add_workload("w", "w.jsonl", log, parse_log(log, "w.jsonl"))
    spec = PilotSpec(workload_id=w.id, variants=variants, max_requests=n,
                     generation=GenerationSettings(max_new_tokens=tokens, batch_size=2),
                     measurement=MeasurementSettings(repeats=repeats, interleave=interleave))
    run = run_pilot(spec, store, settings, on_progress)
    return store, run


def _pass_order(events) -> list[tuple[str, int]]:
    """(variant, pass number) in the order the passes began, from the progress messages."""
    order: list[tuple[str, int]] = []
    for p in events:
        if p.message.startswith("pass ") and "generating 1-" in p.message:
            key = (p.variant, int(p.message.split()[1].split("/")[0]))
            if key not in order:
                order.append(key)
    return order


@pytest.mark.slow
def test_passes_are_interleaved_across_variants_and_back_to_back_when_turned_off(
        settings) -> None:
    events: list = []
    store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                        VariantSpec(name="a", model=TINY), VariantSpec(name="b", model=TINY),
                        VariantSpec(name="refused", model=TINY, device="cuda"),
                        on_progress=events.append)
    assert run.status == "partial", run.error  # "refused" asks for a GPU this machine lacks
    assert _pass_order(events) == [(v, k) for k in (1, 2, 3) for v in ("base", "a", "b")]
    fractions = [p.fraction for p in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # the bar never goes back
    for v in run.variants[:3]:
        m = v.technique_report["measurement"]
        assert m["interleaved"] and sorted(m["interleaved_with"]) == \
            sorted({"base", "a", "b"} - {v.name})
        assert [p.pass_index for p in store.get_passes(v.id) if p.role == "timed"] == [0, 1, 2]
    again = [p for p in store.get_passes(run.variants[0].id) if p.role == "baseline_end"]
    assert len(again) == 1  # timed after the last round, with the baseline still loaded
    assert events[-1].message == "done" or any("again" in p.message for p in events)

    events.clear()
    store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                        VariantSpec(name="a", model=TINY), interleave=False,
                        on_progress=events.append)
    assert run.status == "done", run.error
    assert _pass_order(events) == [("base", 1), ("base", 2), ("base", 3), ("a", 1), ("a", 2),
                                   ("a", 3)]
    fractions = [p.fraction for p in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not run.variants[1].technique_report["measurement"]["interleaved"]


@pytest.mark.slow
def test_memory_splits_the_interleaved_groups(settings, monkeypatch) -> None:
    """With room for two variants at a time, three alternate in a group of two, then one."""
    from engine.pilot import rounds

    monkeypatch.setattr(rounds, "MAX_SIDE_BY_SIDE", 2)
    events: list = []
    store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                        VariantSpec(name="a", model=TINY), VariantSpec(name="b", model=TINY),
                        repeats=2, on_progress=events.append)
    assert run.status == "done", run.error
    assert _pass_order(events) == [("base", 1), ("a", 1), ("base", 2), ("a", 2), ("b", 1),
                                   ("b", 2)]
    assert run.variants[2].technique_report["measurement"]["interleaved"] is False
    # the baseline was not kept loaded to the end: it is loaded again for its re-measure
    assert [p.role for p in store.get_passes(run.variants[0].id)].count("baseline_end") == 1


def _start_hogs() -> list[int]:
    """One busy loop per CPU. Not children of this process (their CPU would count as the
    pilot's own): a shell starts each in the background and exits; ended by their ids."""
    import os

    return [int(subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' "
                                "</dev/null >/dev/null 2>&1 & echo $!"],
                               capture_output=True, text=True, check=True).stdout)
            for _ in range(os.cpu_count() or 1)]


@pytest.mark.slow
def test_a_busy_process_during_one_variant_flags_that_variant_unstable(settings) -> None:
    """A real CPU hog runs during the second pass of "victim" only (started when that pass
    begins, killed when the next variant's pass begins): victim's tokens/s spread passes the
    threshold and it is marked unstable, with the busy pass recorded."""
    import os

    hogs: list[int] = []

    def on_progress(p) -> None:
        if p.variant == "victim" and p.message.startswith("pass 2/3: generating 1-") and not hogs:
            hogs.extend(_start_hogs() + _start_hogs())
            time.sleep(0.3)  # the hogs are running before the pass's first batch
        elif hogs and p.variant != "victim" and p.message.startswith("pass "):
            while hogs:
                os.kill(hogs.pop(), signal.SIGKILL)

    try:
        store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                            VariantSpec(name="victim", model=TINY),
                            VariantSpec(name="other", model=TINY), n=6, tokens=24,
                            on_progress=on_progress)
    finally:
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
    assert run.status == "done", run.error
    passes = [p for p in store.get_passes(run.variants[1].id) if p.role == "timed"]
    # the pass the hogs ran in is slower than the victim's quiet passes (by far: two busy
    # loops per CPU; the margin leaves room for whatever else the machine runs)
    assert passes[1].wall_s > 1.2 * min(passes[0].wall_s, passes[2].wall_s), passes
    assert passes[1].others_cpu_pct > protocol.BUSY_CPU_PCT, passes
    rep = build_report(store, run.id)
    victim = rep.variants[1]
    assert "tokens/s" in victim.unstable, (victim.unstable, victim.tokens_per_s_spread)
    assert victim.tokens_per_s_spread > protocol.UNSTABLE_SPREAD
    assert any(line.startswith("Unstable: victim's tokens/s") for line in stability_lines(rep))


@pytest.mark.slow
def test_every_pass_is_stored_the_variant_keeps_medians_and_the_baseline_is_measured_again(
        settings) -> None:
    store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                        VariantSpec(name="other", model=TINY))
    assert run.status == "done", run.error
    base, other = run.variants
    timed = [p for p in store.get_passes(base.id) if p.role == "timed"]
    again = [p for p in store.get_passes(base.id) if p.role == "baseline_end"]
    assert [p.pass_index for p in timed] == [0, 1, 2] and len(again) == 1
    assert [p.role for p in store.get_passes(other.id)] == ["timed"] * 3
    for v in run.variants:
        ps = [p for p in store.get_passes(v.id) if p.role == "timed"]
        assert v.wall_s == pytest.approx(statistics.median(p.wall_s for p in ps))
        assert v.throughput_tok_s == pytest.approx(statistics.median(p.throughput_tok_s
                                                                     for p in ps))
        assert all(p.output_tokens == ps[0].output_tokens and p.others_cpu_pct is not None
                   and p.gc_pause_s is not None and p.gc_pause_s >= 0 for p in ps)
        assert v.technique_report["measurement"]["passes"] == 3
        assert v.technique_report["measurement"]["repeated_outputs_differ"] == 0  # greedy
    rep = build_report(store, run.id)
    assert [v.passes for v in rep.variants] == [3, 3]
    assert rep.baseline.baseline_drift == pytest.approx(
        again[0].throughput_tok_s / statistics.median(p.throughput_tok_s for p in timed) - 1)
    assert rep.variants[1].baseline_drift is None
    assert rep.variants[1].tokens_per_s_spread is not None


class SlowOncePass(TransformersBackend):
    """The fault injected: the second timed pass of a variant named "slow" sleeps 2 s per batch."""

    def begin_pass(self) -> None:
        super().begin_pass()
        self._pass = getattr(self, "_pass", -1) + 1

    def generate(self, batch, max_new_tokens):
        if self.spec.name == "slow" and getattr(self, "_pass", -1) == 1:
            time.sleep(2.0)
        return super().generate(batch, max_new_tokens)


@pytest.mark.slow
def test_a_slow_pass_marks_the_variant_unstable(settings, monkeypatch) -> None:
    monkeypatch.setitem(_REGISTRY, "slow-once", f"{__name__}:SlowOncePass")
    store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                        VariantSpec(name="slow", model=TINY, backend="slow-once"))
    assert run.status == "done", run.error
    rep = build_report(store, run.id)
    slow = rep.variants[1]
    assert "tokens/s" in slow.unstable and slow.tokens_per_s_spread > protocol.UNSTABLE_SPREAD
    walls = [p.wall_s for p in store.get_passes(run.variants[1].id)]
    assert walls[1] >= 4.0 and walls[1] == max(walls)  # two batches slept 2 s each
    lines = stability_lines(rep)
    assert any(line.startswith("Unstable: slow's tokens/s") for line in lines), lines
    _shown_on_the_results_page_and_in_the_pdf(settings, monkeypatch, rep, "Unstable: slow")


def _shown_on_the_results_page_and_in_the_pdf(settings, monkeypatch, rep, warning) -> None:
    """The Results page's "Measurement stability" block and the pilot PDF carry the warning."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from engine.reports.pilot_pdf import render_pdf

    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    at = AppTest.from_string("from app.views import results\nresults.render()",
                             default_timeout=120)
    at.query_params["run"] = str(rep.run.id)
    at.run()
    assert not at.exception
    assert "Measurement stability" in [h.value for h in at.subheader]
    assert any(warning in w.value.replace("\\", "") for w in at.warning)
    table = next(d.value for d in at.dataframe if "tokens/s spread" in d.value.columns)
    assert [str(x) for x in table["timed passes"]] == [str(v.passes) for v in rep.variants]
    pdf = render_pdf(rep)
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                          check=True).stdout.decode()
    assert "Measurement stability" in text and warning in text


@pytest.mark.slow
def test_a_cpu_hog_beside_the_pilot_is_recorded_and_warned_about(settings, capsys,
                                                               monkeypatch) -> None:
    import os

    from engine.cli.main import main

    hogs = _start_hogs()
    try:
        time.sleep(0.5)
        store, run = _pilot(settings, VariantSpec(name="base", model=TINY),
                            VariantSpec(name="other", model=TINY), repeats=2, n=6, tokens=16)
    finally:
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
    passes = store.get_passes(run.variants[0].id)
    assert max(p.others_cpu_pct for p in passes) > protocol.BUSY_CPU_PCT, passes
    rep = build_report(store, run.id)
    assert rep.baseline.busy and "other processes used" in rep.baseline.busy
    assert any(line.startswith("The machine was busy") for line in stability_lines(rep))
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    assert main(["show", str(run.id)]) == 0
    assert "The machine was busy during the run" in capsys.readouterr().out


@pytest.mark.slow
def test_prompt_compression_is_timed_again_in_every_pass(model_settings) -> None:
    """LLMLingua compresses the prompts in each pass (the first at load, the second
    inside its pass): each pass's wall time holds its own compression seconds, each
    request's latency is the median over the passes, and the bar still only moves forward."""
    events: list = []
    store, run = _pilot(model_settings, VariantSpec(name="baseline"),
                        VariantSpec(name="lingua", techniques=(CompressPrompt(rate=0.5),)),
                        repeats=2, n=4, tokens=4, on_progress=events.append, log=LONG_LOG)
    assert run.status == "done", run.error
    said = [p.message for p in events if p.variant == "lingua"]
    assert "compressing prompt 1/4" in said and "pass 2: compressing prompt 1/4" in said
    fractions = [p.fraction for p in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    results = store.get_results(run.variants[1].id)
    assert all(r.compress_s > 0 and r.latency_s > r.compress_s for r in results), [(r.compress_s, r.latency_s, r.prompt_tokens_original, r.prompt_tokens_sent) for r in results]
    passes = [p for p in store.get_passes(run.variants[1].id) if p.role == "timed"]
    assert len(passes) == 2 and all(p.wall_s > 0 for p in passes)


@pytest.mark.slow
def test_peak_memory_of_two_passes_agrees_within_5_percent(model_settings) -> None:
    """The passes the memory figure is read from (all but the first, which pays one-off
    allocations the kernel's exact peak-RSS mark does see) agree within 5%, unless the
    variant's execution itself changed between them: int8 weights on this CPU switch
    between two speeds (and peaks) within one loaded model (docs/cpu-demo-twice-2026-11-30).
    Then its speed moved by more than the unstable threshold too, and the run must say so."""
    store, run = _pilot(model_settings, VariantSpec(name="baseline"),
                        VariantSpec(name="int8", techniques=(QuantizeWeights(),)),
                        repeats=3, n=4, tokens=8)
    assert run.status == "done", run.error
    rep = build_report(store, run.id)
    for v, summary in zip(run.variants, rep.variants, strict=True):
        timed = [p for p in store.get_passes(v.id) if p.role == "timed"]
        passes = protocol.memory_passes(timed)
        peaks = [p.peak_mem_bytes for p in passes]
        assert len(timed) == 3 and len(peaks) == 2 and min(peaks) > 0
        assert min(peaks) <= v.peak_mem_bytes <= max(peaks)  # their median
        if max(peaks) / min(peaks) - 1 < 0.05:
            continue
        speeds = [p.throughput_tok_s for p in passes]
        assert max(speeds) / min(speeds) - 1 > protocol.UNSTABLE_SPREAD, \
            (v.name, [(p.peak_mem_bytes, p.throughput_tok_s) for p in timed])
        assert "tokens/s" in summary.unstable
