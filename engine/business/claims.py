"""The claims scorecard (issue 21): the claims of the article that sends teams to roilab,
each tested against a stored run: held, not held or not tested, with the measured figure and
the variant it came from; a claim the run cannot test says which variant or pilot would.

The claims are data (``data/claims.json``: id, claim, source, how a run tests it, the rule);
each id has its scorer here, and the thresholds below are the rules' numbers.
``score(report, case)`` reads a ``PilotReport`` (engine.pilot.report) and, for the cost claim,
its ``BusinessCase`` (engine.business.types); only variants whose status is done count.
Everything is computed from what the report holds; the one thing read beyond it is a local
model folder's config.json, to learn whether a variant serves a quantized checkpoint (a
``roilab export`` W4A16, GPTQ, AWQ), as the vLLM backend's checks do.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.business.measured import _kv_figure
from engine.core.domain import Status
from engine.core.errors import SpecError
from engine.core.settings import REPO_ROOT
from engine.economics.hardware import CATALOG

__all__ = ["A10G_BYTES", "CLAIMS_PATH", "Claim", "ClaimResult", "HELD", "KV_MIN_REDUCTION",
           "NOT_HELD", "NOT_TESTED", "PROMPT_CLAIMED_RATIO", "PROMPT_MIN_RATIO",
           "PTQ_MIN_BYTES_RATIO", "SAVINGS_MIN_FRACTION", "SEVEN_B_PARAMS", "VERDICTS",
           "WeightQuant", "load_claims", "score", "scorecard_rows", "weight_quantization"]

CLAIMS_PATH = REPO_ROOT / "data" / "claims.json"

HELD, NOT_HELD, NOT_TESTED = "held", "not held", "not tested"
VERDICTS = (HELD, NOT_HELD, NOT_TESTED)

# --- the rules' numbers (data/claims.json says each rule in words) --------------------------
# "PTQ: 2-4x smaller/faster": held from the low end, 2x fewer weight bytes than the baseline.
PTQ_MIN_BYTES_RATIO = 2.0
# "cuts KV memory by ~60%": held from a 50% cut per token (an FP8 cache halves it exactly).
KV_MIN_REDUCTION = 0.5
# "up to 20x fewer input tokens": a ceiling, not a promise. Held from 2x fewer tokens sent
# (the technique does what it says in kind); the ratio is reported as measured, and whether
# it reached the 20x named.
PROMPT_MIN_RATIO = 2.0
PROMPT_CLAIMED_RATIO = 20.0
# "A 7B model": 7B-class from 6e9 parameters (12 GB of weights in bf16).
SEVEN_B_PARAMS = 6e9
# "one A10G (24 GB)": the hardware catalog's A10G memory, 24e9 bytes (GB = 1e9 bytes).
A10G_BYTES = CATALOG["nvidia-a10g"].memory_bytes
# "50-70% cost savings": held from the low end, half of the baseline's monthly bill saved.
SAVINGS_MIN_FRACTION = 0.5

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_FIELDS = ("id", "claim", "source", "test", "rule")

# What to run where a claim is not tested (the built-in variants of engine.specs.pilot).
_RUN_PTQ = ("a weight-quantization variant: --variants int8 (8-bit weights, transformers) or "
            "fp8 (vLLM), or a 4-bit `roilab export` checkpoint served by vLLM")
_RUN_KV = ("a KV-cache variant: --variants fp8-kv (vLLM, kv_cache_dtype fp8), or a "
           "quantize_kv_cache technique (transformers)")
_RUN_PROMPT = "a prompt-compression variant: --variants llmlingua (compress_prompt)"
_RUN_7B = ("a 4-bit variant of a 7B-class model (e.g. the GPU pilot with W4A16: `roilab export "
           "--bits 4` of a 7-8B model, served by vLLM beside its bf16 baseline)")


@dataclass(frozen=True)
class Claim:
    id: str  # the scorer in this module (``SCORERS``)
    claim: str  # as the article says it
    source: str
    test: str  # what figure of a run tests it
    rule: str  # when it is held


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # held | not held | not tested
    figure: str  # the measured figure, e.g. "3.9x fewer weight bytes (int4-weights)"; "" if none
    variant: str | None  # the variant the figure came from
    note: str  # which figure decided it; for not tested, which variant or pilot would test it

    @property
    def rule(self) -> str:
        return self.claim.rule


# --- the table --------------------------------------------------------------------------------
def load_claims(path: str | Path | None = None) -> tuple[Claim, ...]:
    """The claims of ``data/claims.json`` (or ``path``), validated: every entry an object with
    text fields id, claim, source, test and rule, nothing else, an id this module scores, and
    no id twice. SpecError naming the entry (its position and id) when one is not."""
    where = Path(path) if path is not None else CLAIMS_PATH
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"The claims table {where} cannot be read: {exc}.") from exc
    except ValueError as exc:
        raise SpecError(f"The claims table {where} is not valid JSON: {exc}.") from exc
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"The claims table {where} needs a non-empty list under \"claims\".")
    out: list[Claim] = []
    for i, entry in enumerate(entries, 1):
        name = f"entry {i}" + (f" ({entry.get('id')!r})" if isinstance(entry, dict)
                               and entry.get("id") else "")
        if not isinstance(entry, dict):
            raise SpecError(f"Claims table {where}, {name}: an object with "
                            f"{', '.join(_FIELDS)} is needed, got {type(entry).__name__}.")
        missing = [f for f in _FIELDS if not isinstance(entry.get(f), str)
                   or not entry[f].strip()]
        if missing:
            raise SpecError(f"Claims table {where}, {name}: {', '.join(missing)} missing or not "
                            "a non-empty text.")
        extra = sorted(set(entry) - set(_FIELDS))
        if extra:
            raise SpecError(f"Claims table {where}, {name}: unknown field(s) {', '.join(extra)}; "
                            f"an entry has {', '.join(_FIELDS)}.")
        if entry["id"] not in SCORERS:
            raise SpecError(f"Claims table {where}, {name}: no scorer for id {entry['id']!r}; "
                            f"known ids: {', '.join(SCORERS)} (add one in "
                            "engine/business/claims.py).")
        if any(c.id == entry["id"] for c in out):
            raise SpecError(f"Claims table {where}, {name}: id {entry['id']!r} listed twice.")
        out.append(Claim(**{f: entry[f].strip() for f in _FIELDS}))
    return tuple(out)


# --- scoring ----------------------------------------------------------------------------------
def score(report, case=None, claims: Sequence[Claim] | None = None) -> tuple[ClaimResult, ...]:
    """Each claim (``load_claims()`` unless given) tested against ``report`` (a PilotReport,
    or anything with ``variants`` and ``spec.variants`` in the same order, the baseline first)
    and ``case`` (its BusinessCase, or None: the cost claim is then not tested)."""
    run = _Run(report)
    return tuple(SCORERS[c.id](c, run, case) for c in (claims if claims is not None
                                                         else load_claims()))


def scorecard_rows(results: Sequence[ClaimResult]) -> list[dict[str, str]]:
    """One flat row per claim, for a table: claim, verdict, figure, variant, note, rule,
    source."""
    return [{"claim": r.claim.claim, "verdict": r.verdict, "figure": r.figure or "-",
             "variant": r.variant or "-", "note": r.note, "rule": r.rule,
             "source": r.claim.source} for r in results]


@dataclass(frozen=True)
class _Variant:
    index: int  # position in the run (0: the baseline)
    summary: Any  # VariantSummary
    spec: Any  # VariantSpec

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def done(self) -> bool:
        return self.summary.status == Status.DONE


class _Run:
    """The report's variants paired with their specs, and what a scorer asks of them."""

    def __init__(self, report) -> None:
        self.report = report
        self.variants = [_Variant(i, s, vs) for i, (s, vs) in
                         enumerate(zip(report.variants, report.spec.variants, strict=True))]
        self.baseline = self.variants[0]
        self.others = self.variants[1:]

    def technique_report(self, v: _Variant) -> dict:
        run = getattr(self.report, "run", None)
        variants = getattr(run, "variants", None) or ()
        return (getattr(variants[v.index], "technique_report", None) or {}) \
            if v.index < len(variants) else {}

    def kv_per_token(self, v: _Variant) -> float | None:
        """KV bytes per token as the business case reads them (the KV-cache technique's own
        figure, which describes the quantized cache, else what the engine reserved, else the
        model config's), else the summary's."""
        figure, _ = _kv_figure(self.technique_report(v))
        return figure if figure else v.summary.kv_bytes_per_token

    def parameters(self, v: _Variant) -> float | None:
        """The model's parameter count where the backend stored it, else its weight bytes
        over the bytes of its dtype."""
        counted = (self.technique_report(v).get("_model") or {}).get("parameters")
        if isinstance(counted, int | float) and counted > 0:
            return float(counted)
        wb = v.summary.weight_bytes
        return wb / _DTYPE_BYTES.get(v.spec.dtype, 2) if wb else None


