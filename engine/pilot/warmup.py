"""Warm-up at the measured shape, and how many replays make a pass long enough (issue 18).

Before its timed passes (``engine.pilot.protocol``) a loaded variant runs its own requests
untimed, in the pilot's batches and at its output length (on a GPU the whole request set,
elsewhere one batch of each size the timed passes use), round after round until two rounds
agree within ``WARM_UP_TOLERANCE`` (at least ``WARM_UP_ROUNDS[device][0]`` rounds, at most
the second number). A 2-token warm-up left the first timed pass to pay the first use of the
real batch shape: on an H100 pass 1 ran 12% under passes 2-5. The last round's time also
says how many replays of the request set a pass needs to last ``min_pass_s``
(``replays_for``).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.pilot.protocol import MAX_REPLAYS, generate_batched

WARM_UP_TOLERANCE = 0.03  # two warm-up rounds this close in tokens/s: steady state
# Warm-up rounds per device, (at least, at most): a GPU round is a second or two, a CPU
# round is as long as a timed pass, an endpoint's requests may be billed.
WARM_UP_ROUNDS = {"cuda": (2, 6), "cpu": (1, 1), "endpoint": (1, 1)}


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up ran: rounds of ``requests`` requests (in batches of ``batch_sizes``)
    at the pass's output length, each round's tokens/s, in ``seconds`` in all, and whether
    the last two rounds agreed within ``WARM_UP_TOLERANCE`` (``steady``; None: one round)."""

    rounds: int
    requests: int
    batch_sizes: tuple[int, ...]
    max_new_tokens: int
    seconds: float
    round_tok_s: tuple[float, ...]
    steady: bool | None
    replay_s: float  # one replay of the whole request set, estimated from the last round

    def report(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "requests_per_round": self.requests,
                "batch_sizes": list(self.batch_sizes), "max_new_tokens": self.max_new_tokens,
                "seconds": round(self.seconds, 2),
                "round_tok_s": [round(x, 1) for x in self.round_tok_s],
                "steady": self.steady, "replay_s_estimate": round(self.replay_s, 3)}


def warm_up_order(order: list[int], batch_size: int, whole_set: bool) -> list[int]:
    """The requests a warm-up round runs, in timed order: the whole set, or (``whole_set``
    False) its first batch plus its last when that one is smaller: one batch of every size
    the timed passes use."""
    if whole_set or len(order) <= batch_size:
        return list(order)
    rest = len(order) % batch_size
    return list(order[:batch_size]) + (list(order[-rest:]) if rest else [])


def warm_up(backend, prompts: list[list[dict]], order: list[int], batch_size: int,
            max_new_tokens: int, device: str, notify: Callable[[int, str], None] | None = None,
            paces_passes: bool = False) -> WarmUp:
    """Run the variant's own requests untimed at the timed batch size and output length,
    round after round until two rounds agree within ``WARM_UP_TOLERANCE`` (rounds per
    ``device``, ``WARM_UP_ROUNDS``); on a GPU each round is the whole set, elsewhere one
    batch of each size the passes use. The backend's own preparation (compiling per batch
    shape: ``Backend.warm_up``) runs first. ``paces_passes``: the last round's time sets how
    many replays a pass needs (a minimum pass time is asked), so at least two rounds run: a
    first round that pays cold costs would promise a replay several times slower than a
    warm one, and passes that fall short of their minimum."""
    least, most = WARM_UP_ROUNDS.get(device, WARM_UP_ROUNDS["cpu"])
    if paces_passes:
        least, most = max(least, 2), max(most, 2)
    backend.warm_up([prompts[i] for i in order], batch_size, max_new_tokens)
    n_all = len(order)
    if warm_up_mode() == "minimal":  # one short request: only for test suites (see below)
        least = most = 1
        order, batch_size, max_new_tokens = order[:1], 1, min(2, max_new_tokens)
    sub = warm_up_order(order, batch_size, whole_set=device == "cuda")
    sizes = tuple(dict.fromkeys(len(sub[i:i + batch_size]) for i in range(0, len(sub), batch_size)))
    rates: list[float] = []
    times: list[float] = []
    t_all = time.perf_counter()
    steady: bool | None = None
    for r in range(most):
        if notify:
            notify(0, f"warming up: round {r + 1} ({len(sub)} requests)")
        backend.begin_replay()
        t0 = time.perf_counter()
        gens = generate_batched(backend, prompts, sub, batch_size, max_new_tokens,
                                lambda d, m: None)
        dt = time.perf_counter() - t0
        tokens = sum(g.output_tokens for g in gens if g is not None)
        times.append(dt)
        rates.append(tokens / dt if dt > 0 else 0.0)
        if len(rates) >= 2:
            steady = abs(rates[-1] / rates[-2] - 1) <= WARM_UP_TOLERANCE if rates[-2] else False
            if steady and len(rates) >= least:
                break
    backend.warmed_up()
    replay_s = times[-1] * n_all / max(len(sub), 1)  # minimal: a rough pace only
    return WarmUp(rounds=len(rates), requests=len(sub), batch_sizes=sizes,
                  max_new_tokens=max_new_tokens, seconds=time.perf_counter() - t_all,
                  round_tok_s=tuple(rates), steady=steady, replay_s=replay_s)


def warm_up_mode() -> str:
    """``ROILAB_WARM_UP``: "shape" (the default: the timed batch shapes at the output length)
    or "minimal" (one request, 2 tokens: the warm-up before issue 18, which left the first
    timed pass to pay for the real shape). The test suite sets "minimal" so that only the
    protocol's own tests pay for warm-ups, as it sets ``ROILAB_REPEATS=1``."""
    mode = os.environ.get("ROILAB_WARM_UP", "").strip() or "shape"
    if mode not in ("shape", "minimal"):
        from engine.core.errors import SpecError

        raise SpecError(f"ROILAB_WARM_UP={mode!r}: give 'shape' (the timed batch shapes at "
                        "the output length) or 'minimal' (one short request), or unset it.")
    return mode


def replays_for(min_pass_s: float, replay_s: float) -> int:
    """Replays of the request set a pass needs to last ``min_pass_s``, given one replay's
    seconds (from the warm-up): at least 1, at most ``MAX_REPLAYS``."""
    if min_pass_s <= 0 or replay_s <= 0:
        return 1
    return max(1, min(MAX_REPLAYS, math.ceil(min_pass_s / replay_s)))
