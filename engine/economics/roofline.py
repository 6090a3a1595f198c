"""The memory-bandwidth bound on decode speed, and the GPU bandwidths to put into it.

At small batch, each decode step streams every weight matrix from device memory once and
reads each sequence's KV cache; the arithmetic is tiny next to those bytes. So no engine
can decode faster than::

    tok/s <= batch * bandwidth / (weight_bytes + batch * context_tokens * kv_bytes_per_token)

A measured tok/s over this bound is the fraction of the hardware an engine uses (e.g.
transformers eager ~6%, static cache + torch.compile ~50%, vLLM ~75% on an H200).
The bound ignores compute, so it stops being tight at large batch, where the matrix
products become compute-bound.
"""
from __future__ import annotations

# Vendor datasheet HBM bandwidth (bytes/s). A device-to-device copy reaches ~90% of these
# (4.3 TB/s measured on an H200, 3.0 TB/s on an H100, counting bytes read plus written);
# pass a measured figure to ``decode_bound_tok_s`` where you have one.
GPU_BANDWIDTH_SPEC: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 3.35e12,  # H100 SXM
    "NVIDIA H100 PCIe": 2.0e12,
    "NVIDIA H200": 4.8e12,  # H200 SXM
    "NVIDIA A100-SXM4-80GB": 2.039e12,
}


def decode_bound_tok_s(weight_bytes: float, kv_bytes_per_token: float, context_tokens: float,
                       batch: int, bandwidth_bytes_per_s: float) -> float:
    """Upper bound on decode throughput (output tokens/s summed over the batch).

    ``weight_bytes``: bytes of weights read per decode step (every matrix once; an untied
    input-embedding table is read only a row per sequence, so leave it out: see
    ``streamed_weight_bytes``). ``kv_bytes_per_token``: K and V over all layers for one
    token of context. ``context_tokens``: mean context length per sequence over the decode
    (prompt + half the new tokens). ``batch``: sequences decoded together.
    """
    if min(weight_bytes, kv_bytes_per_token, context_tokens) < 0 or batch < 1 \
            or bandwidth_bytes_per_s <= 0:
        raise ValueError("sizes must be >= 0, batch >= 1 and bandwidth > 0")
    step_bytes = weight_bytes + batch * context_tokens * kv_bytes_per_token
    return batch * bandwidth_bytes_per_s / step_bytes


def mean_decode_context(prompt_tokens: int, new_tokens: int) -> float:
    """Mean context length a decode step attends over: the prompt plus half the new tokens."""
    return prompt_tokens + new_tokens / 2