def _not_done_note(run: _Run, picked: Callable[[_Variant], object], what: str) -> str:
    """``what`` to run, after naming the variants of that kind that did not finish."""
    failed = [v for v in run.others if picked(v) and not v.done]
    said = "; ".join(f"{v.name} is {v.summary.status}" for v in failed)
    them = "it" if len(failed) == 1 else "they"
    return (f"{said}: {them} measured nothing. " if failed else "") + f"Run {what}."


def _baseline_missing(claim: Claim, run: _Run) -> ClaimResult | None:
    b = run.baseline
    if not b.done:
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"The baseline ({b.name}) is {b.summary.status}: nothing to compare "
                           "with. Rerun the pilot.")
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# weight quantization: which variants quantize their weights, and to how many bits
@dataclass(frozen=True)
class WeightQuant:
    bits: int | None  # None: not known from the spec
    how: str


def weight_quantization(spec) -> WeightQuant | None:
    """How a variant spec quantizes its weights: a quantize_weights or qat technique, vLLM's
    ``quantization`` (fp8 in flight, or a checkpoint's method), or a quantized checkpoint
    (its config.json's quantization_config, as ``roilab export`` writes); None if it does not."""
    for t in spec.techniques:
        if t.kind in ("quantize_weights", "qat"):
            return WeightQuant(t.bits, f"{t.bits}-bit weights ({t.kind})")
    quantization = spec.vllm.quantization if spec.vllm is not None else None
    scheme = _checkpoint_scheme(spec.model, quantization)
    if scheme:
        found = re.search(r"W(\d+)A\d+|(\d+)-bit", scheme)
        return WeightQuant(int(found.group(1) or found.group(2)) if found else None, scheme)
    if quantization:
        bits = 8 if "fp8" in quantization or "int8" in quantization else None
        return WeightQuant(bits, f"vLLM quantization {quantization}")
    return None


