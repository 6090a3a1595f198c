"""The one engine entry point: ``run_pilot(spec, store, settings, on_progress)``.

Replays a stored workload through each variant (the first is the baseline), records every
measurement in the store, and keeps going when a variant fails: the failed variant is stored
with its reason. Variants whose backend can stay loaded side by side are timed in
interleaved rounds (engine.pilot.rounds), the others one after another
(engine.pilot.variant). Presentation is injected through ``on_progress``.
"""
from __future__ import annotations

import traceback

from engine.backends import get_backend
from engine.backends.base import resolve_device
from engine.core.domain import (
    RequestResult,
    Run,
    RunProgress,
    Status,
    StoredRequest,
    VariantMeasurements,
    VariantRun,
    split_workload,
)
from engine.core.errors import RoilabError, SpecError
from engine.core.settings import Settings
from engine.models.prep import check_model_name, is_random_model
from engine.pilot import accuracy
from engine.pilot.liveness import Heartbeat, reap_dead_runs, stop_run, this_host
from engine.pilot.rounds import Slot, run_rounds
from engine.pilot.variant import (
    Calibration,
    Progress,
    ProgressFn,
    notifier,
    prompt_stage,
    run_variant,
    time_again,
)
from engine.specs.pilot import (
    PilotSpec,
    VariantSpec,
    default_min_pass_s,
    default_repeats,
    variant_generation,
)
from engine.store.store import Store
from engine.techniques import technique_module

__all__ = ["CANCELLABLE", "RESUMABLE", "Calibration", "Progress", "ProgressFn", "cancel_run",
           "create_pilot_run", "pilot_outcome", "preflight", "resume_pilot", "run_pilot"]


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
        with Heartbeat(store, run.id) as beat:  # this process owns the run; a reader can tell
            # if it dies, and where it is (a Ray-run pilot's follower reads it from the store)
            _run_variants(spec, run, requests, calibration, store, settings,
                          _told(beat, on_progress))
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


def _told(beat: Heartbeat, on_progress: ProgressFn | None) -> ProgressFn:
    """``on_progress``, and each progress kept by ``beat`` for the store (in memory here; the
    heartbeat's thread writes it)."""
    def told(p: Progress) -> None:
        beat.record(RunProgress(p.fraction, p.variant, p.message))
        if on_progress:
            on_progress(p)
    return told


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


def cancel_run(run_id: int, store: Store, task_ended: bool = False) -> Run:
    """Mark a pending, running or interrupted run and its unfinished variants cancelled
    (a process that was killed cannot do it itself); finished results are kept.
    ``task_ended``: its Ray task was cancelled and has ended (engine.jobs.ray_executor.cancel),
    so an owner whose heartbeat has not gone stale yet is gone all the same."""
    reap_dead_runs(store)
    run = store.get_run(run_id)
    if run.status not in CANCELLABLE:
        raise SpecError(f"Run {run_id} is {run.status}, already finished; only a "
                        f"{', '.join(CANCELLABLE)} run can be cancelled.")
    if not task_ended and any(o.run_id == run_id for o in store.active_run_owners()):
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
    sink = _Sink(store, settings, requests)
    todo: list[int] = []
    sections = _bar_steps(spec)
    # Accuracy is scored after a variant's passes: a missing embedding model is found now,
    # not after every variant has spent its time on the device.
    scoring = accuracy.embedder_problem(settings.embedding_model)
    for i, (vrun, vspec) in enumerate(zip(run.variants, spec.variants, strict=True)):
        if vrun.status == Status.DONE:  # a resumed run: finished before, kept as stored
            if i == 0 and not is_random_model(vspec.model):
                sink.baseline = store.get_results(vrun.id)
            continue
        unscored = None if is_random_model(vspec.model) or not scoring else \
            f"Refused before the pilot started: its answers are scored for accuracy: {scoring}"
        if refused := preflight(vspec) or unscored:
            store.set_variant_status(vrun.id, Status.FAILED, refused)
            skipped = (i + 1 - len(todo)) / sections  # the sections finished or refused so far
            notifier(on_progress, vspec.name, i, sections, 1,
                      lambda d, f=skipped: f)(1, "refused")
            continue
        todo.append(i)
    # The bar counts finished sections: the variants refused or done before come first.
    start = len(spec.variants) - len(todo)
    groups = _groups(spec, todo)
    notes = _back_to_back_notes(spec, groups)
    for g, group in enumerate(groups):
        if len(group) > 1:
            start += _run_interleaved(spec, run, group, g == len(groups) - 1, start, requests,
                                      calibration, sink, on_progress)
            continue
        i = group[0]
        vrun, vspec = run.variants[i], spec.variants[i]
        steps = _steps(spec, vspec, len(requests))
        notify = notifier(on_progress, vspec.name, i, sections, steps,
                           lambda d, s=start, t=steps: (s + d / t) / sections)
        start += 1
        store.set_variant_status(vrun.id, Status.RUNNING)
        try:
            sink.done(i, vrun, vspec, *run_variant(
                vspec, requests, calibration, variant_generation(spec.generation, vspec),
                settings, notify, _repeats(spec, vspec), _min_pass_s(spec, vspec),
                notes.get(i)))
            notify(steps, "done")
        except Exception as exc:  # a failing variant is recorded; the others still run
            store.set_variant_status(vrun.id, Status.FAILED, _reason(exc))
            notify(steps, f"failed: {_reason(exc)}")
    _remeasure_baseline(spec, store.get_run(run.id), requests, calibration, store, settings,
                        on_progress)


