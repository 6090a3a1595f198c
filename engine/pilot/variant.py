"""One variant under measurement: loaded and prepared once (``load_variant``), timed in as
many passes as the protocol asks (``LoadedVariant.time``), then turned into its results and
measurements (``LoadedVariant.finish``). ``run_variant`` does the three back to back; the
runner's interleaved rounds (engine.pilot.rounds) keep several loaded and alternate their
passes."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.backends import Backend, get_backend
from engine.backends.base import LoadInfo
from engine.core.domain import (
    Generation,
    RequestResult,
    StoredRequest,
    TimedPass,
    VariantMeasurements,
)
from engine.core.settings import Settings
from engine.models.prep import resolve_model
from engine.pilot import protocol, warmup
from engine.specs.pilot import GenerationSettings, VariantSpec
from engine.techniques import technique_module
from engine.techniques.base import PromptContext


@dataclass(frozen=True)
class Calibration:
    prompts: list[list[dict]]
    is_eval_set: bool  # True when the workload had no requests beyond those evaluated


@dataclass(frozen=True)
class Progress:
    variant: str
    variant_index: int  # 0-based
    n_variants: int
    done: int  # requests finished in this variant
    total: int
    message: str
    overall: float | None = None  # the pilot's fraction done, when variants alternate

    @property
    def fraction(self) -> float:
        """Overall fraction of the pilot done, for a single progress bar."""
        if self.overall is not None:
            return min(1.0, self.overall)
        within = self.done / self.total if self.total else 0.0
        return min(1.0, (self.variant_index + within) / self.n_variants)


ProgressFn = Callable[[Progress], None]
Notify = Callable[[int, str], None]


def notifier(on_progress: ProgressFn | None, name: str, idx: int, n: int, total: int,
             overall: Callable[[int], float] | None = None) -> Notify:
    """``notify(done, message)`` for one variant's section of the bar; ``overall`` (given
    this variant's steps done, the pilot's fraction) when variants alternate."""
    def notify(done: int, message: str) -> None:
        if on_progress:
            on_progress(Progress(name, idx, n, done, total, message,
                                 overall(done) if overall else None))
    return notify


def prompt_stage(vspec: VariantSpec) -> list:
    """The variant's prompt-stage techniques, in the spec's order."""
    return [t for t in vspec.techniques if technique_module(t.kind).stage == "prompt"]


@dataclass
class LoadedVariant:
    """A variant loaded, warmed up and with its prompts prepared, ready for timed passes.

    A variant with a prompt-stage technique (prompt compression) compresses its prompts
    again in every pass after the first (the first uses what ``load_variant`` prepared):
    compression is part of serving each request, so its time is measured as often as the
    generation and its noise shows in the spread instead of riding on one measurement."""

    vspec: VariantSpec
    backend: Backend
    info: LoadInfo
    requests: list[StoredRequest]
    gen: GenerationSettings
    settings: Settings
    notify: Notify  # steps: each pass is ``unit`` (its compression, then its generation)
    report: dict
    originals: list[list[dict]]
    sent: list[list[dict]]
    compress_s: list[float]
    prepare_peak: int | None
    prepare_how: str | None  # how prepare_peak was counted (_prompt_stage_peak)
    order: list[int]
    stages: int  # prompt-stage techniques
    warm: warmup.WarmUp | None = None  # what the warm-up ran
    replays: int = 1  # replays of the request set in each timed pass
    min_pass_s: float = 0.0
    device_kind: str = "cpu"  # "cuda", "cpu" or "endpoint": the warm-up's rules
    rewarms: int = 0  # warm-ups again after being resumed beside other variants
    all_gens: list[list[Generation]] = field(default_factory=list)
    passes: list[TimedPass] = field(default_factory=list)
    compress_by_pass: list[list[float]] = field(default_factory=list)

    @property
    def unit(self) -> int:
        """Progress steps of one pass: each prompt-stage technique's, then the generation's."""
        return len(self.requests) * (1 + self.stages)

    def time(self, repeats: int, role: str = "timed", of: int | None = None,
             label: str = "") -> list[TimedPass]:
        """Run ``repeats`` timed passes, numbered on from the passes already run (``of`` in
        all, for the progress labels); the "timed" ones are kept for the results, another
        role's (the baseline's re-measure, numbered from 0, after the timed passes on the
        bar) are only returned."""
        timed, n, out = role == "timed", len(self.requests), []
        of = of or (len(self.passes) + repeats if timed else repeats)
        for j in range(repeats):
            k = len(self.passes) if timed else j
            base = (k if timed else len(self.passes) + j) * self.unit
            sent, cs = self.sent, self.compress_s
            if self.stages and (self.passes or not timed):
                sent, cs, _ = _prepare_prompts(
                    self.vspec, self.originals, self.settings, self.backend,
                    lambda i, m, b=base, k=k: self.notify(b + i, f"{label}pass {k + 1}: {m}"))
            # The pass's wall time includes compressing each of its requests (in series, as
            # a request path would), not loading the scorer model (start-up, as loading the
            # served model is).
            gens, passes = protocol.timed_passes(
                self.backend, sent, self.order, self.gen.batch_size, self.gen.max_new_tokens,
                1, sum(cs), cs,
                lambda x, m, b=base, k=k: self.notify(b + self.stages * n + x - k * n,
                                                      label + m),
                role, first=k, of=of, replays=self.replays)
            out.extend(passes)
            if timed:
                self.all_gens.extend(gens)
                self.passes.extend(passes)
                self.compress_by_pass.append(list(cs))
        return out

    def rewarm(self) -> None:
        """One warm-up round again (untimed), after the variant was resumed from beside
        others: its first batch after waking must not be timed."""
        sub = warmup.warm_up_order(self.order, self.gen.batch_size,
                                     whole_set=self.device_kind == "cuda")
        self.backend.begin_replay()
        protocol.generate_batched(self.backend, self.sent, sub, self.gen.batch_size,
                                  self.gen.max_new_tokens, lambda d, m: None)
        self.backend.warmed_up()
        self.rewarms += 1

    def finish(self, interleaved_with: tuple[str, ...] = (), note: str | None = None,
               ) -> tuple[list[RequestResult], VariantMeasurements]:
        """The first pass's outputs with each request's median latency (compression
        included) over the passes, and the medians of the timed passes as the variant's
        measurements."""
        backend, passes, report = self.backend, self.passes, dict(self.report)
        med = statistics.median
        firsts = self.all_gens[0]
        per_pass = list(zip(self.all_gens, self.compress_by_pass, strict=True))
        if backend.serving_report():
            report["serving"] = backend.serving_report()
        if any(g.engine_metrics for g in firsts):  # the engine's own per-request timings
            report["engine_metrics"] = [{"request_index": r.index, **(g.engine_metrics or {})}
                                        for r, g in zip(self.requests, firsts, strict=True)]
        results = [RequestResult(
            request_index=r.index, output_text=g.text,
            prompt_tokens_logged=r.request.logged_prompt_tokens,
            prompt_tokens_original=backend.count_tokens(orig), prompt_tokens_sent=g.prompt_tokens,
            output_tokens=g.output_tokens,
            ttft_s=med(gs[i].ttft_s + cs[i] for gs, cs in per_pass),
            latency_s=med(gs[i].latency_s + cs[i] for gs, cs in per_pass),
            compress_s=med(cs[i] for _, cs in per_pass))
            for i, (r, orig, g) in enumerate(zip(self.requests, self.originals, firsts,
                                                 strict=True))]
        report["memory"] = backend.memory_report()  # peak, weights, KV capacity reserved
        report["measurement"] = protocol.measurement_report(
            passes, protocol.outputs_differ(self.all_gens), interleaved_with)
        report["measurement"].update(self.pass_report())
        if note:
            report["measurement"]["back_to_back_because"] = note
        peak = protocol.spread([p.peak_mem_bytes for p in protocol.memory_passes(passes)])
        peak_bytes = max(int(peak.median), self.prepare_peak or 0) if peak else self.prepare_peak
        report["memory"]["peak_bytes"] = peak_bytes
        if self.prepare_peak is not None and peak_bytes == self.prepare_peak:
            report["memory"]["peak_method"] = (
                "the prompt stage's peak, higher than the timed passes' ("
                f"{report['memory'].get('peak_method') or 'not measured'}): {self.prepare_how}")
        info = self.info
        return results, VariantMeasurements(
            load_s=info.load_s, weight_bytes=info.weight_bytes, peak_mem_bytes=peak_bytes,
            # one replay of the request set (what the cost per request divides)
            wall_s=med(p.wall_s / (p.replays or 1) for p in passes),
            throughput_tok_s=med(p.throughput_tok_s for p in passes),
            device=info.device, technique_report=report, passes=tuple(passes))

    def pass_report(self) -> dict:
        """The warm-up and the pass length, for ``technique_report["measurement"]``."""
        out = {"min_pass_s": self.min_pass_s, "replays_per_pass": self.replays}
        if self.warm is not None:
            out["warm_up"] = {**self.warm.report(), "rewarms": self.rewarms}
        return out

    def close(self) -> None:
        self.backend.close()


def load_variant(vspec: VariantSpec, requests: list[StoredRequest], calibration: Calibration,
                 gen: GenerationSettings, settings: Settings, notify: Notify,
                 min_pass_s: float = 0.0, replays: int | None = None,
                 side_by_side: bool = False) -> LoadedVariant:
    """Load, prepare the prompts of and warm up one variant (at its timed batch size and
    output length, engine.pilot.warmup.warm_up); its passes replay the requests
    ``replays`` times (None: as often as lasts ``min_pass_s``, from the warm-up's pace).
    ``side_by_side``: it will be loaded beside others and switched with them. The backend is
    closed again if any of it fails."""
    notify(0, "preparing model")
    backend: Backend = get_backend(vspec.backend)(vspec, resolve_model(vspec.model, settings))
    backend.side_by_side = side_by_side
    try:
        notify(0, "loading model")
        info = backend.load(calibration.prompts, calibration.is_eval_set)
        originals = [list(r.request.messages) for r in requests]
        sent, compress_s, prompt_reports = _prepare_prompts(vspec, originals, settings, backend,
                                                            notify)
        # Whatever a prompt-stage technique loaded (LLMLingua's scoring model) counts in the
        # variant's peak; without one, what loading and warming up left is not serving.
        prepare_peak, prepare_how = _prompt_stage_peak(vspec, info, backend, prompt_reports)
        order = protocol.batch_order(backend, sent)  # bookkeeping, outside every timed pass
        # The variant's own requests, untimed, at the batch size and output length of the
        # timed passes, until the engine is at steady state: otherwise the first timed pass
        # pays the first use of the real batch shape (kernel selection, JIT, allocator).
        kind = _device_kind(vspec, info)
        done = len(prompt_reports) * len(originals)  # the prompts' preparation, on the bar
        warm = warmup.warm_up(backend, sent, order, gen.batch_size, gen.max_new_tokens, kind,
                              lambda _, m: notify(done, m),
                              paces_passes=replays is None and min_pass_s > 0)
        if replays is None:
            replays = warmup.replays_for(min_pass_s, warm.replay_s + sum(compress_s))
    except BaseException:
        backend.close()
        raise
    return LoadedVariant(vspec=vspec, backend=backend, info=info, requests=requests, gen=gen,
                         settings=settings, notify=notify,
                         report={**info.technique_report, **prompt_reports},
                         originals=originals, sent=sent, compress_s=compress_s,
                         prepare_peak=prepare_peak, prepare_how=prepare_how, order=order,
                         stages=len(prompt_reports), warm=warm, replays=replays,
                         min_pass_s=min_pass_s, device_kind=kind)


def _prompt_stage_peak(vspec: VariantSpec, info: LoadInfo, backend: Backend,
                       reports: dict) -> tuple[int | None, str | None]:
    """The variant's peak memory while its prompts were prepared (None without a prompt
    stage), and how it was counted. With transformers on the CPU, from exact parts as a timed pass's is: the served
    model's weights plus the most one technique held beside them (its weights and the RSS one
    request added, ``host_bytes_held``); the techniques run one after another, each freeing
    its model. Elsewhere (a GPU's counters, vLLM's engine process) the backend's own peak."""
    if not reports:
        return None, None
    held = [r.get("host_bytes_held") for r in reports.values()]
    if vspec.backend == "transformers" and _device_kind(vspec, info) == "cpu" \
            and info.weight_bytes and all(isinstance(h, int) for h in held):
        return info.weight_bytes + max(held), (
            "the served model's weights plus the most a prompt-stage model held beside them: "
            "its weights, counted exactly, and the most one request's compression added to "
            "the RSS after an untimed warm-up compression")
    return backend.peak_memory_bytes(), "measured while its prompt-stage models were loaded"


