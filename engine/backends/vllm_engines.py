"""Shared vLLM engines: their arguments, start, reuse and shutdown.

Engines are expensive to start (about a minute on a 2-core CPU), so they are shared per
process, keyed by the engine arguments: a later variant with the same arguments reuses the
engine. A variant with other arguments first shuts the running engine down, waits for its
processes to exit and its GPU memory to come back, then starts its own, unless (on a GPU)
the new one fits in the memory still free beside it. Every engine is shut down at exit
(``shutdown_engines()`` does it earlier). Engines start their processes with the spawn
method, which works in a process that has already touched CUDA (fork does not): a script
that runs a pilot on this backend needs an ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.base import NoRoomBeside
from engine.backends.vllm_checks import check_gpu_free
from engine.backends.vllm_host import gpu_memory
from engine.backends.vllm_memory import kv_cache_info, kv_summary, loaded_weight_bytes
from engine.core.errors import BackendError, SpecError
from engine.models.prep import is_random_model
from engine.specs.backends import VllmOptions

CPU_KV_CACHE_BYTES = 512 * 2**20  # default KV cache on CPU (vLLM needs an explicit size there)
SHUTDOWN_WAIT_S = 60  # how long a stopped engine's processes get to exit before being killed
# The front end hands us a request's first token and then only its finish (vLLM's
# ``stream_interval``): that is all the timing needs, and building a delta output for every
# request at every step cost ~8% of throughput at batch 64 on an H200.
STREAM_INTERVAL = 1 << 20
# GPU memory fraction an engine reserves when it is started to be interleaved with others
# (sleep mode) and the variant names none: the sleeping engines keep their CUDA context and
# graph pools on the device (vLLM's default 0.9 would leave them no room).
SIDE_BY_SIDE_GPU_UTILIZATION = 0.8


@dataclass
class SharedEngine:
    """One started vLLM engine and what starting it cost."""

    llm: Any  # vllm.LLM
    args: dict[str, Any]
    start_s: float
    pids: list[int]  # the engine's own processes (EngineCore, workers), for memory
    weight_bytes: int | None
    device: str = "cpu"
    used_before: list[int] = field(default_factory=list)  # GPU bytes in use before it started
    kv: dict[str, Any] = field(default_factory=dict)  # KV-cache capacity vLLM reserved
    uses: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    asleep: bool = False
    sleeps: int = 0  # times put to sleep (vLLM's sleep mode) and woken again
    sleep_s: float = 0.0  # seconds spent putting it to sleep and waking it

    def sleep(self) -> None:
        """Put the engine to sleep (level 1: weights to host memory, KV cache dropped), so
        another engine can use the GPU; no-op when asleep already or started without sleep
        mode."""
        if self.asleep or not self.args.get("enable_sleep_mode") or self.llm is None:
            return
        t0 = time.perf_counter()
        self.llm.sleep(level=1)
        self.sleep_s += time.perf_counter() - t0
        self.asleep = True
        self.sleeps += 1

    def wake(self) -> bool:
        """Wake the engine if asleep (its weights back on the GPU, its KV cache reallocated,
        the prefix cache empty); True when it was asleep."""
        if not self.asleep:
            return False
        t0 = time.perf_counter()
        self.llm.wake_up()
        self.llm.reset_prefix_cache()
        self.sleep_s += time.perf_counter() - t0
        self.asleep = False
        return True


# n-gram speculative decoding: the longest and shortest n-gram of the recent tokens looked up
# in the prompt to copy a draft from (vLLM's prompt lookup).
NGRAM_LOOKUP_MAX, NGRAM_LOOKUP_MIN = 4, 2

_ENGINES: OrderedDict[str, SharedEngine] = OrderedDict()
_LOCK = threading.Lock()


def engine_args(spec, model_path: str, device: str, sleep: bool = False) -> dict[str, Any]:
    """vLLM ``LLM(...)`` keyword arguments for a variant on ``device`` ("cpu" or "cuda");
    ``sleep``: started in sleep mode, to be interleaved with other engines on the GPU."""
    opts = spec.vllm or VllmOptions()
    if os.path.exists(model_path):  # one engine per folder, however it was reached (symlinks)
        model_path = os.path.realpath(model_path)
    args: dict[str, Any] = {
        "model": model_path, "dtype": spec.dtype,
        "enforce_eager": opts.enforce_eager if opts.enforce_eager is not None else device == "cpu",
        "tensor_parallel_size": opts.tensor_parallel_size, "seed": opts.seed,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "disable_log_stats": False,  # RequestOutput.metrics is empty otherwise
        "stream_interval": STREAM_INTERVAL,
    }
    optional = {"quantization": opts.quantization, "max_model_len": opts.max_model_len,
                "pipeline_parallel_size": opts.pipeline_parallel_size
                if opts.pipeline_parallel_size > 1 else None,
                "max_num_seqs": opts.max_num_seqs,
                "enable_prefix_caching": opts.enable_prefix_caching,
                "gpu_memory_utilization": opts.gpu_memory_utilization,
                "kv_cache_memory_bytes": opts.kv_cache_memory_bytes}
    if device == "cpu" and opts.kv_cache_memory_bytes is None:
        optional["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if sleep and device == "cuda":
        optional["enable_sleep_mode"] = True
        if opts.gpu_memory_utilization is None and opts.kv_cache_memory_bytes is None:
            optional["gpu_memory_utilization"] = SIDE_BY_SIDE_GPU_UTILIZATION
    if opts.ngram_speculative_tokens is not None:
        optional["speculative_config"] = {
            "method": "ngram", "num_speculative_tokens": opts.ngram_speculative_tokens,
            "prompt_lookup_max": NGRAM_LOOKUP_MAX, "prompt_lookup_min": NGRAM_LOOKUP_MIN}
    args.update({k: v for k, v in optional.items() if v is not None})
    if is_random_model(model_path) and not any(Path(model_path).glob("*.safetensors")):
        # A production shape from its config alone: random weights, speed and memory only.
        # (An exported quantized random shape carries its weights: vLLM loads those.)
        args["load_format"] = "dummy"
    return args


def get_engine(args: dict[str, Any], device: str = "cpu", name: str = "",
               keep_others: bool = False) -> SharedEngine:
    """The engine for these arguments, started on first use and shared afterwards.

    Another running engine is shut down first (its processes gone, its memory given back),
    except on a GPU when the new engine fits in the memory still free beside it (sleeping
    engines hold little). ``keep_others``: never shut one down; raise ``NoRoomBeside``
    instead. On a GPU an engine that would find too little free memory is refused with the
    numbers and the fix.
    """
    key = json.dumps(args, sort_keys=True)
    with _LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
        if device == "cuda" and _ENGINES and not _fits_beside(args):
            if keep_others:
                raise NoRoomBeside(f"{name or args['model']}: no room on the GPU beside the "
                                   f"{len(_ENGINES)} engine(s) loaded")
            _shutdown_all()
        elif device != "cuda":
            _shutdown_all()  # one engine at a time on a CPU: cores and memory are few
        used_before: list[int] = []
        if device == "cuda":
            opts = _options(args)
            memory = gpu_memory(opts.devices)
            check_gpu_free(name or args["model"], opts, memory)
            used_before = [total - free for total, free in memory]
        engine = _start_engine(args, device)
        engine.used_before = used_before
        _ENGINES[key] = engine
        return engine



def running(args: dict[str, Any]) -> bool:
    """Whether an engine with these arguments is started already (``get_engine`` reuses it)."""
    return json.dumps(args, sort_keys=True) in _ENGINES


def _options(args: dict[str, Any]):
    """The memory-relevant vLLM options of resolved engine arguments."""
    return VllmOptions(tensor_parallel_size=args.get("tensor_parallel_size", 1),
                       pipeline_parallel_size=args.get("pipeline_parallel_size", 1),
                       gpu_memory_utilization=args.get("gpu_memory_utilization"))


def _fits_beside(args: dict[str, Any]) -> bool:
    try:
        check_gpu_free("", _options(args))
    except SpecError:
        return False
    return True


def _start_engine(args: dict[str, Any], device: str = "cpu") -> SharedEngine:
    import psutil

    from engine.backends.vllm_launcher import prepare_vllm

    if prepare_vllm() is None:
        raise BackendError("vLLM is not installed: run `make vllm` (or pip install "
                           "'roilab[vllm]'; on a GPU box install vLLM's CUDA build).")
    # apply_model() below sends a function to the engine's worker to read back the loaded
    # weights; vLLM pickles such calls only when allowed (local IPC between our own processes).
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    # vLLM forks its engine processes by default, and a forked child cannot use CUDA once this
    # process has touched it (a transformers variant, or asking for the device's name, does):
    # "Cannot re-initialize CUDA in forked subprocess". Spawned children start clean.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    from vllm import LLM

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    t0 = time.perf_counter()
    try:
        llm = LLM(**args)
    except Exception as exc:  # vLLM raises plain exceptions; say what was asked
        raise BackendError(f"vLLM could not start with {args}: {type(exc).__name__}: "
                           f"{str(exc)[:500]}") from exc
    start_s = time.perf_counter() - t0
    pids = [p.pid for p in me.children(recursive=True)
            if p.pid not in before and not _is_resource_tracker(p)]
    try:
        weight_bytes = int(sum(llm.apply_model(loaded_weight_bytes)))
    except Exception:  # noqa: BLE001 - an engine that refuses the call still serves
        weight_bytes = None
    try:
        kv = kv_summary(llm.collective_rpc(kv_cache_info))
    except Exception as exc:  # noqa: BLE001 - an engine that refuses the call still serves
        kv = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return SharedEngine(llm=llm, args=args, start_s=start_s, pids=pids, weight_bytes=weight_bytes,
                        device=device, kv=kv)


def _is_resource_tracker(proc) -> bool:
    """multiprocessing's resource tracker, started with the first spawned child and shared by
    every later one: not part of any one engine."""
    try:
        return "resource_tracker" in " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone already
        return True


def _shutdown(engine: SharedEngine) -> None:
    """Stop the engine and wait until its processes have exited and (on a GPU) the memory it
    held is free again, so the next engine finds what it needs."""
    import gc

    import psutil

    try:
        engine.llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001, S110 - best effort: the processes are reaped below
        pass
    procs = [psutil.Process(p) for p in engine.pids if psutil.pid_exists(p)]
    _, alive = psutil.wait_procs(procs, timeout=SHUTDOWN_WAIT_S)
    for p in alive:  # an engine that ignored its shutdown must not keep the GPU
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    engine.llm = None
    gc.collect()
    if engine.device == "cuda" and engine.used_before:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            used = [t - f for t, f in gpu_memory(len(engine.used_before))]
            if all(u <= b + 2**30 for u, b in zip(used, engine.used_before, strict=True)):
                break
            time.sleep(0.5)


def _shutdown_all() -> None:
    while _ENGINES:
        _shutdown(_ENGINES.popitem()[1])


def shutdown_engines() -> None:
    """Shut down every shared engine (also done at interpreter exit)."""
    with _LOCK:
        _shutdown_all()


atexit.register(shutdown_engines)
