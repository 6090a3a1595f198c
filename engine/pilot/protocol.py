"""The measurement protocol: how a variant's speed and memory are timed so that they repeat.

A variant, once loaded, is **warmed up at the shape it will be timed at**
(``engine.pilot.warmup``: its own requests, untimed, in the pilot's batches and at its output
length, until two rounds agree). A 2-token warm-up left the first timed pass to pay the first
use of the real batch shape.

Then it runs ``repeats`` timed passes over the same requests
(``engine.specs.pilot.MeasurementSettings``; default per device, ``DEFAULT_REPEATS``). **A
pass lasts at least ``min_pass_s``** (default per device, ``DEFAULT_MIN_PASS_S``): it replays
the request set as many times as the warm-up says that takes (the same number in every pass
of the variant), so a one-off stall is a small part of it. Before every replay the backend
empties its prefix cache (``Backend.begin_replay``): a replay sees the log once, as
production would, and a variant that measures prefix caching counts only the cache built
within it. The first replay of the first pass gives the outputs scored for accuracy
(decoding is greedy, later ones only re-time); a request's latency in a pass is its median
over the pass's replays.

Where the backend allows it (``Backend.interleave_reason`` is None: several variants can
stay loaded in one process; vLLM on a GPU through its sleep mode) and memory holds them, the
variants are loaded side by side and their passes interleaved: round 1 times every variant
once, round 2 again, and so on (``engine.pilot.rounds``), so a machine that gets busier or
cooler mid-run touches every variant alike instead of one. Otherwise a variant's passes run
back to back while it is loaded. Either way the baseline is timed once more at the end
(``role="baseline_end"``; loaded again, with the same warm-up and pass length, when it was
not kept): how far it drifted from its first measurement is the run's noise floor.

Every pass is stored (``TimedPass``, table ``variant_passes``); the variant row keeps the
medians, so the report and the business case read medians. A figure whose passes spread by
more than ``UNSTABLE_SPREAD`` of its median, or any figure of a run whose baseline drifted by
more than ``BASELINE_DRIFT``, is marked unstable. While each pass runs, a thread samples how
busy the machine is besides this process: other processes' CPU share, the runnable tasks
that are not this process's threads (``others_load``; the load average counts the pilot's
own threads, so a pilot using every core would call a quiet machine busy), GPU utilisation
and other processes on the GPU through NVML.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.core.domain import Generation, TimedPass
from engine.pilot.gcpause import heap_frozen

UNSTABLE_SPREAD = 0.10  # (max - min) / median of a figure's passes above this: unstable
BASELINE_DRIFT = 0.10  # baseline's end re-measure off its first median by more: unstable
BUSY_CPU_PCT = 25.0  # other processes' CPU, % of the whole machine, above this: busy
BUSY_LOAD_PER_CPU = 1.0  # other processes' runnable tasks per CPU (not this one's) above this
BUSY_GPU_OTHERS = 1  # this many other processes on the GPU: busy
SAMPLE_S = 0.5  # how often the machine's load is sampled during a pass
MAX_REPLAYS = 1000  # replays of the request set in one pass, at most


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over a variant's passes."""

    median: float
    low: float
    high: float
    n: int

    @property
    def relative(self) -> float:
        """(max - min) / median: 0 for one pass or identical passes."""
        return (self.high - self.low) / self.median if self.median else 0.0