def _device_kind(vspec: VariantSpec, info: LoadInfo) -> str:
    if vspec.backend == "endpoint":
        return "endpoint"
    return "cuda" if info.device.startswith("cuda") else "cpu"


def run_variant(vspec: VariantSpec, requests: list[StoredRequest], calibration: Calibration,
                gen: GenerationSettings, settings: Settings, notify: Notify, repeats: int = 1,
                min_pass_s: float = 0.0, note: str | None = None,
                ) -> tuple[list[RequestResult], VariantMeasurements]:
    """Load, prepare the prompts, warm up, then ``repeats`` timed passes back to back
    (engine.pilot.protocol): the first pass's outputs, each request's median latency, the
    medians as measurements. ``note``: why its passes were not interleaved with others'."""
    loaded = load_variant(vspec, requests, calibration, gen, settings, notify, min_pass_s)
    try:
        loaded.time(repeats)
        return loaded.finish(note=note)
    finally:
        loaded.close()


def time_again(vspec: VariantSpec, requests: list[StoredRequest], calibration: Calibration,
               gen: GenerationSettings, settings: Settings, notify: Notify,
               replays: int | None = None, min_pass_s: float = 0.0) -> list[TimedPass]:
    """Load the baseline again and time it once (``role="baseline_end"``) with the same
    warm-up and, given ``replays`` (its timed passes'), the same pass length: the run's
    noise floor, for a baseline that was not kept loaded."""
    loaded = load_variant(vspec, requests, calibration, gen, settings, notify, min_pass_s,
                          replays)
    try:
        return loaded.time(1, "baseline_end")
    finally:
        loaded.close()


def _prepare_prompts(vspec: VariantSpec, originals: list[list[dict]], settings: Settings,
                     backend: Backend, notify: Notify
                     ) -> tuple[list[list[dict]], list[float], dict]:
    """Run each prompt-stage technique's ``prepare_prompts`` hook over every request, each
    on the previous one's output; returns (messages to send, seconds per request, reports by
    kind). The seconds are added to each request's latency by the caller and fall inside the
    pilot's wall time. Called after the backend has loaded (and reset its peak-memory
    counter), so whatever a technique loads counts in the variant's peak memory."""
    sent, seconds, reports = originals, [0.0] * len(originals), {}
    ctx = PromptContext(model=vspec.model, device=backend.device,
                        settings=settings)
    for k, tech in enumerate(prompt_stage(vspec)):
        prepared = technique_module(tech.kind).prepare_prompts(
            tech, sent, ctx, lambda i, m, k=k: notify(k * len(originals) + i, m))
        sent = prepared.messages
        seconds = [a + b for a, b in zip(seconds, prepared.seconds, strict=True)]
        reports[tech.kind] = prepared.report
    return sent, seconds, reports
