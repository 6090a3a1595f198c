"""Interleaved timed passes: several variants loaded side by side, timed in rounds.

Back to back, a variant's passes see only the minutes in which it ran: a machine that got
busier or warmer during one variant makes that variant alone look slower or faster. In
rounds, every variant is timed once in round 1, once again in round 2, and so on, so a drift
touches all of them alike and shows up as spread in each instead of as a difference between
them. The runner (engine.pilot.runner) groups the variants whose backend can hold several
loaded at once (``Backend.interleavable``); this module loads a group while memory allows
(``has_room``: what is left free must hold ``HEADROOM`` times the largest variant loaded so
far, plus 1 GiB; at most ``MAX_SIDE_BY_SIDE``), times it in rounds, closes it, and goes on
with the rest. A variant that fails while loading or in a round is reported failed; the
others go on, and its model stays loaded until the group closes, so the memory the others
measure is not disturbed.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from engine.backends.base import NoRoomBeside
from engine.core.domain import RequestResult, StoredRequest, TimedPass, VariantMeasurements
from engine.core.settings import Settings
from engine.pilot.variant import Calibration, LoadedVariant, Notify, load_variant
from engine.specs.pilot import GenerationSettings, VariantSpec

MAX_SIDE_BY_SIDE = 8  # variants loaded at once, at most
HEADROOM = 4  # free memory kept: this many times the largest variant loaded (+ 1 GiB)


@dataclass
class Slot:
    """One variant to time: its place in the pilot, spec, settings, passes and progress."""

    index: int
    vspec: VariantSpec
    gen: GenerationSettings
    repeats: int
    notify: Notify
    time_end: bool = False  # the baseline: time it once more after the last round
    min_pass_s: float = 0.0  # a timed pass lasts at least this (engine.pilot.protocol)


@dataclass
class Outcome:
    """What became of one slot: results and measurements, or the error that stopped it."""

    index: int
    results: list[RequestResult] | None = None
    measured: VariantMeasurements | None = None
    error: Exception | None = None
    end_passes: list[TimedPass] = field(default_factory=list)
    end_error: Exception | None = None  # the baseline's re-measure failed (a note, no more)


def has_room(loaded: Sequence[LoadedVariant]) -> bool:
    """Whether another variant may be loaded beside these: the free memory of the device
    they use (the GPU's, else the machine's) holds ``HEADROOM`` x the largest of them + 1 GiB,
    and where suspended variants park their weights in host memory (vLLM's sleep mode), the
    machine's free memory holds twice the largest + 2 GiB as well."""
    if len(loaded) >= MAX_SIDE_BY_SIDE:
        return False
    if not loaded:
        return True
    biggest = max(lv.info.weight_bytes or 0 for lv in loaded)
    if any(lv.backend.suspends_to_host for lv in loaded) and \
            free_bytes(False) < 2 * biggest + 2 * 2**30:
        return False
    return free_bytes(any(lv.info.device.startswith("cuda") for lv in loaded)) \
        >= HEADROOM * biggest + 2**30


def free_bytes(cuda: bool) -> int:
    """Free bytes on GPU 0 (through NVML, so this process makes no CUDA context of its own
    where vLLM's engines hold the GPU), else of the machine."""
    if cuda:
        from engine.backends.vllm_host import gpu_memory

        return gpu_memory(1)[0][1]
    import psutil

    return int(psutil.virtual_memory().available)


def switch_to(group: Sequence[tuple[Slot, LoadedVariant | None]],
              lv: LoadedVariant | None) -> None:
    """Suspend every loaded variant of the group but ``lv`` (vLLM: put its engine to sleep),
    then resume ``lv`` (None: only suspend), warming it up again if it had been suspended."""
    for _, other in group:
        if other is not None and other is not lv:
            other.backend.suspend()
    if lv is not None and lv.backend.resume():
        lv.rewarm()


def run_rounds(slots: Sequence[Slot], requests: list[StoredRequest], calibration: Calibration,
               settings: Settings) -> Iterator[Outcome]:
    """Time ``slots`` in interleaved rounds, as many loaded at once as memory allows; yields
    each slot's Outcome, in order, as each group closes."""
    pending = list(slots)
    while pending:
        group: list[tuple[Slot, LoadedVariant | None]] = []
        outcomes: dict[int, Outcome] = {}
        try:
            while pending:
                switch_to(group, None)  # the loaded ones give back what they can first
                if not has_room([lv for _, lv in group if lv is not None]):
                    break
                slot = pending.pop(0)
                try:
                    group.append((slot, load_variant(
                        slot.vspec, requests, calibration, slot.gen, settings, slot.notify,
                        slot.min_pass_s, side_by_side=True)))
                except NoRoomBeside:  # it needs the memory the loaded ones hold: next group
                    if not any(lv is not None for _, lv in group):
                        raise
                    pending.insert(0, slot)
                    break
                except Exception as exc:  # noqa: BLE001 - recorded; the others go on
                    group.append((slot, None))
                    outcomes[slot.index] = Outcome(slot.index, error=exc)
            _time_in_rounds(group, outcomes)
            if not pending:
                _time_baseline_again(group, outcomes)
            _finish(group, outcomes)
        finally:
            for _, lv in group:
                if lv is not None:
                    lv.close()
        yield from (outcomes[slot.index] for slot, _ in group)


def _time_in_rounds(group: list[tuple[Slot, LoadedVariant | None]],
                    outcomes: dict[int, Outcome]) -> None:
    for k in range(max((s.repeats for s, _ in group), default=0)):
        for slot, lv in group:
            if lv is None or slot.index in outcomes or k >= slot.repeats:
                continue
            try:
                switch_to(group, lv)
                lv.time(1, of=slot.repeats)
            except Exception as exc:  # noqa: BLE001 - this variant failed, not the round
                outcomes[slot.index] = Outcome(slot.index, error=exc)


def _time_baseline_again(group: list[tuple[Slot, LoadedVariant | None]],
                         outcomes: dict[int, Outcome]) -> None:
    """The baseline, still loaded, timed once more after the last round: the noise floor."""
    for slot, lv in group:
        if not slot.time_end or lv is None or slot.index in outcomes:
            continue
        outcome = outcomes[slot.index] = Outcome(slot.index)
        try:
            switch_to(group, lv)
            outcome.end_passes = lv.time(1, "baseline_end",
                                         label="measuring the baseline again: ")
        except Exception as exc:  # noqa: BLE001 - the noise floor is a check, not a result
            outcome.end_error = exc


def _finish(group: list[tuple[Slot, LoadedVariant | None]],
            outcomes: dict[int, Outcome]) -> None:
    names = [slot.vspec.name for slot, lv in group if lv is not None]
    for slot, lv in group:
        outcome = outcomes.setdefault(slot.index, Outcome(slot.index))
        if lv is None or outcome.error is not None:
            continue
        try:
            others = tuple(n for n in names if n != slot.vspec.name)
            outcome.results, outcome.measured = lv.finish(others)
        except Exception as exc:  # noqa: BLE001 - recorded; the others go on
            outcome.error = exc