def spread(values: Sequence[float | None]) -> Spread | None:
    """The Spread of the values given (None ignored); None when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def memory_passes(passes: Sequence) -> Sequence:
    """The passes whose peak memory counts: all but the first when there are several. The
    first timed pass in a fresh process also pays one-off allocations (the allocator's and
    the kernels' first full-size batch): bench/bench_repeats.py saw the baseline's one-pass
    peak differ by 27% between two runs, and by 0.1% over the later passes."""
    return passes[1:] if len(passes) > 1 else passes


def drift(first: float | None, again: float | None) -> float | None:
    """Relative change of the baseline's re-measure from its first figure: again/first - 1."""
    if not first or again is None:
        return None
    return again / first - 1


# ---- how busy the machine is ------------------------------------------------------------

class MachineSampler:
    """Samples, in a thread, how busy the machine is besides this process and its children.

    Used as a context manager around a timed pass; ``summary()`` then gives the mean CPU share
    of other processes (% of all CPUs), the highest 1-minute load average, the mean GPU
    utilisation and the number of other processes holding GPU memory (NVML; None without).
    """

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        import psutil

        self._psutil = psutil
        self._interval = interval_s
        self._me = psutil.Process()
        self._procs: dict[int, Any] = {}
        self._cpu: list[float] = []
        self._load: list[float] = []
        self._gpu: list[float] = []
        self._others_load: list[float] = []
        self._pids: list[int] = []
        self._gpu_others = 0
        self._nvml = _nvml_handle()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MachineSampler:
        self._psutil.cpu_percent(None)  # primes the counters: the next call covers from now
        self._own_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sample()  # a pass shorter than the interval still gets one sample

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _own_cpu(self) -> float:
        """CPU % (one CPU = 100) of this process and its children since the last call."""
        total = 0.0
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except self._psutil.Error:
            procs = [self._me]
        self._pids = [p.pid for p in procs]
        for p in procs:
            known = self._procs.setdefault(p.pid, p)
            try:
                total += known.cpu_percent(None)
            except self._psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        system = self._psutil.cpu_percent(None)  # % of all CPUs
        own = self._own_cpu() / (os.cpu_count() or 1)
        self._cpu.append(max(0.0, system - own))
        try:
            self._load.append(os.getloadavg()[0])
        except OSError:
            pass
        running = running_tasks()
        if running is not None:
            self._others_load.append(max(0, running - own_running_threads(self._pids)))
        if self._nvml is not None:
            self._sample_gpu()

    def _sample_gpu(self) -> None:
        import pynvml

        try:
            self._gpu.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu))
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(self._nvml)
            mine = {self._me.pid, *self._procs}
            self._gpu_others = max(self._gpu_others, sum(p.pid not in mine for p in procs))
        except Exception:  # noqa: BLE001 - a GPU reading is a bonus, never a failure
            self._nvml = None

    def summary(self) -> dict[str, float | int | None]:
        mean = statistics.fmean
        return {"others_cpu_pct": round(mean(self._cpu), 1) if self._cpu else None,
                "load_avg_1m": round(max(self._load), 2) if self._load else None,
                "others_load": round(mean(self._others_load), 2) if self._others_load
                else None,
                "gpu_util_pct": round(mean(self._gpu), 1) if self._gpu else None,
                "gpu_other_procs": self._gpu_others if self._nvml is not None else None}


def running_tasks() -> int | None:
    """Tasks (threads) runnable on the whole machine now: the kernel's ``procs_running``,
    the numerator of /proc/loadavg's fourth field; None where there is no /proc."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def own_running_threads(pids: Sequence[int]) -> int:
    """Threads of these processes in state R (running or runnable) now, from /proc."""
    n = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            n += stat[stat.rfind(")") + 2:stat.rfind(")") + 3] == "R"
    return n


def _nvml_handle():
    """NVML's handle of the first visible GPU, or None (no GPU, no pynvml): asked through
    NVML so that no CUDA context is created (engine.backends.vllm_host does the same)."""
    try:
        import pynvml

        from engine.backends.vllm_host import nvml_index

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(nvml_index(0))
    except Exception:  # noqa: BLE001 - no NVML here
        return None


def busy_reason(p: TimedPass | dict) -> str | None:
    """Why the machine counts as busy during a pass (or a summary dict of one), else None."""
    get = p.get if isinstance(p, dict) else lambda k: getattr(p, k)
    cpus = os.cpu_count() or 1
    if (get("others_cpu_pct") or 0) > BUSY_CPU_PCT:
        return f"other processes used {get('others_cpu_pct'):.0f}% of the CPUs"
    if (get("others_load") or 0) > BUSY_LOAD_PER_CPU * cpus:
        return (f"{get('others_load'):.1f} runnable tasks of other processes on {cpus} "
                "CPUs")
    if (get("gpu_other_procs") or 0) >= BUSY_GPU_OTHERS:
        return f"{get('gpu_other_procs')} other process(es) on the GPU"
    return None


# ---- the timed passes -------------------------------------------------------------------

def batch_order(backend, prompts: list[list[dict]]) -> list[int]:
    """Request indices shortest prompt first, so each batch pads little. Counting tokens
    for this is roilab's bookkeeping: the runner keeps it out of the timed serving wall
    (at batch 64 on an H200 it was ~5% of the pass)."""
    return sorted(range(len(prompts)), key=lambda i: backend.count_tokens(prompts[i]))



def generate_batched(backend, prompts: list[list[dict]], order: list[int], batch_size: int,
                     max_new_tokens: int, notify) -> list[Generation]:
    """Generate in batches of ``batch_size`` in ``order``; results in the prompts' order."""
    out: list[Generation | None] = [None] * len(prompts)
    done = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        notify(done, f"generating {done + 1}-{done + len(idx)} of {len(prompts)}")
        for i, g in zip(idx, backend.generate([prompts[i] for i in idx], max_new_tokens),
                        strict=True):
            out[i] = g
        done += len(idx)
        notify(done, f"generated {done} of {len(prompts)}")
    return out  # type: ignore[return-value]


