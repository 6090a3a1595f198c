"""The quality gate, the recommendation and the cost-versus-accuracy Pareto front.

A workflow needs a certain accuracy: the user names a metric and a threshold. Metrics are
the per-variant means the pilot stores (``engine.pilot.report.VariantSummary``):

* ``ref_exact``, ``ref_contains``, ``ref_f1``: against the log's reference answers;
* ``base_rouge_l``, ``base_cosine``: against the baseline's own output (the baseline
  scores 1.0 by definition);
* ``<metric>_retention``: the variant's value as a fraction of the baseline's, e.g.
  ``ref_contains_retention >= 0.95`` keeps 95% of the baseline's reference accuracy.

Variants below the gate stay in every table with the reason, but are never recommended.
A variant whose model has random weights (``random:<shape>``) has no accuracy figure at all:
it is labelled "speed and memory only" (``RANDOM_WEIGHTS``) and its costs hold only if its
quality does.
``recommend`` picks the cheapest variant that passes the gate and meets the latency SLO.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.core.errors import SpecError

RAW_METRICS = ("ref_exact", "ref_contains", "ref_f1", "base_rouge_l", "base_cosine")
ACCURACY_METRICS = RAW_METRICS + tuple(f"{m}_retention" for m in RAW_METRICS)
SPEED_MEMORY_ONLY = "speed and memory only"  # the label of a random-weights variant
RANDOM_WEIGHTS = f"random weights: {SPEED_MEMORY_ONLY}; accuracy not measured"


METRIC_LABELS = {"ref_exact": "exact match with the reference answer",
                 "ref_contains": "reference answer contained",
                 "ref_f1": "word overlap (F1) with the reference answer",
                 "base_rouge_l": "overlap (ROUGE-L) with the baseline's answers",
                 "base_cosine": "similarity to the baseline's answers (cosine)"}


def metric_label(metric: str) -> str:
    """A gate metric in words, e.g. ``similarity to the baseline's answers (cosine)``; a
    retention is ``... kept vs the baseline``."""
    raw = metric.removesuffix("_retention")
    label = METRIC_LABELS.get(raw, raw)
    return f"share of the baseline's {label} kept" if metric.endswith("_retention") else label


def threshold_bounds(metric: str) -> tuple[float, float]:
    """The values a threshold on ``metric`` can take: every metric is a mean of per-request
    scores in [0, 1] (a retention is the share of the baseline's kept), so [0, 1]."""
    check_metric(metric)
    return 0.0, 1.0


def check_threshold(metric: str, threshold: float) -> float:
    """Return ``threshold`` if the metric can reach it, else SpecError with the range."""
    low, high = threshold_bounds(metric)
    if not low <= threshold <= high:  # also refuses NaN
        raise SpecError(f"Accuracy threshold {threshold!r} is outside what {metric} can score "
                        f"({low:g} to {high:g}); e.g. 0.9.")
    return threshold


def check_metric(metric: str) -> str:
    """Return ``metric`` if known, else raise SpecError listing the known names."""
    if metric not in ACCURACY_METRICS:
        raise SpecError(f"Unknown accuracy metric {metric!r}; choose one of: "
                        f"{', '.join(ACCURACY_METRICS)}.")
    return metric


def accuracy_value(metric: str, variant: Mapping[str, float | None],
                   baseline: Mapping[str, float | None], is_baseline: bool = False) -> float | None:
    """The gate metric for one variant from its metric means (and the baseline's).

    None when the pilot has no such figure (e.g. no reference answers in the log).
    """
    raw = check_metric(metric).removesuffix("_retention")
    if is_baseline:
        if raw.startswith("base_"):
            return 1.0  # the baseline agrees with itself
        if metric.endswith("_retention"):
            return 1.0 if baseline.get(raw) else None
        return baseline.get(raw)
    value = variant.get(raw)
    if not metric.endswith("_retention"):
        return value
    base = 1.0 if raw.startswith("base_") else baseline.get(raw)
    if value is None or not base:
        return None
    return value / base


def gate(metric: str, threshold: float, value: float | None,
         missing: str = "") -> tuple[bool, str]:
    """``(passes, reason)``; reason is "" when it passes. ``missing`` says why ``value`` is
    None (``missing_reason``); without it the reason only says that there is no figure."""
    if value is None:
        return False, missing or f"no figure for {metric_label(metric)}"
    if value < threshold:
        return False, f"{metric_label(metric)} {value:.3f} is below the required {threshold:g}"
    return True, ""


def missing_reason(metric: str, *, random_weights: bool, baseline_random_weights: bool,
                   is_baseline: bool, references: int | None, requests: int,
                   baseline_value: float | None = None) -> str:
    """Why a measured variant has no ``metric`` figure: the cause, never a guess.

    ``random_weights``: its model has random weights, so the runner measured speed and
    memory only. ``references``: how many of the ``requests`` replayed have a reference
    answer in the log (None: not known, the variant was not scored). ``baseline_value``:
    the baseline's raw figure, for a ``_retention`` metric.
    """
    raw = check_metric(metric).removesuffix("_retention")
    if random_weights:
        return RANDOM_WEIGHTS
    if raw.startswith("base_") and baseline_random_weights and not is_baseline:
        return (f"{raw} not measured: the baseline has random weights, so there is no "
                "baseline answer to compare with; gate on a reference metric (ref_contains, "
                "...) or run the baseline with real weights")
    if raw.startswith("ref_") and references == 0:
        return (f"{raw} not measured: none of the {requests} requests replayed has a "
                "reference answer in the log; choose base_cosine or base_rouge_l, or ingest "
                "a log with a reference (expected answer) per request")
    if metric.endswith("_retention") and not is_baseline:
        if baseline_random_weights:
            return (f"{metric} not measured: the baseline has random weights, so its {raw} "
                    f"was not measured; gate on {raw} itself")
        if not baseline_value:
            return (f"{metric} undefined: the baseline scores 0 on {raw}, nothing to keep a "
                    f"share of; gate on {raw} itself")
    with_refs = "" if references is None else \
        f" ({references} of the {requests} requests replayed have a reference answer)"
    return f"no {metric} figure was stored for this variant{with_refs}"


@dataclass(frozen=True)
class Candidate:
    name: str
    monthly_cost: float | None  # None = could not be costed (failed, fits nowhere)
    accuracy: float | None
    passes_gate: bool
    meets_slo: bool
    reason: str  # why it is not eligible; "" when it is


@dataclass(frozen=True)
class Recommendation:
    name: str | None  # None = no variant passes
    reason: str


def recommend(candidates: Iterable[Candidate]) -> Recommendation:
    """The cheapest candidate that passes the gate and the SLO (ties: higher accuracy)."""
    cands = list(candidates)
    ok = [c for c in cands if c.passes_gate and c.meets_slo and c.monthly_cost is not None]
    if not ok:
        why = "; ".join(f"{c.name}: {c.reason or 'no monthly cost'}" for c in cands)
        return Recommendation(None, f"No variant passes the quality gate and the p95 latency "
                                    f"target ({why}). Relax the threshold or the p95 target.")
    best = min(ok, key=lambda c: (c.monthly_cost, -(c.accuracy or 0.0)))
    which = ("the only variant that passes the quality gate and meets" if len(ok) == 1 else
             f"the cheapest of the {len(ok)} variants that pass the quality gate and meet")
    return Recommendation(best.name, f"'{best.name}' is {which} the p95 latency target "
                                     f"(${best.monthly_cost:,.2f} per month).")


def pareto_front(points: Iterable[tuple[str, float | None, float | None]]) -> list[str]:
    """Names of the (name, cost, accuracy) points no other point beats on both (cost no
    higher, accuracy no lower, one strictly better); sorted by cost. Points missing either
    figure are left out."""
    pts = [(n, c, a) for n, c, a in points if c is not None and a is not None]
    front = [p for p in pts if not any(
        q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in pts)]
    return [n for n, _, _ in sorted(front, key=lambda p: (p[1], -p[2]))]