def _checkpoint_scheme(model: str, quantization: str | None) -> str | None:
    from engine.backends.vllm_model import weight_only_int_scheme
    from engine.models.prep import EMBEDDED_PREFIX, RANDOM_PREFIX

    if model.startswith((EMBEDDED_PREFIX, RANDOM_PREFIX)) or not Path(model).expanduser().is_dir():
        return None
    return weight_only_int_scheme(str(Path(model).expanduser()), quantization)


def _ptq(claim: Claim, run: _Run, case) -> ClaimResult:
    quant = {v.index: weight_quantization(v.spec) for v in run.others}
    if not any(quant.values()):
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"No variant of this run quantizes its weights. Run {_RUN_PTQ}.")
    if (missing := _baseline_missing(claim, run)) is not None:
        return missing
    b = run.baseline.summary
    measured = [(b.weight_bytes / v.summary.weight_bytes, v) for v in run.others
                if quant[v.index] and v.done and v.summary.weight_bytes and b.weight_bytes]
    if not measured:
        note = _not_done_note(run, lambda v: quant[v.index], _RUN_PTQ)
        if not b.weight_bytes or any(quant[v.index] and v.done for v in run.others):
            note = ("The weight bytes of the baseline or of the weight-quantized variants were "
                    "not measured (this backend does not report them). " + note)
        return ClaimResult(claim, NOT_TESTED, "", None, note)
    ratio, v = max(measured, key=lambda m: m[0])
    speed = (v.summary.tokens_per_s / b.tokens_per_s
             if v.summary.tokens_per_s and b.tokens_per_s else None)
    figure = (f"{ratio:.1f}x fewer weight bytes ({v.name}: {_gb(v.summary.weight_bytes)} vs "
              f"{_gb(b.weight_bytes)})" + (f"; tokens/s {speed:.2f}x the baseline's"
                                            if speed is not None else "; tokens/s not measured"))
    held = ratio >= PTQ_MIN_BYTES_RATIO
    speed_words = ("" if speed is None else
                   f" Its tokens/s are {speed:.2f}x the baseline's: "
                   + ("at least 2x faster too." if speed >= PTQ_MIN_BYTES_RATIO else
                      "not 2x faster (speed is reported, not scored)."))
    note = (f"Decided by weight bytes ({ratio:.2f}x {'>=' if held else '<'} "
            f"{PTQ_MIN_BYTES_RATIO:g}x; {quant[v.index].how}).{speed_words}")
    return ClaimResult(claim, HELD if held else NOT_HELD, figure, v.name, note)


