"""The one engine entry point: ``run_pilot(spec, store, settings, on_progress)``.

Replays a stored workload through each variant, in order (the first is the baseline),
records every measurement in the store, and keeps going when a variant fails: the failed
variant is stored with its reason. Presentation is injected through ``on_progress``.
"""
from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from engine.backends import Backend, get_backend
from engine.backends.base import resolve_device
from engine.core.domain import (
    RequestResult,
    Run,
    Status,
    StoredRequest,
    VariantMeasurements,
    VariantRun,
    split_workload,
)
from engine.core.errors import RoilabError, SpecError
from engine.core.settings import Settings
from engine.models.prep import check_model_name, is_random_model, resolve_model
from engine.pilot import accuracy, protocol
from engine.pilot.liveness import Heartbeat, reap_dead_runs, stop_run, this_host
from engine.specs.pilot import (
    GenerationSettings,
    PilotSpec,
    VariantSpec,
    default_repeats,
    variant_generation,
)
from engine.store.store import Store
from engine.techniques import technique_module
from engine.techniques.base import PromptContext


@dataclass(frozen=True)
class Progress:
    variant: str
    variant_index: int  # 0-based
    n_variants: int
    done: int  # requests finished in this variant
    total: int
    message: str

    @property
    def fraction(self) -> float:
        """Overall fraction of the pilot done, for a single progress bar."""
        within = self.done / self.total if self.total else 0.0
        return min(1.0, (self.variant_index + within) / self.n_variants)


ProgressFn = Callable[[Progress], None]


RESUMABLE = (Status.INTERRUPTED, Status.CANCELLED, Status.PARTIAL, Status.FAILED)
CANCELLABLE = (Status.PENDING, Status.RUNNING, Status.INTERRUPTED)


def run_pilot(spec: PilotSpec, store: Store, settings: Settings,
              on_progress: ProgressFn | None = None, run_id: int | None = None) -> Run:
    """Run a pilot end to end and return the stored Run.

    ``run_id`` continues a run created beforehand with ``create_pilot_run`` (the dashboard
    does this so the run is listed before inference starts), or one being resumed: variants
    already done are kept as they are and not run again.
    """
    run = store.get_run(run_id) if run_id else create_pilot_run(spec, store)
    requests, calibrate_on, is_eval_set = split_workload(store.get_requests(spec.workload_id),
                                                         spec.max_requests)
    calibration = Calibration([list(r.request.messages) for r in calibrate_on],
                              is_eval_set=is_eval_set)
    store.set_run_status(run.id, Status.RUNNING)
    try:
        with Heartbeat(store, run.id):  # this process owns the run; a reader can tell if it dies
            _run_variants(spec, run, requests, calibration, store, settings, on_progress)
    except BaseException as exc:
        # Stopped from outside (Ctrl+C, SIGTERM through the CLI, the dashboard's script
        # stopped or rerun: exceptions that are not Exceptions): "interrupted", resumable; a
        # bug outside any one variant: "failed". Either way the run must not stay "running"
        # forever, and finished variants keep their stored results. (A SIGKILL leaves no
        # chance to say so: engine.pilot.liveness finds that run by its owner.)
        stopped = not isinstance(exc, Exception)
        stop_run(store, run.id, Status.INTERRUPTED if stopped else Status.FAILED,
                 f"Interrupted: {type(exc).__name__}: {exc}")
        raise
    status, reason = pilot_outcome(store.get_run(run.id))
    store.set_run_status(run.id, status, reason)
    return store.get_run(run.id)


def resume_pilot(run_id: int, store: Store, settings: Settings,
                 on_progress: ProgressFn | None = None) -> Run:
    """Run again only the variants of a stopped run that are not done, with its stored spec.

    A variant's results are written in one transaction with its done (Store.finish_variant),
    so an unfinished variant has none to duplicate; a finished baseline's stored results
    score the variants run now.
    """
    reap_dead_runs(store)  # a run whose process died is interrupted, so resumable at once
    run = store.get_run(run_id)
    if run.status in (Status.PENDING, Status.RUNNING):
        raise SpecError(f"Run {run_id} is {run.status}{_still_running(run_id, store)}")
    if run.status not in RESUMABLE:
        raise SpecError(f"Run {run_id} is {run.status}; only an {', '.join(RESUMABLE)} run can "
                        "be resumed (every variant already ran).")
    return run_pilot(PilotSpec.from_run(run), store, settings, on_progress, run_id)