class _Sink:
    """Scores a finished variant's results (against the baseline's) and stores them."""

    def __init__(self, store: Store, settings: Settings, requests: list[StoredRequest]) -> None:
        self.store, self.settings, self.requests = store, settings, requests
        self.baseline: list[RequestResult] | None = None
        self._embedder: accuracy.Embedder | None = None

    def done(self, i: int, vrun: VariantRun, vspec: VariantSpec, results: list[RequestResult],
             measured: VariantMeasurements) -> None:
        if not is_random_model(vspec.model):  # random weights: accuracy not measured
            self._embedder = self._embedder or accuracy.Embedder(self.settings.embedding_model)
            results = accuracy.score(results, self.requests, self.baseline if i else None,
                                     self._embedder)
        self.store.finish_variant(vrun.id, results, measured)
        if i == 0 and not is_random_model(vspec.model):
            self.baseline = results


def _interleave_reason(vspec: VariantSpec) -> str | None:
    """Why this variant cannot be loaded beside others and interleaved, or None."""
    if vspec.compile:
        return "torch.compile variants are timed alone (their compiled graphs and CUDA-graph " \
               "pools are per process)"
    try:
        device = resolve_device(vspec.device)
    except RoilabError:
        device = "cpu"
    return get_backend(vspec.backend).interleave_reason(vspec, device)


def _groups(spec: PilotSpec, todo: list[int]) -> list[list[int]]:
    """The variants to run, in order, grouped: consecutive variants whose backend can keep
    several loaded (engine.pilot.rounds) share a group when any of them is timed more than
    once and the spec allows interleaving; every other variant is a group of its own."""
    def joins(i: int) -> bool:
        return _interleave_reason(spec.variants[i]) is None

    groups: list[list[int]] = []
    for i in todo:
        if groups and joins(i) and joins(groups[-1][-1]):
            groups[-1].append(i)
        else:
            groups.append([i])
    interleave = spec.measurement.interleave
    return [part for g in groups for part in (
        [g] if interleave and max(_repeats(spec, spec.variants[i]) for i in g) > 1
        else [[i] for i in g])]


def _back_to_back_notes(spec: PilotSpec, groups: list[list[int]]) -> dict[int, str]:
    """For each variant timed alone although the pilot asked to interleave (and times it
    more than once): why, to store with its measurement and show."""
    if not spec.measurement.interleave or len(spec.variants) < 2:
        return {}
    notes = {}
    for group in groups:
        if len(group) > 1:
            continue
        i = group[0]
        if _repeats(spec, spec.variants[i]) < 2:
            continue
        reason = _interleave_reason(spec.variants[i])
        notes[i] = (f"{reason}: its passes ran back to back and the baseline was measured "
                    "again at the end with the same warm-up and pass length") if reason else \
            "no other variant next to it could be loaded beside it"
    return notes


