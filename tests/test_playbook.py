"""The playbook's rules (engine.business.playbook.plan / suggestions): which step is next,
and which techniques fit, each for the figure its reason names. Pure: the figures are built
here; a real workload and run through the page and the CLI are in tests/test_app_pages.py."""
from __future__ import annotations

import dataclasses
from datetime import datetime
from types import SimpleNamespace

import pytest

from engine.business import playbook as pb
from engine.core.domain import Run, Status, VariantRun, Workload
from engine.pilot.report import LatencySummary, VariantSummary

WORKLOAD = Workload(id=7, name="support", filename="s.jsonl", format="chat_jsonl",
                    n_requests=40, n_issues=0, created_at=datetime(2026, 12, 7))


def _lat(p50: float) -> LatencySummary:
    return LatencySummary(p50, p50, p50, p50, p50)


def summary(**given) -> VariantSummary:
    """A measured baseline: every figure None unless given."""
    values = {f.name: None for f in dataclasses.fields(VariantSummary)
              if f.default is dataclasses.MISSING}
    values |= {"name": "baseline", "status": Status.DONE, "techniques": "", "n_requests": 40}
    return VariantSummary(**(values | given))


def stats(p50: float = 200, cacheable: float = 0.1, shared: float = 0.1, refs: int = 0,
          n: int = 40) -> dict:
    return {"n": n, "prompt_tokens": {"mean": p50, "p50": p50, "p95": p50 * 1.5, "max": p50 * 2},
            "prefix": {"n": n, "of": n, "block": 16, "cacheable_share": cacheable,
                       "shared_share": shared, "with_shared_prefix": n // 2,
                       "shared_tokens": {}, "unique_tokens": {}},
            "with_reference": refs, "with_logged_output": 0}


def fits(suggestions) -> dict[str, bool]:
    return {s.technique.split(" ")[0]: s.fits for s in suggestions}


def test_before_any_run_profile_is_done_the_baseline_next_and_weights_suggested() -> None:
    book = pb.plan(WORKLOAD, stats(), runs=[], reports={})
    assert [s.state for s in book.steps] == ["done", "next", "not started", "not started",
                                             "not started"]
    assert book.next_step.key == "baseline"
    assert "40 requests; prompts 200 tokens at the median" in book.steps[0].detail
    assert book.suggested == ("int8",)  # the playbook's first technique, before measuring
    assert book.pilot_command() == "roilab pilot --workload 7 --variants int8"
    assert book.steps[1].command == book.pilot_command()


def test_decode_bound_baseline_suggests_weights_and_a_slow_first_token_the_prompt() -> None:
    decode = pb.suggestions(stats(), summary(latency=_lat(2.0), ttft=_lat(0.2)), "transformers", 8)
    assert fits(decode)["8-bit"] and not fits(decode)["Prompt"]
    assert "decoding is 90% of the baseline's median latency (first token 0.20 s of 2.00 s)" \
        in decode[0].reason
    prefill = pb.suggestions(stats(), summary(latency=_lat(2.0), ttft=_lat(1.5)), "vllm", 8)
    assert not fits(prefill)["8-bit"] and fits(prefill)["Prompt"]
    assert "the first token takes 75% of the median latency" in prefill[1].reason
    # long prompts fit compression whatever the timing
    long = pb.suggestions(stats(p50=3_000), summary(latency=_lat(2.0), ttft=_lat(0.2)), "vllm", 8)
    assert fits(long)["Prompt"] and "3,000 tokens at the median" in long[1].reason


@pytest.mark.parametrize("cacheable, expected", [(0.8, True), (0.29, False)])
def test_prefix_caching_fits_a_large_shared_prefix(cacheable, expected) -> None:
    s = pb.suggestions(stats(cacheable=cacheable), None, "vllm", 8)[2]
    assert s.technique == "Prefix caching" and s.fits is expected
    assert s.variant == "prefix-cache"  # vLLM's, measured against the others with it off
    assert f"{cacheable:.0%} of input tokens are in 16-token blocks" in s.reason
    on_cpu = pb.suggestions(stats(cacheable=cacheable), None, "transformers", 8)[2]
    assert on_cpu.variant is None and "--backend vllm --variants prefix-cache" in on_cpu.how


def test_kv_cache_fits_where_the_target_concurrency_fills_the_memory() -> None:
    big = summary(latency=_lat(2.0), ttft=_lat(0.2), kv_bytes_per_token=131_072,
                  device_memory_bytes=80 * 2**30, weight_bytes=16 * 2**30,
                  prompt_tokens_original=4_000.0, output_tokens=500.0)
    kv = pb.suggestions(stats(), big, "vllm", 32)[3]
    # 131,072 B x 4,500 tokens x 32 = 17.6 GiB of the 64 GiB beside the weights: 27%
    assert kv.fits and kv.variant == "fp8-kv" and "27% of the 64.0 GiB" in kv.reason
    small = pb.suggestions(stats(), dataclasses.replace(big, prompt_tokens_original=200.0,
                                                        output_tokens=48.0), "vllm", 32)[3]
    assert not small.fits and "not the limit here" in small.reason
    on_cpu = pb.suggestions(stats(), big, "transformers", 32)[3]
    assert on_cpu.fits and on_cpu.variant is None and "fp8-kv" in on_cpu.how
    unmeasured = pb.suggestions(stats(), None, "vllm", 32)[3]
    assert not unmeasured.fits and "measured baseline" in unmeasured.reason


