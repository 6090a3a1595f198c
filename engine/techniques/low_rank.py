"""Low-rank factorisation: each targeted linear W (out x in) becomes two linears, in -> r and
r -> out, from its truncated SVD W ~ (U_r S_r)(V_r^T).

A factorised layer holds r*(in+out) weights instead of in*out, so it only saves parameters
when r < in*out/(in+out) (the break-even rank; 419 for SmolLM2's 576x1536 MLP, 288 for a
square 576x576 attention projection). Above it the model grows and gets slower; the report
says so per projection. At full rank the product reproduces W up to rounding.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import Field

from engine.core.errors import SpecError
from engine.techniques.base import TechniqueBase, TechniqueContext
from engine.techniques.calibration import target_linears

stage = "model"


class LowRank(TechniqueBase):
    """Replace decoder linears by their truncated SVD (two thinner linears each)."""

    kind: Literal["low_rank"] = "low_rank"
    rank_fraction: float = Field(0.5, gt=0.0, le=1.0,
                                 description="fraction of min(in, out) singular values kept")
    rank: int | None = Field(None, ge=1, description="a fixed rank; overrides rank_fraction")
    targets: Literal["mlp", "attention", "all"] = "mlp"


SPEC = LowRank


def describe(spec: LowRank) -> str:
    r = spec.rank if spec.rank is not None else f"{spec.rank_fraction:.0%}"
    return f"low-rank SVD r={r} ({spec.targets})"


def check(spec: LowRank, device: str) -> None:
    """SVD runs on CPU and CUDA; only a spec naming both rank and rank_fraction is refused."""
    if spec.rank is not None and "rank_fraction" in spec.model_fields_set:
        raise SpecError(f"Give either rank ({spec.rank}) or rank_fraction "
                        f"({spec.rank_fraction}), not both.")


class LowRankLinear(torch.nn.Module):
    """``up(down(x))``: a rank-r stand-in for an ``nn.Linear``."""

    def __init__(self, down: torch.nn.Linear, up: torch.nn.Linear) -> None:
        super().__init__()
        self.down, self.up = down, up
        self.in_features, self.out_features = down.in_features, up.out_features
        self.rank = down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, rank={self.rank}, out={self.out_features}"


def rank_for(spec: LowRank, in_features: int, out_features: int) -> int:
    full = min(in_features, out_features)
    r = spec.rank if spec.rank is not None else round(spec.rank_fraction * full)
    return max(1, min(full, r))


def factorise(linear: torch.nn.Linear, rank: int) -> tuple[LowRankLinear, float]:
    """The rank-``rank`` truncated SVD of ``linear`` as a :class:`LowRankLinear`, and the
    fraction of the squared singular values (energy) it keeps.

    The singular vectors come from the eigen-decomposition of the smaller Gram matrix
    (W^T W, or W W^T for a wide W) in float64: W V_r V_r^T = U_r S_r V_r^T (or U_r U_r^T W),
    the same product as the SVD's, ~3x faster than ``torch.linalg.svd`` on CPU, and exact to
    float32 rounding at full rank because V V^T = I in float64.
    """
    w = linear.weight.detach().to(torch.float64)
    tall = w.shape[0] >= w.shape[1]
    evals, vecs = torch.linalg.eigh(w.T @ w if tall else w @ w.T)  # ascending
    evals, vecs = evals.flip(0).clamp_min(0.0), vecs.flip(1)[:, :rank]
    energy = float(evals[:rank].sum() / evals.sum())
    first, second = (vecs.T, w @ vecs) if tall else (vecs.T @ w, vecs)
    kw = {"device": linear.weight.device, "dtype": linear.weight.dtype}
    down = torch.nn.Linear(linear.in_features, rank, bias=False, **kw)
    up = torch.nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **kw)
    with torch.no_grad():
        down.weight.copy_(first)
        up.weight.copy_(second)
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    return LowRankLinear(down, up), energy


@contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the decompositions single-threaded on CPU. These matrices are too small to gain
    from threads, and on a busy 2-core machine LAPACK's threads spin on each other: one
    576x1536 float64 SVD took 44 s with 2 threads and 0.9 s with 1 (measured)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def apply(model, spec: LowRank, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    """Factorise in place; return parameters and ranks read back from the model."""
    from engine.core.memory import parameter_counts

    t0 = time.perf_counter()
    before = parameter_counts(model)["parameters"]
    kept = total = 0.0
    energies: list[float] = []
    with _one_cpu_thread(model.device):
        for name, linear in target_linears(model, spec.targets).items():
            parent, _, child = name.rpartition(".")
            new, energy = factorise(linear, rank_for(spec, linear.in_features,
                                                     linear.out_features))
            setattr(model.get_submodule(parent), child, new)
            s2 = float(linear.weight.detach().to(torch.float64).pow(2).sum())  # = sum of s^2
            kept, total = kept + energy * s2, total + s2
            energies.append(energy)
    after = parameter_counts(model)["parameters"]
    projections = _projections(model)
    growing = [p for p, d in projections.items() if not d["saves_parameters"]]
    return {
        "targets": spec.targets, "rank_spec": spec.rank if spec.rank is not None
        else spec.rank_fraction, "layers_factorised": len(energies),
        "parameters_before": before, "parameters_after": after,
        "parameters_kept": round(after / before, 6), "projections": projections,
        "energy_retained": round(kept / total, 6), "energy_retained_min": round(min(energies), 6),
        "note": (f"rank above break-even for {', '.join(growing)}: these layers now hold MORE "
                 "parameters than before" if growing else
                 "every factorised projection is below its break-even rank, so each saves "
                 "parameters") + "; a factorised layer saves only when r < in*out/(in+out).",
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _projections(model) -> dict[str, dict[str, Any]]:
    """Per projection name (e.g. ``mlp.gate_proj``): shape, ranks and break-even, read back
    from the ``LowRankLinear`` modules now in the model."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if not isinstance(m, LowRankLinear):
            continue
        key = ".".join(name.split(".")[-2:])
        d = out.setdefault(key, {"in": m.in_features, "out": m.out_features, "ranks": set(),
                                 "layers": 0})
        d["ranks"].add(m.rank)
        d["layers"] += 1
    for d in out.values():
        d["ranks"] = sorted(d["ranks"])
        d["break_even_rank"] = round(d["in"] * d["out"] / (d["in"] + d["out"]), 1)
        d["saves_parameters"] = max(d["ranks"]) < d["break_even_rank"]
    return out