def _run_interleaved(spec: PilotSpec, run: Run, group: list[int], last: bool, start: int,
                     requests: list[StoredRequest], calibration: Calibration, sink: _Sink,
                     on_progress: ProgressFn | None) -> int:
    """Time ``group``'s variants in interleaved rounds (engine.pilot.rounds) and store each;
    the progress bar's sections it filled (from ``start``)."""
    n = len(requests)
    again = last and 0 in group and spec.measurement.remeasure_baseline and len(spec.variants) > 1
    once = n * (1 + len(prompt_stage(spec.baseline)))  # the baseline's re-measure
    totals = {i: _steps(spec, spec.variants[i], n) + (once if i == 0 and again else 0)
              for i in group}
    done = dict.fromkeys(group, 0)
    span = len(group) + again  # the bar's sections this group fills (its variants', the end)

    def overall(i: int):
        def fraction(d: int) -> float:
            done[i] = max(done[i], d)
            return (start + span * sum(done.values()) / sum(totals.values())) \
                / _bar_steps(spec)
        return fraction

    slots = []
    for i in group:
        vspec = spec.variants[i]
        sink.store.set_variant_status(run.variants[i].id, Status.RUNNING)
        slots.append(Slot(i, vspec, variant_generation(spec.generation, vspec),
                          _repeats(spec, vspec),
                          notifier(on_progress, vspec.name, i, _bar_steps(spec), totals[i],
                                    overall(i)),
                          time_end=i == 0 and again, min_pass_s=_min_pass_s(spec, vspec)))
    for slot, outcome in zip(slots, run_rounds(slots, requests, calibration, sink.settings),
                             strict=True):
        vrun = run.variants[slot.index]
        try:
            if outcome.error is not None:
                raise outcome.error
            sink.done(slot.index, vrun, slot.vspec, outcome.results, outcome.measured)
            if outcome.end_passes:
                sink.store.add_passes(vrun.id, outcome.end_passes)
            slot.notify(totals[slot.index], "done")
        except Exception as exc:  # a failing variant is recorded; the others still run
            sink.store.set_variant_status(vrun.id, Status.FAILED, _reason(exc))
            slot.notify(totals[slot.index], f"failed: {_reason(exc)}")
    return span


def _steps(spec: PilotSpec, vspec: VariantSpec, n: int) -> int:
    """Progress steps of one variant: in each timed pass, each prompt-stage technique
    (prompt compression) and the generation are a pass of their own over the requests."""
    return n * _repeats(spec, vspec) * (1 + len(prompt_stage(vspec)))


def _repeats(spec: PilotSpec, vspec: VariantSpec) -> int:
    return default_repeats(spec.measurement, vspec.backend, _device(vspec))


def _min_pass_s(spec: PilotSpec, vspec: VariantSpec) -> float:
    return default_min_pass_s(spec.measurement, vspec.backend, _device(vspec))


def _device(vspec: VariantSpec) -> str:
    try:
        return resolve_device(vspec.device)
    except RoilabError:
        return "cpu"  # preflight refuses it with the reason


def _bar_steps(spec: PilotSpec) -> int:
    """Sections of the progress bar: one per variant, one for the baseline's re-measure."""
    again = spec.measurement.remeasure_baseline and len(spec.variants) > 1
    return len(spec.variants) + again


def _remeasure_baseline(spec: PilotSpec, run: Run, requests: list[StoredRequest],
                        calibration: Calibration, store: Store, settings: Settings,
                        on_progress: ProgressFn | None) -> None:
    """Time the baseline once more after every other variant (engine.pilot.protocol): the
    run's noise floor. Skipped for a one-variant pilot, a failed baseline, or one measured
    again already (in the last interleaved round, or a resumed run); a failure here is
    noted, never fails the run."""
    base, vspec = run.variants[0], spec.baseline
    if (not spec.measurement.remeasure_baseline or len(run.variants) < 2
            or base.status != Status.DONE
            or any(p.role == "baseline_end" for p in store.get_passes(base.id))):
        return
    steps = len(requests) * (1 + len(prompt_stage(vspec)))
    notify = notifier(on_progress, f"{vspec.name} (again)", len(run.variants),
                       _bar_steps(spec), steps)
    timed = [p for p in store.get_passes(base.id) if p.role == "timed"]
    try:
        passes = time_again(vspec, requests, calibration,
                            variant_generation(spec.generation, vspec), settings, notify,
                            replays=timed[0].replays if timed else None,
                            min_pass_s=_min_pass_s(spec, vspec))
        store.add_passes(base.id, passes)
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