def _is_kv(spec) -> bool:
    return any(t.kind == "quantize_kv_cache" for t in spec.techniques) or (
        spec.vllm is not None and spec.vllm.kv_cache_dtype != "auto")


def _kv_quant(claim: Claim, run: _Run, case) -> ClaimResult:
    if not any(_is_kv(v.spec) for v in run.others):
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"No variant of this run quantizes its KV cache. Run {_RUN_KV}.")
    if (missing := _baseline_missing(claim, run)) is not None:
        return missing
    base = run.kv_per_token(run.baseline)
    measured = [(1 - kv / base, kv, v) for v in run.others if _is_kv(v.spec) and v.done
                and base and (kv := run.kv_per_token(v))]
    if not measured:
        note = _not_done_note(run, lambda v: _is_kv(v.spec), _RUN_KV)
        if any(_is_kv(v.spec) and v.done for v in run.others) or not base:
            note = "The KV bytes per token were not measured (this backend does not report " \
                   "them). " + note
        return ClaimResult(claim, NOT_TESTED, "", None, note)
    cut, kv, v = max(measured, key=lambda m: m[0])
    held = cut >= KV_MIN_REDUCTION
    figure = (f"{cut:.0%} less KV cache per token ({v.name}: {kv:,.0f} vs {base:,.0f} "
              "bytes/token)")
    note = (f"Decided by KV bytes per token: a {cut:.1%} cut is "
            f"{'at least' if held else 'under'} {KV_MIN_REDUCTION:.0%} (claimed ~60%).")
    return ClaimResult(claim, HELD if held else NOT_HELD, figure, v.name, note)


def _is_prompt(spec) -> bool:
    return any(t.kind == "compress_prompt" for t in spec.techniques)


def _prompt(claim: Claim, run: _Run, case) -> ClaimResult:
    if not any(_is_prompt(v.spec) for v in run.others):
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"No variant of this run compresses its prompts. Run {_RUN_PROMPT}.")
    measured = [(s.prompt_tokens_original / s.prompt_tokens_sent, v) for v in run.others
                if _is_prompt(v.spec) and v.done and (s := v.summary).prompt_tokens_original
                and s.prompt_tokens_sent]
    if not measured:
        return ClaimResult(claim, NOT_TESTED, "", None,
                           _not_done_note(run, lambda v: _is_prompt(v.spec), _RUN_PROMPT))
    ratio, v = max(measured, key=lambda m: m[0])
    s = v.summary
    held = ratio >= PROMPT_MIN_RATIO
    figure = (f"{ratio:.1f}x fewer input tokens ({v.name}: {s.prompt_tokens_sent:,.0f} sent "
              f"of {s.prompt_tokens_original:,.0f} per request)")
    reached = (f"the claimed {PROMPT_CLAIMED_RATIO:g}x was reached" if ratio >= PROMPT_CLAIMED_RATIO
               else f"{PROMPT_CLAIMED_RATIO:g}x was not reached")
    note = (f"Decided by the ratio: {ratio:.2f}x is {'at least' if held else 'under'} "
            f"{PROMPT_MIN_RATIO:g}x; {reached}. Whether quality holds is the business case's "
            "quality gate.")
    return ClaimResult(claim, HELD if held else NOT_HELD, figure, v.name, note)


