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


def test_a_spec_stored_before_the_protocol_reads_back_with_its_defaults() -> None:
    old = {"workload_id": 1, "variants": [{"name": "b"}], "generation": {"batch_size": 4}}
    spec = PilotSpec.from_stored(old)
    assert spec.measurement == MeasurementSettings(repeats=None, remeasure_baseline=True)


# ---- real pilots ----------------------------------------------------------------------------

def _pilot(settings, *variants: VariantSpec, repeats: int = 3, n: int = 4, tokens: int = 6):
    store = Store(settings.resolved_db_url())
    w = store.add_workload("w", "w.jsonl", LOG, parse_log(LOG, "w.jsonl"))
    spec = PilotSpec(workload_id=w.id, variants=variants, max_requests=n,
                     generation=GenerationSettings(max_new_tokens=tokens, batch_size=2),
                     measurement=MeasurementSettings(repeats=repeats))
    run = run_pilot(spec, store, settings)
    return store, run


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
                   for p in ps)
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
    table = next(d.value for d in at.dataframe if "tokens_per_s_spread" in d.value.columns)
    assert list(table.passes) == [v.passes for v in rep.variants]
    pdf = render_pdf(rep)
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True,
                          check=True).stdout.decode()
    assert "Measurement stability" in text and warning in text


@pytest.mark.slow
def test_a_cpu_hog_beside_the_pilot_is_recorded_and_warned_about(settings, capsys,
                                                               monkeypatch) -> None:
    import os

    from engine.cli.main import main

    # Not children of this process (their CPU would count as the pilot's own): a shell
    # starts each in the background and exits, and the hog is ended by its id.
    hogs = [int(subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' "
                                "</dev/null >/dev/null 2>&1 & echo $!"],
                               capture_output=True, text=True, check=True).stdout)
            for _ in range(os.cpu_count() or 1)]
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
def test_peak_memory_of_two_passes_agrees_within_5_percent(model_settings) -> None:
    store, run = _pilot(model_settings, VariantSpec(name="baseline"),
                        VariantSpec(name="int8", techniques=(QuantizeWeights(),)),
                        repeats=2, n=4, tokens=8)
    assert run.status == "done", run.error
    for v in run.variants:
        peaks = [p.peak_mem_bytes for p in store.get_passes(v.id) if p.role == "timed"]
        assert len(peaks) == 2 and min(peaks) > 0
        assert max(peaks) / min(peaks) - 1 < 0.05, (v.name, peaks)