def cancel_run(run_id: int, store: Store) -> Run:
    """Mark a pending, running or interrupted run and its unfinished variants cancelled
    (a process that was killed cannot do it itself); finished results are kept."""
    reap_dead_runs(store)
    run = store.get_run(run_id)
    if run.status not in CANCELLABLE:
        raise SpecError(f"Run {run_id} is {run.status}, already finished; only a "
                        f"{', '.join(CANCELLABLE)} run can be cancelled.")
    if any(o.run_id == run_id for o in store.active_run_owners()):
        raise SpecError(f"Run {run_id} is still running{_still_running(run_id, store)}")
    for v in run.variants:
        if v.status != Status.DONE:
            store.set_variant_status(v.id, Status.CANCELLED, "Cancelled before it finished")
    store.set_run_status(run_id, Status.CANCELLED, "Cancelled by the user")
    return store.get_run(run_id)


def _still_running(run_id: int, store: Store) -> str:
    """Where a running run runs and how to stop it (its process is alive), or, for a run
    stored before runs had owners, the way out if its process died."""
    owner = next((o for o in store.active_run_owners() if o.run_id == run_id), None)
    if owner is None:
        return f"; if its process died, `roilab cancel {run_id}` first."
    where = "this machine" if owner.host == this_host() else owner.host
    return (f" in process {owner.pid} on {where} (heartbeat {owner.heartbeat_at:%H:%M:%S} "
            "UTC); stop it with Ctrl+C there (or `kill` that process) and it is stored as "
            "interrupted, ready to resume.")


def pilot_outcome(run: Run) -> tuple[Status, str | None]:
    """``(status, reason)`` of a run whose variants have all finished or failed.

    "failed" when the baseline (the first variant, which every other is compared with)
    failed, or when every variant beside it did; "partial" when some of the others failed;
    else "done". The reason names each failed variant with its own reason.
    """
    base, others = run.variants[0], run.variants[1:]
    failed = [v for v in others if v.status != Status.DONE]
    each = "; ".join(f"'{v.name}': {_why(v)}" for v in failed)
    if base.status != Status.DONE:
        also = f" The other failures: {each}." if failed else ""
        return Status.FAILED, (f"The baseline '{base.name}' failed: {_why(base)}. "
                          "No variant can be compared with it; fix the baseline and run the "
                          f"pilot again.{also}")
    if failed and len(failed) == len(others):
        return Status.FAILED, (f"Every variant beside the baseline failed ({each}); only the "
                          "baseline was measured.")
    if failed:
        return Status.PARTIAL, (f"{len(failed)} of {len(run.variants)} variants failed ({each}); "
                           "the others are measured against the baseline.")
    return Status.DONE, None


def _why(v: VariantRun) -> str:
    return (v.error or f"no reason recorded (status {v.status})").rstrip(". ")


@dataclass(frozen=True)
class Calibration:
    prompts: list[list[dict]]
    is_eval_set: bool  # True when the workload had no requests beyond those evaluated


def preflight(vspec: VariantSpec) -> str | None:
    """Why this variant cannot run here, or None. Checked for every variant before any runs."""
    try:
        device = resolve_device(vspec.device)
        if device == "cuda" and not _cuda_available():
            raise SpecError(f"variant {vspec.name!r} asks for CUDA but no GPU is visible; set "
                            "device to 'auto' or 'cpu', or run the pilot on a GPU machine.")
        for tech in vspec.techniques:
            technique_module(tech.kind).check(tech, device)
        check_model_name(vspec.model)  # a missing folder (not a hub id) is refused before loading
        get_backend(vspec.backend).check(vspec, device)  # an unknown name lists the known ones
    except RoilabError as exc:
        return f"Refused before the pilot started: {exc}"
    return None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _run_variants(spec: PilotSpec, run: Run, requests: list[StoredRequest],
                  calibration: Calibration, store: Store, settings: Settings,
                  on_progress: ProgressFn | None) -> None:
    refused = {v.name: preflight(v) for v in spec.variants}
    baseline: list[RequestResult] | None = None
    embedder: accuracy.Embedder | None = None
    for i, (vrun, vspec) in enumerate(zip(run.variants, spec.variants, strict=True)):
        if vrun.status == Status.DONE:  # a resumed run: finished before, kept as stored
            if i == 0 and not is_random_model(vspec.model):
                baseline = store.get_results(vrun.id)
            continue
        # Each prompt-stage technique (prompt compression) and each timed pass is a pass of
        # its own over the requests: each gets its share of the bar.
        repeats = _repeats(spec, vspec)
        steps = len(requests) * (repeats + len(_prompt_stage(vspec)))
        notify = _notifier(on_progress, vspec.name, i, _bar_steps(spec), steps)
        if refused[vspec.name]:
            store.set_variant_status(vrun.id, Status.FAILED, refused[vspec.name])
            notify(steps, "refused")
            continue
        store.set_variant_status(vrun.id, Status.RUNNING)
        try:
            results, measured = _run_variant(
                vspec, requests, calibration, variant_generation(spec.generation, vspec),
                settings, notify, repeats)
            if not is_random_model(vspec.model):  # random weights: accuracy not measured
                embedder = embedder or accuracy.Embedder(settings.embedding_model)
                results = accuracy.score(results, requests, baseline if i else None, embedder)
            store.finish_variant(vrun.id, results, measured)
            if i == 0 and not is_random_model(vspec.model):
                baseline = results
            notify(steps, "done")
        except Exception as exc:  # a failing variant is recorded; the others still run
            store.set_variant_status(vrun.id, Status.FAILED, _reason(exc))
            notify(steps, f"failed: {_reason(exc)}")
    _remeasure_baseline(spec, store.get_run(run.id), requests, calibration, store, settings,
                        on_progress)


