"""A workload's prompt statistics, worked out once when it is stored (issue 12 item 7).

``workload_stats`` is ``engine.ingest.logs.token_stats`` plus a fixed-bin histogram of prompt
lengths (words, and tokens when counted): a bounded summary the Upload page charts without
reading 100,000 requests back. Tokens are counted in batches by the Rust ``tokenizers``
library straight from a ``tokenizer.json`` (``tokenizer_counter``): the same counts as the
Hugging Face fast tokenizer's ``encode(text, add_special_tokens=False)``, without importing
transformers (seconds and hundreds of MiB at ingest), and in bounded chunks so memory stays
flat on a big log.

Input side (issue 21 item 2, when a tokenizer counts): each prompt's tokens split into the
**shared prefix**, the longest prefix it shares with any earlier request of the log (what a
serving engine's prefix cache could have kept from an earlier request), and the **unique**
rest; the share of all prompt tokens a prefix cache could skip, floored to the cache's
16-token blocks as vLLM caches whole blocks (``prefix_stats``). Prompts are tokenized as
their text, without a chat template: a template's fixed preamble would add the same few
tokens to every request's shared prefix.

``STATS_VERSION`` is stored with the statistics: a store holding an older shape (or none, as
workloads stored before revision 0005 do) has them worked out again once, on first read.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.core.domain import LogRequest
from engine.ingest.logs import summary

STATS_VERSION = 2  # 2: the input side's shared prefix (``prefix``)
HISTOGRAM_BINS = 30
PREFIX_BLOCK = 16  # tokens per prefix-cache block (vLLM's default block size)
# the prefix split is worked out over the first requests, up to this many or these tokens
PREFIX_MAX_REQUESTS = 20_000
PREFIX_MAX_TOKENS = 5_000_000
_CHUNK = 4_096  # prompts per tokenizer batch: bounded memory, still parallel

# Texts -> their token counts, in order (one call per batch, not per prompt). A counter
# made by ``tokenizer_counter`` also has ``.ids``: texts -> their token ids.
TokenCounter = Callable[[Sequence[str]], list[int]]


def workload_stats(requests: Sequence[LogRequest],
                   count_tokens: TokenCounter | None = None) -> dict[str, Any]:
    """Prompt statistics of ``requests`` (``n``,
    ``prompt_words``, ``prompt_chars``, ``prompt_tokens`` when ``count_tokens`` is given,
    ``with_reference``, ``with_logged_output``), plus ``histograms``: per unit (``words``,
    ``tokens``) a ``histogram`` of the per-prompt lengths, and ``version``."""
    words: list[int] = []
    chars: list[int] = []
    tokens: list[int] = []
    encode = getattr(count_tokens, "ids", None)
    prefixes = PrefixIndex() if encode is not None else None
    for first in range(0, len(requests), _CHUNK):  # a chunk's texts at a time: flat memory
        texts = [r.prompt_text for r in requests[first:first + _CHUNK]]
        words += [len(text.split()) for text in texts]
        chars += [len(text) for text in texts]
        if prefixes is not None and not prefixes.full:
            for one in encode(texts):
                tokens.append(len(one))
                if not prefixes.full:
                    prefixes.add(one)
        elif count_tokens is not None:
            tokens += count_tokens(texts)
    stats: dict[str, Any] = {"n": len(requests), "prompt_words": summary(words),
                             "prompt_chars": summary(chars)}
    histograms = {"words": histogram(words)}
    if count_tokens is not None:
        stats["prompt_tokens"] = summary(tokens)
        histograms["tokens"] = histogram(tokens)
    if prefixes is not None:
        stats["prefix"] = prefixes.stats(len(requests))
    stats["with_reference"] = sum(r.reference is not None for r in requests)
    stats["with_logged_output"] = sum(r.logged_output is not None for r in requests)
    return stats | {"histograms": histograms, "version": STATS_VERSION}


def token_stats(requests: Sequence[LogRequest],
                count_tokens: Callable[[str], int] | None = None) -> dict[str, Any]:
    """``workload_stats`` with a per-prompt token counter and without the histograms: ``n``,
    ``prompt_words``, ``prompt_chars`` (and ``prompt_tokens``), each ``{"mean", "p50",
    "p95", "max"}`` (percentiles interpolated between ranks; None with no requests), plus
    ``with_reference`` and ``with_logged_output``. Sizes are of ``LogRequest.prompt_text``."""
    batch = None if count_tokens is None else (lambda texts: [count_tokens(t) for t in texts])
    stats = workload_stats(requests, batch)
    del stats["histograms"], stats["version"]
    return stats


class PrefixIndex:
    """The token sequences seen so far, sorted: the longest prefix a new sequence shares with
    any of them is shared with one of its two neighbours in that order (sorted sequences
    sharing a prefix are contiguous), so each request costs a binary search and two
    comparisons, not a pass over every earlier request. Sequences are kept as bytes (4 per
    token): compared by memcmp, and small."""

    def __init__(self) -> None:
        self._seen: list[bytes] = []
        self.shared: list[int] = []  # per request, in order: its shared-prefix tokens
        self.total: list[int] = []
        self.kept_tokens = 0

    def add(self, ids: Sequence[int]) -> int:
        """Add one request's token ids; the tokens of its longest prefix shared with an earlier
        request (0 for the first)."""
        import bisect
        from array import array

        seq = array("I", ids).tobytes()
        at = bisect.bisect_left(self._seen, seq)
        shared = max((_common_bytes(seq, self._seen[i]) for i in (at - 1, at)
                      if 0 <= i < len(self._seen)), default=0) // 4
        self._seen.insert(at, seq)
        self.shared.append(shared)
        self.total.append(len(ids))
        self.kept_tokens += len(ids)
        return shared

    @property
    def full(self) -> bool:
        return (len(self.shared) >= PREFIX_MAX_REQUESTS
                or self.kept_tokens >= PREFIX_MAX_TOKENS)

    def stats(self, n_requests: int) -> dict[str, Any]:
        """``n`` (requests analysed, of ``of``), ``block``, ``shared_tokens`` and
        ``unique_tokens`` (per-request summaries), ``shared_share`` (shared / all prompt
        tokens), ``cacheable_share`` (the shared tokens in whole blocks / all prompt tokens:
        what a prefix cache could skip), ``with_shared_prefix`` (requests sharing at least
        one whole block)."""
        total = sum(self.total)
        blocks = [s // PREFIX_BLOCK * PREFIX_BLOCK for s in self.shared]
        return {"n": len(self.shared), "of": n_requests, "block": PREFIX_BLOCK,
                "shared_tokens": summary(self.shared),
                "unique_tokens": summary([t - s for t, s in zip(self.total, self.shared,
                                                                strict=True)]),
                "shared_share": sum(self.shared) / total if total else 0.0,
                "cacheable_share": sum(blocks) / total if total else 0.0,
                "with_shared_prefix": sum(b > 0 for b in blocks)}


def prefix_text(p: dict) -> str:
    """The input side in words: how much of the prompts repeats an earlier request's prefix
    (PrefixIndex), and what a prefix cache could skip."""
    of = f" (the first {p['n']:,} of {p['of']:,} requests)" if p["n"] < p["of"] else ""
    shared, unique = p["shared_tokens"], p["unique_tokens"]
    if not p["n"]:
        return "Input side: no prompts to compare."
    return (f"Input side{of}: {p['shared_share']:.0%} of prompt tokens repeat the start of an "
            f"earlier request; {p['cacheable_share']:.0%} in whole {p['block']}-token blocks, "
            f"what a serving engine's prefix cache could skip instead of computing again. "
            f"{p['with_shared_prefix']:,} of {p['n']:,} requests share at least one block; "
            f"per request, the shared prefix is {shared['p50']:,.0f} tokens at the median "
            f"(p95 {shared['p95']:,.0f}) and the unique part {unique['p50']:,.0f} "
            f"(p95 {unique['p95']:,.0f}).")


def _common_bytes(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` share (binary search over memcmp'd slices)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo]; a[:hi + 1] != b[:hi + 1]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def histogram(values: Sequence[int], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """At most ``bins`` equal-width integer bins covering ``values``: ``start`` (the first
    bin's lowest value), ``width`` and ``counts`` (bin i holds start + i*width up to, not
    including, start + (i+1)*width). Empty ``values``: no bins."""
    if not values:
        return {"start": 0, "width": 1, "counts": []}
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))  # ceiling division
    counts = [0] * (-(-(high - low + 1) // width))
    for value in values:
        counts[(value - low) // width] += 1
    return {"start": low, "width": width, "counts": counts}


def is_current(stats: dict[str, Any] | None, want_tokens: bool) -> bool:
    """Whether stored statistics can be shown as they are: this code's shape, and token
    counts when a tokenizer is there to count them (stored before the model was prepared,
    they have none)."""
    return (stats is not None and stats.get("version") == STATS_VERSION
            and (not want_tokens or "prompt_tokens" in stats))


def tokenizer_counter(tokenizer_json: Path) -> TokenCounter:
    """A TokenCounter over a Hugging Face ``tokenizer.json`` (special tokens not added, as
    the dashboard always counted); loads in well under a second."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()

    # encode_batch_fast (newer tokenizers releases) skips the character offsets: the same ids for
    # about 30% less CPU (5 s -> 3.5 s over 100,000 support-chat prompts)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e) for e in encode(list(texts), add_special_tokens=False)]

    def ids(texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]

    count.ids = ids  # type: ignore[attr-defined]
    return count