def _serving_need(v: _Variant) -> tuple[float, str] | None:
    """Bytes the variant needed while serving, and how they were read: its measured peak
    (which holds the weights), less on vLLM the KV cache it reserved to fill the device's
    memory share; never under its weight bytes. None when no peak was measured."""
    s = v.summary
    if not s.peak_mem_bytes:
        return None
    peak, weights = float(s.peak_mem_bytes), float(s.weight_bytes or 0)
    how = f"peak {_gb(peak)}"
    if v.spec.backend == "vllm" and s.kv_cache_bytes:
        peak -= s.kv_cache_bytes
        how += f" less the {_gb(s.kv_cache_bytes)} KV cache vLLM reserved to fill the device"
    return max(peak, weights), how + (f"; weights {_gb(weights)}" if weights else "")


def _seven_b(claim: Claim, run: _Run, case) -> ClaimResult:
    if (missing := _baseline_missing(claim, run)) is not None:
        return missing
    params = run.parameters(run.baseline)
    if params is None or params < SEVEN_B_PARAMS:
        size = (f"this run's model has about {params / 1e9:.3g}e9 parameters" if params else
                "this run's model size is not known (its baseline's weight bytes were not "
                "measured)")
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"Needs a 7B-class model (>= {SEVEN_B_PARAMS / 1e9:g}e9 parameters); "
                           f"{size}. Run {_RUN_7B}.")
    four = [v for v in run.others if (q := weight_quantization(v.spec)) and q.bits == 4]
    needs = [(n, v) for v in four if v.done and (n := _serving_need(v)) is not None]
    if not needs:
        note = _not_done_note(run, lambda v: v in four, _RUN_7B)
        if any(v.done for v in four):
            note = "Its 4-bit variant's peak memory was not measured. " + note
        return ClaimResult(claim, NOT_TESTED, "", None, note)
    (need, how), v = min(needs, key=lambda n: n[0][0])
    held = need <= A10G_BYTES
    figure = f"{_gb(need)} needed of {_gb(A10G_BYTES)} ({v.name}: {how})"
    note = (f"Decided by memory: {_gb(need)} {'fits' if held else 'does not fit'} the A10G's "
            f"{_gb(A10G_BYTES)}; model of about {params / 1e9:.1f}e9 parameters, measured on "
            f"{v.summary.device or 'the pilot device'}, not on an A10G (memory, not speed).")
    return ClaimResult(claim, HELD if held else NOT_HELD, figure, v.name, note)


_WEEK = ("'In under a week' is the time to get there, which a run does not measure: not "
         "tested.")


def _cost(claim: Claim, run: _Run, case) -> ClaimResult:
    if case is None:
        return ClaimResult(claim, NOT_TESTED, "", None,
                           "Needs this run's business case (the Business case page, or "
                           f"`roilab report RUN`). {_WEEK}")
    base = case.baseline_monthly_cost
    if not base:
        return ClaimResult(claim, NOT_TESTED, "", None,
                           f"The business case has no baseline monthly cost. {_WEEK}")
    if case.moves:
        frac = case.monthly_savings / base
        held = frac >= SAVINGS_MIN_FRACTION
        figure = (f"{frac:.0%} saved (${case.monthly_savings:,.2f} of ${base:,.2f} a month, "
                  f"{case.recommendation.name})")
        note = (f"Decided by the recommended variant's saving: {frac:.1%} is "
                f"{'at least' if held else 'under'} {SAVINGS_MIN_FRACTION:.0%}. {_WEEK}")
        return ClaimResult(claim, HELD if held else NOT_HELD, figure, case.recommendation.name,
                           note)
    others = [r for r in case.rows if not r.is_baseline and r.ok]
    if others and all(r.speed_memory_only for r in others):
        return ClaimResult(claim, NOT_TESTED, "", None,
                           "Its variants have random weights (speed and memory only), so none "
                           "can be recommended. Run the pilot with the model's real weights. "
                           + _WEEK)
    why = case.recommendation.reason if case.recommendation.name is None else (
        "the baseline itself is recommended: no variant is cheaper while passing the quality "
        "gate and the p95 target.")
    return ClaimResult(claim, NOT_HELD, "0% saved (no variant recommended)", None,
                       f"No variant is recommended over the baseline; {why} {_WEEK}")


SCORERS: dict[str, Callable[[Claim, _Run, Any], ClaimResult]] = {
    "ptq": _ptq, "kv_quant": _kv_quant, "prompt_compression": _prompt,
    "7b_4bit_a10g": _seven_b, "cost_savings": _cost,
}