def test_distillation_needs_references_and_one_shared_task() -> None:
    assert fits(pb.suggestions(stats(refs=30, shared=0.6), None, "transformers", 8))["Distillation"]
    assert not fits(pb.suggestions(stats(refs=10, shared=0.6), None, "transformers", 8))[
        "Distillation"]
    assert not fits(pb.suggestions(stats(refs=30, shared=0.1), None, "transformers", 8))[
        "Distillation"]


def test_the_suggested_pilot_is_at_most_three_built_in_variants_of_the_backend() -> None:
    base = summary(latency=_lat(2.0), ttft=_lat(0.9), kv_bytes_per_token=131_072,
                   device_memory_bytes=24 * 2**30, weight_bytes=16 * 2**30,
                   prompt_tokens_original=3_000.0, output_tokens=300.0)
    book = pb.plan(WORKLOAD, stats(p50=3_000, cacheable=0.7, shared=0.7, refs=40),
                   runs=[_run(1, Status.DONE, Status.DONE)], reports={1: _report(base)},
                   backend="vllm")
    assert book.suggested == ("fp8", "llmlingua", "prefix-cache")  # 4 fit: the first 3
    assert fits(book.suggestions)["FP8"]  # the KV cache fits too, 4th in line
    assert book.pilot_command() == ("roilab pilot --workload 7 --backend vllm "
                                    "--variants fp8,llmlingua,prefix-cache")
    assert fits(book.suggestions)["Prefix"] and fits(book.suggestions)["Distillation"]


def _run(run_id: int, *states: Status, backend: str = "transformers") -> Run:
    variants = tuple(VariantRun(id=10 * run_id + i, run_id=run_id, name=f"v{i}",
                                spec={"backend": backend}, status=s)
                     for i, s in enumerate(states))
    return Run(id=run_id, workload_id=7, name="p", spec={}, status=Status.DONE,
               created_at=datetime(2026, 12, 7), variants=variants)


def _report(base: VariantSummary, *others: VariantSummary):
    return SimpleNamespace(variants=(base, *others))


def test_steps_follow_the_workloads_runs() -> None:
    base = summary(latency=_lat(2.0), ttft=_lat(0.2), tokens_per_s=100.0, monthly_cost=500.0)
    only_baseline = _run(1, Status.DONE)
    book = pb.plan(WORKLOAD, stats(), [only_baseline], {1: _report(base)})
    assert [s.state for s in book.steps] == ["done", "done", "next", "not started", "not started"]
    assert book.steps[1].detail == "run #1: 100.0 tokens/s, 2.00 s median latency"
    # a technique chosen whose variant failed: chosen, but the after step still next
    failed = _run(2, Status.DONE, Status.FAILED)
    book = pb.plan(WORKLOAD, stats(), [failed, only_baseline], {2: _report(base)})
    assert [s.state for s in book.steps] == ["done", "done", "done", "next", "not started"]
    assert book.steps[2].detail == "run #2: v1" and book.steps[1].run_id == 2
    # measured after: the variant against the baseline; no case yet, so the portfolio is next
    after = _run(3, Status.DONE, Status.DONE)
    int8 = dataclasses.replace(base, name="int8", tokens_per_s=150.0, base_cosine=0.97)
    book = pb.plan(WORKLOAD, stats(), [after, failed], {3: _report(base, int8)})
    assert [s.state for s in book.steps] == ["done", "done", "done", "done", "next"]
    assert book.steps[3].detail == "run #3: int8 1.50x tokens/s, cosine 0.97 to the baseline"
    assert book.steps[4].command == "roilab portfolio 3"
    case = SimpleNamespace(baseline_monthly_cost=500.0, monthly_savings=200.0, run_id=3,
                           recommendation=SimpleNamespace(name="int8"), moves=True,
                           roi=SimpleNamespace(payback_months=4.0))
    book = pb.plan(WORKLOAD, stats(), [after], {3: _report(base, int8)}, case)
    assert all(s.state == "done" for s in book.steps) and book.next_step is None
    assert book.steps[4].detail == "run #3: int8 saves $200/month of $500, payback 4.0 months"
    # the baseline itself recommended (the H100 run: nothing cheaper passes): no "saves $0"
    kept = SimpleNamespace(baseline_monthly_cost=503.7, monthly_savings=0.0, run_id=3,
                           recommendation=SimpleNamespace(name="baseline"), moves=False,
                           roi=SimpleNamespace(payback_months=None))
    book = pb.plan(WORKLOAD, stats(), [after], {3: _report(base, int8)}, kept)
    assert book.steps[4].detail == ("run #3: keep the baseline, no variant is cheaper while "
                                    "passing ($504/month)")


def test_built_in_vllm_variants_measure_prefix_caching_against_its_absence() -> None:
    """--variants prefix-cache: the only variant with vLLM's prefix cache (on by default) is
    that one; ngram-spec drafts 3 tokens a step by prompt lookup."""
    from engine.backends.vllm_engines import engine_args
    from engine.specs.pilot import pilot_variants

    variants = pilot_variants(["fp8", "prefix-cache", "ngram-spec", "llmlingua"],
                              backend="vllm", dtype="float32")
    assert [v.name for v in variants] == ["baseline", "fp8-weights", "llmlingua-0.5",
                                          "prefix-cache", "ngram-spec-3"]
    assert [v.vllm.enable_prefix_caching for v in variants] == [False, False, False, True,
                                                                False]
    args = engine_args(variants[4], "/models/x", "cpu")
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3,
                                          "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    assert args["enable_prefix_caching"] is False
    # without prefix-cache asked, vLLM's own default stands (nothing set)
    plain = pilot_variants(["fp8"], backend="vllm", dtype="float32")
    assert plain[0].vllm is None and plain[1].vllm.enable_prefix_caching is None
    assert "enable_prefix_caching" not in engine_args(plain[0], "/models/x", "cpu")