def timed_passes(backend, prompts: list[list[dict]], order: list[int], batch_size: int,
                 max_new_tokens: int, repeats: int, prepare_s: float,
                 compress_s: Sequence[float], notify: Callable[[int, str], None],
                 role: str = "timed", first: int = 0, of: int | None = None,
                 replays: int = 1) -> tuple[list[list[Generation]], list[TimedPass]]:
    """Run ``repeats`` timed passes of the same prompts, numbered from ``first`` (of ``of``
    in all: interleaved rounds run one at a time), each replaying the prompts ``replays``
    times (the backend empties its prefix cache before each replay, outside the clock);
    each pass's generations (the first replay's, with each request's median latency over the
    replays) and its TimedPass. ``prepare_s`` (the seconds the prompt-stage techniques took
    over these prompts) is part of each replay's wall time, as ``compress_s`` is of each
    request's latency; compile warm-up met mid-pass is not (start-up, not serving)."""
    n = len(prompts)
    of = of or first + repeats
    all_gens, passes = [], []
    for k in range(first, first + repeats):
        backend.begin_pass()
        warm0 = backend.warm_up_s
        runs: list[list[Generation]] = []
        wall = 0.0
        with heap_frozen() as gc_pauses, MachineSampler() as machine:
            for r in range(replays):
                backend.begin_replay()  # outside the clock
                label = _label("", k, of) + (f"replay {r + 1}/{replays}: " if replays > 1
                                              else "")
                t0 = time.perf_counter()
                runs.append(generate_batched(
                    backend, prompts, order, batch_size, max_new_tokens,
                    lambda d, m, k=k, r=r, label=label: notify(
                        k * n + (r * n + d) // replays, label + m)))
                wall += time.perf_counter() - t0
            wall += replays * prepare_s - (backend.warm_up_s - warm0)
        lat = [g.latency_s + cs for gens in runs for g, cs in zip(gens, compress_s, strict=True)]
        tokens = sum(g.output_tokens for gens in runs for g in gens)
        passes.append(TimedPass(pass_index=k, role=role, wall_s=wall,
                                throughput_tok_s=tokens / wall if wall > 0 else 0.0,
                                output_tokens=tokens, latency_p50_s=_pct(lat, 50),
                                latency_p95_s=_pct(lat, 95),
                                peak_mem_bytes=backend.peak_memory_bytes(),
                                replays=replays, gc_pause_s=round(gc_pauses.seconds, 4),
                                **machine.summary()))
        all_gens.append(_median_over_replays(runs))
    return all_gens, passes


def _median_over_replays(runs: list[list[Generation]]) -> list[Generation]:
    """The first replay's generations, each with its request's median TTFT and latency over
    every replay of the pass."""
    if len(runs) == 1:
        return runs[0]
    med = statistics.median
    return [replace(g, ttft_s=med(run[i].ttft_s for run in runs),
                    latency_s=med(run[i].latency_s for run in runs))
            for i, g in enumerate(runs[0])]


def _label(message: str, k: int, repeats: int) -> str:
    return message if repeats == 1 else f"pass {k + 1}/{repeats}: {message}"


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def outputs_differ(all_gens: list[list[Generation]]) -> int:
    """Requests whose output text differs in a later pass from the first (greedy decoding
    should repeat exactly; a difference is reported, not hidden)."""
    return sum(any(p[i].text != g.text for p in all_gens[1:]) for i, g in enumerate(all_gens[0]))


def measurement_report(passes: list[TimedPass], differ: int,
                       interleaved_with: Sequence[str] = ()) -> dict[str, Any]:
    """What the protocol did, for ``technique_report["measurement"]``: passes, spreads, how
    busy the machine was (the busiest pass), the variants whose passes alternated with these
    (none: back to back)."""
    report: dict[str, Any] = {"passes": len(passes), "repeated_outputs_differ": differ,
                              "interleaved": bool(interleaved_with)}
    if interleaved_with:
        report["interleaved_with"] = list(interleaved_with)
    for key in ("throughput_tok_s", "latency_p95_s", "peak_mem_bytes"):
        s = spread([getattr(p, key) for p in (memory_passes(passes) if key == "peak_mem_bytes"
                                              else passes)])
        if s is not None:
            report[f"{key}_spread"] = round(s.relative, 4)
    busiest = max(passes, key=lambda p: p.others_cpu_pct or 0.0)
    report["machine"] = {k: getattr(busiest, k) for k in
                         ("others_cpu_pct", "others_load", "load_avg_1m", "gpu_util_pct",
                          "gpu_other_procs")}
    report["machine"]["busy"] = next((r for p in passes if (r := busy_reason(p))), None)
    return report