def _repeats(spec: PilotSpec, vspec: VariantSpec) -> int:
    try:
        device = resolve_device(vspec.device)
    except RoilabError:
        device = "cpu"  # preflight refuses it with the reason
    return default_repeats(spec.measurement, vspec.backend, device)


def _bar_steps(spec: PilotSpec) -> int:
    """Sections of the progress bar: one per variant, one for the baseline's re-measure."""
    again = spec.measurement.remeasure_baseline and len(spec.variants) > 1
    return len(spec.variants) + again


def _remeasure_baseline(spec: PilotSpec, run: Run, requests: list[StoredRequest],
                        calibration: Calibration, store: Store, settings: Settings,
                        on_progress: ProgressFn | None) -> None:
    """Time the baseline once more after every other variant (engine.pilot.protocol): the
    run's noise floor. Skipped for a one-variant pilot, a failed baseline, or one measured
    again already (a resumed run); a failure here is noted, never fails the run."""
    base, vspec = run.variants[0], spec.baseline
    if (not spec.measurement.remeasure_baseline or len(run.variants) < 2
            or base.status != Status.DONE
            or any(p.role == "baseline_end" for p in store.get_passes(base.id))):
        return
    steps = len(requests) * (1 + len(_prompt_stage(vspec)))
    notify = _notifier(on_progress, f"{vspec.name} (again)", len(run.variants),
                       _bar_steps(spec), steps)
    try:
        _, measured = _run_variant(vspec, requests, calibration,
                                   variant_generation(spec.generation, vspec), settings, notify,
                                   1, role="baseline_end")
        store.add_passes(base.id, list(measured.passes))
        notify(steps, "done")
    except Exception as exc:  # noqa: BLE001 - the noise floor is a check, not a result
        notify(steps, f"baseline re-measure failed: {_reason(exc)}")


def create_pilot_run(spec: PilotSpec, store: Store) -> Run:
    if not store.get_requests(spec.workload_id, limit=1):
        raise SpecError(f"Workload {spec.workload_id} has no requests; ingest a log first.")
    store.get_hardware(spec.cost.hardware)  # an unknown key is refused now, not after the pilot
    return store.create_run(spec.workload_id, spec.name, spec.model_dump(mode="json"),
                            [v.model_dump(mode="json") for v in spec.variants])



def _reason(exc: Exception) -> str:
    if isinstance(exc, RoilabError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {last.filename.split('/')[-1]}:{last.lineno})"


def _notifier(on_progress: ProgressFn | None, name: str, idx: int, n: int, total: int):
    def notify(done: int, message: str) -> None:
        if on_progress:
            on_progress(Progress(name, idx, n, done, total, message))
    return notify


