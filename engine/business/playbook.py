"""The playbook, per workload: its five steps with their state, and the techniques that fit
it, each with the measured figure that says why (issue 21).

The steps: workload profile -> baseline measured -> techniques chosen -> after measured ->
in the portfolio. Each is done, next (the first not done) or not started, read from the
store: the workload's statistics at ingest and its runs. The suggestions read the same
figures: the prompt lengths and the shared prefix from ingest, and where a baseline was
measured, its share of latency spent decoding, its tokens in and out, and its KV cache
against the device's memory at the business case's concurrency.

``plan`` is pure (figures in, Playbook out); ``workload_playbook`` reads them from a store.
The dashboard's Playbook page and ``roilab playbook`` both show what ``workload_playbook``
returns, and run the pilot its ``suggested`` names (built-in variants, ``pilot_variants``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.domain import Run, Status, Workload

if TYPE_CHECKING:
    from engine.business.claims import ClaimResult
    from engine.business.types import BusinessCase
    from engine.pilot.report import PilotReport, VariantSummary
    from engine.store.store import Store

# When a technique fits, from the workload's own figures:
LONG_PROMPT_TOKENS = 1_000  # median prompt tokens from which compressing the prompt pays
PREFILL_SHARE = 0.3  # share of a request's latency before its first token: the prompt weighs
PREFIX_SHARE = 0.3  # share of input tokens in shared 16-token blocks a prefix cache skips
DECODE_SHARE = 0.5  # share of a request's latency after its first token: decode-bound
KV_SHARE = 0.25  # KV cache at the target concurrency over the memory left beside the weights
REFERENCE_SHARE = 0.5  # share of requests with reference answers: a student can be trained
MAX_SUGGESTED = 3  # variants in the suggested pilot beside the baseline: "2-3 techniques"

DONE, NEXT, NOT_STARTED = "done", "next", "not started"
STEPS = (  # key, title, the dashboard page (app.nav url path) where it is done
    ("profile", "Workload profile", "upload"),
    ("baseline", "Baseline measured", "run"),
    ("chosen", "Techniques chosen", "run"),
    ("after", "After measured", "results"),
    ("portfolio", "In the portfolio", "business"),
)


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    state: str  # done | next | not started
    detail: str  # what was found, with its figures; or what doing it takes
    page: str  # the dashboard page (url path) where the step is done or shown
    run_id: int | None = None  # the run it was done in, if any
    command: str = ""  # the command line that does or shows it


@dataclass(frozen=True)
class Suggestion:
    technique: str  # e.g. "Prompt compression (LLMLingua)"
    fits: bool
    reason: str  # the measured figures that say why, or what is missing to say
    variant: str | None = None  # the built-in variant the suggested pilot runs for it
    how: str = ""  # where no built-in variant runs it on this backend: how to measure it


@dataclass(frozen=True)
class Playbook:
    workload: Workload
    backend: str  # the serving backend the suggestions are for
    steps: tuple[Step, ...]
    suggestions: tuple[Suggestion, ...]
    # the article's claims tested against the "after" run (engine.business.claims); () if none
    scorecard: tuple[ClaimResult, ...] = ()
    scorecard_run: int | None = None

    @property
    def next_step(self) -> Step | None:
        return next((s for s in self.steps if s.state == NEXT), None)

    @property
    def suggested(self) -> tuple[str, ...]:
        """The built-in variants of the techniques that fit, at most ``MAX_SUGGESTED``, in
        the order suggested; what the one-click pilot runs beside the baseline."""
        names = [s.variant for s in self.suggestions if s.fits and s.variant]
        return tuple(dict.fromkeys(names))[:MAX_SUGGESTED]

    def pilot_command(self) -> str:
        """The ``roilab pilot`` line that runs the suggested pilot."""
        backend = "" if self.backend == "transformers" else f" --backend {self.backend}"
        return (f"roilab pilot --workload {self.workload.id}{backend} "
                f"--variants {','.join(self.suggested) or 'none'}")


def _pct(x: float) -> str:
    """A share in whole percent, rounded down, so a share just under a threshold never reads
    as the threshold itself (29.7% is "29%", not "30%" under 30%)."""
    if 0 < x < 0.01:
        return "under 1%"
    return f"{math.floor(x * 100 + 1e-9)}%"


def _variant_for(backend: str, weights: bool = False, kv: bool = False,
                 prompt: bool = False) -> str | None:
    if prompt:
        return "llmlingua"  # both backends
    if weights:
        return "fp8" if backend == "vllm" else "int8" if backend == "transformers" else None
    if kv:
        return "fp8-kv" if backend == "vllm" else None
    return None


def _summary_text(s: dict[str, Any] | None, unit: str = "tokens") -> str:
    if not s or s.get("p50") is None:
        return "not counted"
    return f"{s['p50']:,.0f} {unit} at the median (p95 {s['p95']:,.0f})"


def suggestions(stats: dict[str, Any], base: VariantSummary | None, backend: str,
                concurrency: int) -> tuple[Suggestion, ...]:
    """Which techniques fit the workload, in the order the playbook tries them: weights,
    prompt compression, prefix caching, KV cache, distillation. ``stats``: the workload's
    statistics at ingest (engine.ingest.stats); ``base``: its measured baseline, if any."""
    out = []
    # 1. Weights: decode-bound (most of a request's latency after its first token)
    weights = _variant_for(backend, weights=True)
    how = "" if weights else "a quantize_weights technique in a --spec (or vLLM's fp8)"
    if base is not None and base.latency and base.ttft and base.latency.p50 > 0:
        decode = 1 - base.ttft.p50 / base.latency.p50
        fits = decode >= DECODE_SHARE
        reason = (f"decoding is {_pct(decode)} of the baseline's median latency (first token "
                  f"{base.ttft.p50:.2f} s of {base.latency.p50:.2f} s): "
                  + ("decode-bound, so fewer weight bytes per token is the lever"
                     if fits else f"under {_pct(DECODE_SHARE)}, the prompt is the lever"))
    else:
        fits = True
        reason = ("no baseline measured yet: the playbook's first technique; the pilot "
                  "measures how much of the latency is decoding")
    out.append(Suggestion("8-bit / FP8 / 4-bit weights", fits, reason, weights, how))

    # 2. Prompt compression: long prompts, or the prompt's own time a large share of latency
    tokens = stats.get("prompt_tokens")
    median = tokens.get("p50") if tokens else None
    measured_in = base.prompt_tokens_original if base else None
    measured_out = base.output_tokens if base else None
    prefill = (base.ttft.p50 / base.latency.p50 if base is not None and base.latency
               and base.ttft and base.latency.p50 > 0 else None)
    long_prompts = median is not None and median >= LONG_PROMPT_TOKENS
    prompt_bound = prefill is not None and prefill >= PREFILL_SHARE
    parts = [f"prompts are {_summary_text(tokens)}"]
    if measured_in is not None and measured_out:
        parts.append(f"{measured_in:,.0f} tokens in and {measured_out:,.0f} out per request "
                     f"({_pct(measured_in / (measured_in + measured_out))} input)")
    if prefill is not None:
        parts.append(f"the first token takes {_pct(prefill)} of the median latency")
    if long_prompts or prompt_bound:
        verdict = "long prompts or slow first tokens: fewer input tokens is the lever"
    else:
        verdict = (f"short prompts (under {LONG_PROMPT_TOKENS:,} tokens at the median"
                   + (f", first token under {_pct(PREFILL_SHARE)} of the latency"
                      if prefill is not None else "") + "): little to gain from compressing")
    out.append(Suggestion("Prompt compression (LLMLingua)", long_prompts or prompt_bound,
                          "; ".join(parts) + f": {verdict}", _variant_for(backend, prompt=True)))

    # 3. Prefix caching: a large shared prefix
    prefix = stats.get("prefix")
    if prefix:
        cacheable = prefix["cacheable_share"]
        fits = cacheable >= PREFIX_SHARE
        reason = (f"{_pct(cacheable)} of input tokens are in {prefix['block']}-token blocks "
                  f"shared with an earlier request ({prefix['with_shared_prefix']:,} of "
                  f"{prefix['n']:,} requests share one): "
                  + ("a prefix cache skips them" if fits else
                     f"under {_pct(PREFIX_SHARE)}, little for a cache to skip"))
    else:
        fits, reason = False, ("shared prefixes not counted (the embedded model's tokenizer was "
                               "not prepared at ingest; `roilab prepare-model`, then open the "
                               "workload again)")
    on_vllm = backend == "vllm"
    out.append(Suggestion("Prefix caching", fits, reason, "prefix-cache" if on_vllm else None,
                          "" if on_vllm else "vLLM's prefix cache: --backend vllm --variants "
                          "prefix-cache (measured against the other variants with it off)"))

    # 4. KV cache: at the target concurrency, a large share of the memory beside the weights
    kv = _variant_for(backend, kv=True)
    kv_how = "" if kv else ("--backend vllm --variants fp8-kv, or a quantize_kv_cache "
                            "technique in a --spec")
    if (base is not None and base.kv_bytes_per_token and base.device_memory_bytes
            and measured_in is not None and measured_out is not None):
        need = base.kv_bytes_per_token * (measured_in + measured_out) * concurrency
        room = base.device_memory_bytes - (base.weight_bytes or 0)
        frac = need / room if room > 0 else float("inf")
        fits = frac >= KV_SHARE
        reason = (f"{concurrency} requests at once hold {need / 2**20:,.0f} MiB of KV cache "
                  f"({base.kv_bytes_per_token:,.0f} bytes/token x {measured_in + measured_out:,.0f} "
                  f"tokens each), {_pct(frac)} of the {room / 2**30:,.1f} GiB beside the weights: "
                  + ("the cache limits the batch, so fewer bytes per token is the lever" if fits
                     else f"under {_pct(KV_SHARE)}, not the limit here"))
    else:
        fits = False
        reason = ("the KV cache per token and the device's memory come from a measured "
                  "baseline" + ("" if base is None else "; this one did not report them"))
    out.append(Suggestion("FP8 / 4-bit KV cache", fits, reason, kv, kv_how))

    # 5. Distillation: a narrow task (one shared instruction) with reference answers
    n = stats.get("n") or 0
    refs = stats.get("with_reference", 0)
    ref_share = refs / n if n else 0.0
    shared = prefix["shared_share"] if prefix else None
    fits = ref_share >= REFERENCE_SHARE and shared is not None and shared >= PREFIX_SHARE
    reason = (f"{refs:,} of {n:,} requests have a reference answer"
              + (f"; {_pct(shared)} of input tokens repeat an earlier prompt's start"
                 if shared is not None else "")
              + (": a narrow task with answers to train a smaller student on" if fits else
                 f": a student needs references on {_pct(REFERENCE_SHARE)} of requests and "
                 "one task (a shared instruction)"))
    out.append(Suggestion("Distillation", fits, reason, None,
                          "a distill technique in a --spec (it trains a student on held-out "
                          "requests; minutes on a GPU)"))
    return tuple(out)


def plan(workload: Workload, stats: dict[str, Any], runs: Sequence[Run],
         reports: dict[int, PilotReport], case: BusinessCase | None = None,
         backend: str | None = None, concurrency: int = 8) -> Playbook:
    """The playbook of one workload from its figures. ``runs``: its runs, newest first;
    ``reports``: the PilotReport of the runs the steps name (``chosen_runs``); ``case``: the
    business case of the "after" run; ``backend``: the serving backend to suggest for (None:
    the newest run's baseline's, else transformers)."""
    baseline_run, after_run, chosen_run = chosen_runs(runs)
    if backend is None:
        newest = runs[0].variants[0].spec.get("backend") if runs and runs[0].variants else None
        backend = newest or "transformers"
    measured = after_run or baseline_run
    base = reports[measured.id].variants[0] if measured and measured.id in reports else None
    sugg = suggestions(stats, base, backend, concurrency)
    draft = Playbook(workload, backend, (), sugg)

    found = [_profile_step(workload, stats)]
    if baseline_run is not None:
        b = reports[baseline_run.id].variants[0] if baseline_run.id in reports else None
        found.append(Step("baseline", "Baseline measured", DONE, _baseline_text(baseline_run, b),
                          "results", baseline_run.id, f"roilab show {baseline_run.id}"))
    else:
        found.append(Step("baseline", "Baseline measured", "", "run a pilot: the baseline is "
                          "its first variant, measured on this workload's requests", "run",
                          None, draft.pilot_command()))
    if chosen_run is not None:
        names = ", ".join(v.name for v in chosen_run.variants[1:])
        found.append(Step("chosen", "Techniques chosen", DONE,
                          f"run #{chosen_run.id}: {names}", "results", chosen_run.id,
                          f"roilab show {chosen_run.id}"))
    else:
        fitting = ", ".join(draft.suggested) or "none fits yet"
        found.append(Step("chosen", "Techniques chosen", "", f"the suggested pilot: {fitting} "
                          "beside the baseline (why: below)", "run", None,
                          draft.pilot_command()))
    if after_run is not None:
        rep = reports.get(after_run.id)
        found.append(Step("after", "After measured", DONE, _after_text(after_run, rep),
                          "results", after_run.id, f"roilab show {after_run.id}"))
    else:
        found.append(Step("after", "After measured", "", "a pilot whose baseline and at "
                          "least one technique both ran", "run", None, draft.pilot_command()))
    if case is not None and case.baseline_monthly_cost is not None:
        found.append(Step("portfolio", "In the portfolio", DONE, _case_text(case), "business",
                          case.run_id, f"roilab portfolio {case.run_id}"))
    else:
        why = ("its after run's baseline has no monthly cost" if case is not None else
               "the business case of a run with a technique measured, rolled up with the "
               "workflows piloted before it")
        found.append(Step("portfolio", "In the portfolio", "", why, "business",
                          after_run.id if after_run else None,
                          f"roilab portfolio {after_run.id}" if after_run else ""))
    steps, seen_next = [], False
    for s in found:
        if s.state == DONE:
            steps.append(s)
        else:
            steps.append(_with_state(s, NOT_STARTED if seen_next else NEXT))
            seen_next = True
    return Playbook(workload, backend, tuple(steps), sugg)


def _with_state(s: Step, state: str) -> Step:
    return Step(s.key, s.title, state, s.detail, s.page, s.run_id, s.command)


def chosen_runs(runs: Sequence[Run]) -> tuple[Run | None, Run | None, Run | None]:
    """Of a workload's runs (newest first): the newest with its baseline measured, the newest
    with its baseline and another variant measured ("after"), the newest with a technique
    beside the baseline (whatever its state)."""
    def done(v) -> bool:
        return v.status == Status.DONE

    baseline = next((r for r in runs if r.variants and done(r.variants[0])), None)
    after = next((r for r in runs if r.variants and done(r.variants[0])
                  and any(done(v) for v in r.variants[1:])), None)
    chosen = next((r for r in runs if len(r.variants) > 1), None)
    return baseline, after, chosen


def _profile_step(workload: Workload, stats: dict[str, Any]) -> Step:
    parts = [f"{workload.n_requests:,} requests", f"prompts {_summary_text(stats.get('prompt_tokens'))}"]
    prefix = stats.get("prefix")
    if prefix:
        parts.append(f"{_pct(prefix['cacheable_share'])} of input tokens a prefix cache could skip")
    parts.append(f"{stats.get('with_reference', 0):,} with reference answers")
    return Step("profile", "Workload profile", DONE, "; ".join(parts), "upload", None,
                f"roilab playbook {workload.id}")


def _baseline_text(run: Run, b: VariantSummary | None) -> str:
    if b is None or b.tokens_per_s is None:
        return f"run #{run.id}: baseline '{run.variants[0].name}' measured"
    lat = f", {b.latency.p50:.2f} s median latency" if b.latency else ""
    # no $ here: the bill is the business case's (step 5), right-sized as on every page
    return f"run #{run.id}: {b.tokens_per_s:,.1f} tokens/s{lat}"


def _after_text(run: Run, rep: PilotReport | None) -> str:
    if rep is None:
        return f"run #{run.id}"
    base = rep.variants[0]
    parts = []
    for v in rep.variants[1:]:
        if v.status != Status.DONE:
            parts.append(f"{v.name} {v.status}")
            continue
        speed = (f"{v.tokens_per_s / base.tokens_per_s:.2f}x tokens/s"
                 if v.tokens_per_s and base.tokens_per_s else "tokens/s not measured")
        agree = f", cosine {v.base_cosine:.2f} to the baseline" if v.base_cosine is not None else ""
        parts.append(f"{v.name} {speed}{agree}")
    return f"run #{run.id}: " + "; ".join(parts)


def _case_text(case: BusinessCase) -> str:
    rec = case.recommendation.name
    if rec is None:
        return (f"run #{case.run_id}: no variant passes, the baseline stays "
                f"(${case.baseline_monthly_cost:,.0f}/month)")
    if not case.moves:  # the baseline itself is recommended: nothing to save
        return (f"run #{case.run_id}: keep the baseline, no variant is cheaper while passing "
                f"(${case.baseline_monthly_cost:,.0f}/month)")
    pay = case.roi.payback_months
    payback = f", payback {pay:.1f} months" if pay is not None else ""
    return (f"run #{case.run_id}: {rec} saves ${case.monthly_savings:,.0f}/month of "
            f"${case.baseline_monthly_cost:,.0f}{payback}")


def workload_playbook(store: Store, workload_id: int, backend: str | None = None,
                      count_tokens=None) -> Playbook:
    """The playbook of a stored workload: its statistics, its runs, the reports of the runs
    the steps name and the business case of its "after" run (the run's stored assumptions,
    as every page and `roilab show` price it). StorageError for an unknown workload."""
    from engine.business.case import case_from_report
    from engine.core.errors import RoilabError
    from engine.pilot.report import build_report

    workload = store.get_workload(workload_id)
    stats = store.workload_stats(workload_id, count_tokens)
    runs = store.list_runs(workload_id)  # newest first
    baseline, after, _ = chosen_runs(runs)
    # the baseline step's run and the after step's run, often the same one: built once each
    reports = {i: build_report(store, i) for i in {r.id for r in (baseline, after) if r}}
    case = None
    if after is not None:
        try:
            case = case_from_report(reports[after.id], None, store.hardware_catalog())
        except RoilabError:
            case = None  # the step says the case is missing
    concurrency = case.assumptions.concurrency if case is not None else 8
    book = plan(workload, stats, runs, reports, case, backend, concurrency)
    if after is None:
        return book
    from engine.business.claims import score

    return dataclasses.replace(book, scorecard=score(reports[after.id], case),
                               scorecard_run=after.id)
