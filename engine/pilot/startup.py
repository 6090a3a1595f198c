"""Each variant's engine start-up (cold start), from what its run stored.

A replica that autoscaling adds pays this before it serves its first request: loading the
model and applying its techniques (``VariantRun.load_s``; for vLLM the engine's start, graph
capture included), plus what the backend reports separately: transformers' torch.compile per
batch shape (``technique_report["serving"]["warm_up_s"]``) and a prompt-compression scorer's
load (``scorer_load_s``). A vLLM engine started for an earlier variant and reused by this one
(``serving.engine_reused``) cost this variant nothing: it says whose engine it shared rather
than 0 or the other's seconds. The protocol's untimed warm-up rounds
(``measurement.warm_up.seconds``) are kept apart: a replica may or may not need them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.domain import VariantRun

EXPLAINED = ("Engine start-up is what each new replica pays before it serves its first "
             "request (load, compile, graph capture): when a team autoscales, every replica "
             "added pays it again.")


@dataclass(frozen=True)
class ColdStart:
    seconds: float | None  # load + compile + scorer load; None: not measured, or shared
    load_s: float | None  # the backend's load (vLLM: its engine's start)
    compile_s: float | None = None  # reported apart from the load (transformers' compile)
    scorer_load_s: float | None = None  # a prompt-compression scorer model's load
    warm_up_s: float | None = None  # the protocol's untimed warm-up rounds, if stored
    reused: bool = False  # its engine was already running (started for another variant)
    shared_with: str | None = None  # the earlier variant of the run that started it


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _dig(report: dict, *keys: str) -> Any:
    for key in keys:
        report = report.get(key) if isinstance(report, dict) else None
    return report


def cold_start(v: VariantRun, earlier: Sequence[VariantRun] = ()) -> ColdStart:
    """The cold start of ``v``; ``earlier``: the variants of its run before it (to name the
    one whose vLLM engine it reused)."""
    rep = v.technique_report or {}
    warm = _num(_dig(rep, "measurement", "warm_up", "seconds"))
    if _dig(rep, "serving", "engine_reused") is True:
        args = _dig(rep, "serving", "engine_args")
        owner = next((e.name for e in earlier if args is not None
                      and _dig(e.technique_report or {}, "serving", "engine_args") == args), None)
        return ColdStart(None, v.load_s, warm_up_s=warm, reused=True, shared_with=owner)
    compile_s = _num(_dig(rep, "serving", "warm_up_s")) or None
    scorer = sum(x for t in rep.values() if isinstance(t, dict)
                 and (x := _num(t.get("scorer_load_s"))) is not None) or None
    parts = [x for x in (v.load_s, compile_s, scorer) if x is not None]
    return ColdStart(sum(parts) if v.load_s is not None else None, v.load_s, compile_s, scorer,
                     warm)


def cold_starts(variants: Sequence[VariantRun]) -> tuple[ColdStart, ...]:
    """``cold_start`` of each variant of a run, in run order."""
    return tuple(cold_start(v, variants[:i]) for i, v in enumerate(variants))


def cold_start_text(seconds: float | None, reused: bool = False,
                    shared_with: str | None = None) -> str:
    """"12.3", "shared with baseline", "reused" or "n/a": as the CLI, page and PDF show it."""
    if reused:
        return f"shared with {shared_with}" if shared_with else "reused"
    return "n/a" if seconds is None or seconds != seconds else f"{seconds:.1f}"
