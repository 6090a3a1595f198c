"""Load-test metrics: pure functions of ``LoadSample``s, tested against hand-worked numbers.

Per request (all from its *arrival*, the moment the schedule released it):

- TTFT = first content chunk - arrival;  E2E = end of stream - arrival;
- inter-token latency (ITL) = the gaps between consecutive content chunks (vLLM streams one
  token a chunk); a request's mean ITL is what its ITL SLO is checked against.

Per variant and load level (``level_stats``): TTFT, ITL and E2E at p50/p90/p99 (numpy's
linear interpolation; ITL over all gaps of the level pooled, as ``vllm bench serve`` does),
over the level's duration = last end - first arrival:

    output tokens/s = output tokens of successful requests / duration
    output tokens/request = their mean (the server's usage): max_new_tokens exactly with a
                      fixed output length, less where the model stopped on its own
    requests/s      = successful requests / duration
    goodput         = requests meeting every SLO threshold / duration

``capacity_at_slo`` turns a sweep into the figure the cost model needs: the highest
requests/s among the levels where at least ``min_attainment`` of requests met the SLO.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from engine.core.domain import LoadSample

PCTS = (50, 90, 99)


@dataclass(frozen=True)
class Slo:
    """Thresholds in seconds; None = not checked."""

    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """{"p50", "p90", "p99"} with linear interpolation; None for each when empty."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return {f"p{p}": None for p in PCTS}
    return {f"p{p}": float(v) for p, v in zip(PCTS, np.percentile(arr, PCTS), strict=True)}


def ttft(s: LoadSample) -> float | None:
    return None if s.first_token_s is None else s.first_token_s - s.arrival_s


def e2e(s: LoadSample) -> float:
    return s.end_s - s.arrival_s


def itl_gaps(s: LoadSample) -> list[float]:
    """Gaps between consecutive content chunks (empty for a one-chunk answer)."""
    t = s.chunk_times_s
    return [b - a for a, b in pairwise(t)]


def mean_itl(s: LoadSample) -> float | None:
    gaps = itl_gaps(s)
    return sum(gaps) / len(gaps) if gaps else None


def meets_slo(s: LoadSample, slo: Slo) -> bool:
    """A successful request within every threshold given (no gaps: ITL not violated)."""
    if not s.ok:
        return False
    itl = mean_itl(s)
    return ((slo.ttft_s is None or ttft(s) <= slo.ttft_s)
            and (slo.e2e_s is None or e2e(s) <= slo.e2e_s)
            and (slo.itl_s is None or itl is None or itl <= slo.itl_s))


@dataclass(frozen=True)
class LevelStats:
    """One variant at one load level."""

    variant: str
    level: float
    n: int
    n_ok: int
    n_slo: int  # requests meeting every SLO threshold
    duration_s: float
    ttft: dict[str, float | None]
    itl: dict[str, float | None]
    e2e: dict[str, float | None]
    output_tokens_per_s: float
    output_tokens_per_request: float | None  # mean over successful requests; None: none ok
    requests_per_s: float
    goodput_rps: float

    @property
    def slo_attainment(self) -> float:
        return self.n_slo / self.n if self.n else 0.0

    def flat(self) -> dict[str, float | int | str | None]:
        row = {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}
        for name in ("ttft", "itl", "e2e"):
            row |= {f"{name}_{p}_s": v for p, v in getattr(self, name).items()}
        return row | {"slo_attainment": self.slo_attainment}


def level_stats(samples: Sequence[LoadSample], slo: Slo) -> LevelStats:
    """The figures of one (variant, level) group of samples."""
    if not samples:
        raise ValueError("level_stats needs at least one sample.")
    ok = [s for s in samples if s.ok]
    duration = max(s.end_s for s in samples) - min(s.arrival_s for s in samples)
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    n_slo = sum(meets_slo(s, slo) for s in samples)
    return LevelStats(
        variant=samples[0].variant, level=samples[0].level, n=len(samples), n_ok=len(ok),
        n_slo=n_slo, duration_s=duration, ttft=percentiles(ttft(s) for s in ok),
        itl=percentiles(g for s in ok for g in itl_gaps(s)),
        e2e=percentiles(e2e(s) for s in ok),
        output_tokens_per_s=per_s(sum(s.output_tokens for s in ok)),
        output_tokens_per_request=sum(s.output_tokens for s in ok) / len(ok) if ok else None,
        requests_per_s=per_s(len(ok)), goodput_rps=per_s(n_slo))


LEVEL_COLUMNS = ["variant", "level", "n", "n_ok", "n_slo", "duration_s",
                 "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "itl_p50_s", "itl_p90_s",
                 "itl_p99_s", "e2e_p50_s", "e2e_p90_s", "e2e_p99_s", "output_tokens_per_s",
                 "output_tokens_per_request", "requests_per_s", "goodput_rps", "slo_attainment"]


def levels_frame(samples: Iterable[LoadSample], slo: Slo) -> pd.DataFrame:
    """One row per (variant, level), in the order the variants first appear, levels sorted."""
    groups: dict[tuple[str, float], list[LoadSample]] = {}
    for s in samples:
        groups.setdefault((s.variant, s.level), []).append(s)
    order = list(dict.fromkeys(v for v, _ in groups))
    keys = sorted(groups, key=lambda k: (order.index(k[0]), k[1]))
    rows = [level_stats(groups[k], slo).flat() for k in keys]
    return pd.DataFrame(rows, columns=LEVEL_COLUMNS)


@dataclass(frozen=True)
class Capacity:
    variant: str
    requests_per_s: float | None  # None: no level met the SLO
    level: float | None  # the load level it was measured at
    e2e_p99_s: float | None  # at that level
    output_tokens_per_request: float | None = None  # at that level: the work a request was


def capacity_at_slo(levels: pd.DataFrame, min_attainment: float = 0.9) -> dict[str, Capacity]:
    """Per variant, the highest requests/s over the levels where at least ``min_attainment``
    of the requests met every SLO threshold (from ``levels_frame``)."""
    if not 0 < min_attainment <= 1:
        raise ValueError(f"min_attainment is a share in (0, 1], got {min_attainment!r}.")
    out = {}
    for variant, rows in levels.groupby("variant", sort=False):
        good = rows[rows.slo_attainment >= min_attainment - 1e-12]
        if good.empty:
            out[variant] = Capacity(variant, None, None, None)
            continue
        best = good.loc[good.requests_per_s.idxmax()]
        out[variant] = Capacity(variant, float(best.requests_per_s), float(best.level),
                                _float(best.get("e2e_p99_s")),
                                _float(best.get("output_tokens_per_request")))
    return out


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