def _run_variant(vspec: VariantSpec, requests: list[StoredRequest], calibration: Calibration,
                 gen: GenerationSettings, settings: Settings, notify, repeats: int = 1,
                 role: str = "timed") -> tuple[list[RequestResult], VariantMeasurements]:
    """Load, warm up, prepare the prompts, then ``repeats`` timed passes (engine.pilot.protocol):
    the first pass's outputs, each request's median latency, the medians as measurements."""
    notify(0, "preparing model")
    backend: Backend = get_backend(vspec.backend)(vspec, resolve_model(vspec.model, settings))
    try:
        notify(0, "loading model")
        info = backend.load(calibration.prompts, calibration.is_eval_set)
        report = dict(info.technique_report)
        originals = [list(r.request.messages) for r in requests]
        # One short untimed generation first, so the first timed batch does not pay one-off
        # start-up costs (kernel selection, allocator growth) that every variant would
        # otherwise pay differently depending on its position in the pilot.
        notify(0, "warming up")
        backend.warm_up(originals, gen.batch_size, gen.max_new_tokens)
        t0 = time.perf_counter()
        sent, compress_s, prompt_reports = _prepare_prompts(vspec, originals, settings, backend,
                                                            notify)
        prepare_s = time.perf_counter() - t0
        prepare_peak = backend.peak_memory_bytes()  # whatever a technique loaded counts
        report.update(prompt_reports)
        offset = len(sent) * len(prompt_reports)
        order = protocol.batch_order(backend, sent)  # bookkeeping, outside every timed pass
        all_gens, passes = protocol.timed_passes(
            backend, sent, order, gen.batch_size, gen.max_new_tokens, repeats, prepare_s,
            compress_s, lambda d, m: notify(offset + d, m), role)
        gens = protocol.median_generations(all_gens)
        if backend.serving_report():
            report["serving"] = backend.serving_report()
        if any(g.engine_metrics for g in gens):  # the engine's own per-request timings
            report["engine_metrics"] = [{"request_index": r.index, **(g.engine_metrics or {})}
                                        for r, g in zip(requests, gens, strict=True)]
        results = [RequestResult(
            request_index=r.index, output_text=g.text,
            prompt_tokens_logged=r.request.logged_prompt_tokens,
            prompt_tokens_original=backend.count_tokens(orig), prompt_tokens_sent=g.prompt_tokens,
            output_tokens=g.output_tokens, ttft_s=g.ttft_s + cs, latency_s=g.latency_s + cs,
            compress_s=cs) for r, orig, g, cs in zip(requests, originals, gens, compress_s, strict=True)]
        report["memory"] = backend.memory_report()  # peak, weights, KV capacity reserved
        report["measurement"] = protocol.measurement_report(passes,
                                                            protocol.outputs_differ(all_gens))
        peak = protocol.spread([p.peak_mem_bytes for p in protocol.memory_passes(passes)])
        peak_bytes = max(int(peak.median), prepare_peak or 0) if peak else prepare_peak
        report["memory"]["peak_bytes"] = peak_bytes
        return results, VariantMeasurements(
            load_s=info.load_s, weight_bytes=info.weight_bytes, peak_mem_bytes=peak_bytes,
            wall_s=statistics.median(p.wall_s for p in passes),
            throughput_tok_s=statistics.median(p.throughput_tok_s for p in passes),
            device=info.device, technique_report=report, passes=tuple(passes))
    finally:
        backend.close()


def _prompt_stage(vspec: VariantSpec) -> list:
    """The variant's prompt-stage techniques, in the spec's order."""
    return [t for t in vspec.techniques if technique_module(t.kind).stage == "prompt"]


def _prepare_prompts(vspec: VariantSpec, originals: list[list[dict]], settings: Settings,
                     backend: Backend, notify) -> tuple[list[list[dict]], list[float], dict]:
    """Run each prompt-stage technique's ``prepare_prompts`` hook over every request, each
    on the previous one's output; returns (messages to send, seconds per request, reports by
    kind). The seconds are added to each request's latency by the caller and fall inside the
    pilot's wall time. Called after the backend has loaded (and reset its peak-memory
    counter), so whatever a technique loads counts in the variant's peak memory."""
    sent, seconds, reports = originals, [0.0] * len(originals), {}
    ctx = PromptContext(model=vspec.model, device=getattr(backend, "device", "cpu"),
                        settings=settings)
    for k, tech in enumerate(_prompt_stage(vspec)):
        prepared = technique_module(tech.kind).prepare_prompts(
            tech, sent, ctx, lambda i, m, k=k: notify(k * len(originals) + i, m))
        sent = prepared.messages
        seconds = [a + b for a, b in zip(seconds, prepared.seconds, strict=True)]
        reports[tech.kind] = prepared.report
    return sent, seconds, reports
