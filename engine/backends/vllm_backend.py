"""vLLM backend: a variant served by vLLM's offline engine, as most teams serve in production.

The variant's ``vllm`` options (``engine.specs.backends.VllmOptions``) become vLLM engine
arguments; each batch is submitted at once and vLLM batches it continuously. Prompts are
rendered and tokenized here with the model's own chat template, exactly as the
transformers backend does, so both engines see identical token ids and greedy outputs can
be compared token for token.

Timing. The engine is stepped by hand (``LLMEngine.add_request`` / ``step`` with delta
outputs), so every request's first token and finish are seen when they happen, not when the
whole batch returns. Ours are measured from the moment the batch is submitted; vLLM's own
per-request metrics (``RequestOutput.metrics``: arrival, queued, scheduled, first and last
token; filled only with ``disable_log_stats=False``) are recorded next to them in
``Generation.engine_metrics``, and the runner stores them with the variant.

Engines are expensive to start (about a minute on a 2-core CPU), so they are shared per
process, keyed by the engine arguments: a later variant with the same arguments reuses the
engine. A variant with other arguments first shuts the running engine down, waits for its
processes to exit and its GPU memory to come back, then starts its own, unless (on a GPU)
the new one fits in the memory still free beside it. Every engine is shut down at exit
(``shutdown_engines()`` does it earlier). Engines start their processes with the spawn
method, which works in a process that has already touched CUDA (fork does not): a script
that runs a pilot on this backend needs an ``if __name__ == "__main__":`` guard.

Memory per variant (``memory_report``): weight bytes read back from the loaded model, the
KV-cache capacity vLLM reserved (blocks x block size, and its bytes), and the peak while
serving: on a GPU the device memory the engine holds (NVML, over what was in use before it
started), on the CPU the summed RSS of the engine's processes.
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

from engine.backends.base import RANDOM_TEXT, Backend, LoadInfo, Messages, resolve_device
from engine.backends.vllm_checks import (
    check_cpu_int_weights,
    check_cpu_model,
    check_gpu_fit,
    check_gpu_free,
    check_gpu_int_weights,
    check_vllm_spec,
    gpu_memory,
    gpu_name,
)
from engine.core.domain import Generation
from engine.core.errors import BackendError, ModelPrepError, SpecError
from engine.models.prep import is_random_model
from engine.specs.backends import VllmOptions

CPU_KV_CACHE_BYTES = 512 * 2**20  # default KV cache on CPU (vLLM needs an explicit size there)
SHUTDOWN_WAIT_S = 60  # how long a stopped engine's processes get to exit before being killed
# The front end hands us a request's first token and then only its finish (vLLM's
# ``stream_interval``): that is all the timing needs, and building a delta output for every
# request at every step cost ~8% of throughput at batch 64 on an H200.
STREAM_INTERVAL = 1 << 20


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


_ENGINES: OrderedDict[str, SharedEngine] = OrderedDict()
_LOCK = threading.Lock()


def engine_args(spec, model_path: str, device: str) -> dict[str, Any]:
    """vLLM ``LLM(...)`` keyword arguments for a variant on ``device`` ("cpu" or "cuda")."""
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
    args.update({k: v for k, v in optional.items() if v is not None})
    if is_random_model(model_path) and not any(Path(model_path).glob("*.safetensors")):
        # A production shape from its config alone: random weights, speed and memory only.
        # (An exported quantized random shape carries its weights: vLLM loads those.)
        args["load_format"] = "dummy"
    return args


def get_engine(args: dict[str, Any], device: str = "cpu", name: str = "") -> SharedEngine:
    """The engine for these arguments, started on first use and shared afterwards.

    Another running engine is shut down first (its processes gone, its memory given back),
    except on a GPU when the new engine fits in the memory still free beside it. On a GPU an
    engine that would find too little free memory is refused with the numbers and the fix.
    """
    key = json.dumps(args, sort_keys=True)
    with _LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
        if device == "cuda" and _ENGINES and not _fits_beside(args):
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
        weight_bytes = int(sum(llm.apply_model(_weight_bytes)))
    except Exception:  # noqa: BLE001 - an engine that refuses the call still serves
        weight_bytes = None
    try:
        kv = _kv_summary(llm.collective_rpc(_kv_cache_info))
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


def _kv_cache_info(worker) -> dict[str, Any]:
    """Runs inside each vLLM worker: the KV cache it allocated (blocks, tokens, bytes) and the
    torch allocator's peak on its GPU."""
    out: dict[str, Any] = {}
    runner = getattr(worker, "model_runner", None) or getattr(worker, "worker", None)
    runner = getattr(runner, "model_runner", runner)
    config = getattr(runner, "kv_cache_config", None)
    if config is not None:
        groups = config.kv_cache_groups
        out["num_blocks"] = int(config.num_blocks)
        out["block_size"] = int(groups[0].kv_cache_spec.block_size) if groups else None
        out["groups"] = len(groups)
        out["bytes"] = int(sum(t.size for t in config.kv_cache_tensors))
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def _kv_summary(per_worker: list[dict[str, Any]]) -> dict[str, Any]:
    """KV capacity in tokens (one worker's blocks x block size: tensor-parallel ranks each hold
    a slice of every token) and bytes summed over the workers."""
    first = per_worker[0] if per_worker else {}
    if not first.get("num_blocks") or not first.get("block_size"):
        return {}
    return {"tokens": first["num_blocks"] * first["block_size"] // max(first["groups"], 1),
            "bytes": sum(w.get("bytes", 0) for w in per_worker),
            "num_blocks": first["num_blocks"], "block_size": first["block_size"]}


def _weight_bytes(model) -> int:
    """Runs inside vLLM's worker: bytes of the loaded weights as stored (fp8 counted as 1 byte)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:  # tied embeddings count once
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


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


class _TreeRssSampler:
    """Peak summed RSS of the engine's processes, sampled in a thread while serving."""

    def __init__(self, pids: list[int], interval_s: float = 0.05) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
        self.peak = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a process that exited holds no memory
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def reset(self) -> None:
        self.peak = self._sample()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return max(self.peak, self._sample())


class _GpuUsedSampler:
    """Peak device memory the engine holds: NVML's used bytes on its GPUs over what was in
    use before it started, sampled in a thread while serving. vLLM reserves its KV cache up
    front, so this is mostly gpu_memory_utilization x the device, and repeats run to run."""

    def __init__(self, used_before: list[int], pids: list[int] | None = None,
                 interval_s: float = 0.05) -> None:
        self._before = used_before
        self._pids = set(pids or [])
        self.per_process = False  # True once NVML attributed memory to the engine's processes
        self._interval = interval_s
        self.peak = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        mine = self._engine_processes()
        if mine is not None:
            self.per_process = True
            return mine
        used = [t - f for t, f in gpu_memory(len(self._before))]
        return int(sum(max(0, u - b) for u, b in zip(used, self._before, strict=True)))

    def _engine_processes(self) -> int | None:
        """GPU memory NVML attributes to the engine's own processes (so another program on
        the same GPU does not count), or None where NVML lists none of them."""
        try:
            import pynvml

            from engine.backends.vllm_checks import _nvml_index

            total, found = 0, False
            for i in range(len(self._before)):
                handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(i))
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in self._pids and proc.usedGpuMemory is not None:
                        total += int(proc.usedGpuMemory)
                        found = True
            return total if found else None
        except Exception:  # noqa: BLE001 - no NVML process list here: the device figure
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._sample())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return max(self.peak, self._sample())


class VllmBackend(Backend):
    name = "vllm"

    def __init__(self, spec, model_path: str) -> None:
        super().__init__(spec, model_path)
        self.engine: SharedEngine | None = None
        self.tokenizer = None
        self._eos: set[int] = set()
        self._sampler: _TreeRssSampler | _GpuUsedSampler | None = None
        self._peak: int | None = None
        self._reused = False
        self._batches = 0
        self._pairs: list[tuple[float, float]] = []  # (our latency, vLLM's) per request
        self._random = is_random_model(model_path)
        self._ids: dict[str, list[int]] = {}  # request (JSON) -> prompt token ids
        self._device = "cpu"
        self._per_process = False

    @classmethod
    def check(cls, spec, device: str) -> None:
        check_vllm_spec(spec, device)

    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        device = resolve_device(self.spec.device)
        self.check(self.spec, device)
        opts = self.spec.vllm or VllmOptions()
        if device == "cpu":
            check_cpu_model(self.spec.name, self.model_path)
            check_cpu_int_weights(self.spec.name, self.model_path, opts.quantization)
        else:
            check_gpu_int_weights(self.spec.name, self.model_path, self.spec.dtype,
                                  opts.quantization)
            check_gpu_fit(self.spec.name, self.model_path, self.spec.dtype, opts)
        self._load_tokenizer()
        args = engine_args(self.spec, self.model_path, device)
        self._reused = json.dumps(args, sort_keys=True) in _ENGINES
        self.engine = get_engine(args, device, self.spec.name)
        self.engine.uses += 1
        self._device = device
        self._sampler = (_TreeRssSampler(self.engine.pids) if device == "cpu"
                         else _GpuUsedSampler(self.engine.used_before, self.engine.pids))
        return LoadInfo(load_s=self.engine.start_s, weight_bytes=self.engine.weight_bytes,
                        device=self._describe(device),
                        technique_report={"_model": {"engine": "vllm", **self._versions()}})

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except (OSError, ValueError) as exc:
            raise ModelPrepError(f"Cannot load the tokenizer of {self.model_path!r}: {exc}. "
                                 "Name a local Hugging Face model folder.") from exc
        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
        except OSError:
            eos = None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos])
        if self._random:  # random weights: decode max_new_tokens, as a speed benchmark does
            self._eos = set()

    @staticmethod
    def _versions() -> dict[str, str]:
        from engine.backends.vllm_launcher import installed_vllm

        found = installed_vllm()
        return {"vllm_distribution": found[0], "vllm_version": found[1]} if found else {}

    @staticmethod
    def _describe(device: str) -> str:
        if device == "cuda":  # NVML: no CUDA context here beside the engine's own
            return f"cuda:0 {gpu_name(0)} (vLLM)"
        return f"cpu ({os.cpu_count()} cores, vLLM)"

    def _token_ids(self, messages: Messages) -> list[int]:
        return self._batch_token_ids([messages])[0]

    def _batch_token_ids(self, batch: list[Messages]) -> list[list[int]]:
        """The chat-templated token ids of each request, tokenized once per backend: the
        runner counts them to order the batches (outside the timed pass), and the timed pass
        then sends ids, as a caller of raw vLLM with token-id prompts does."""
        keys = [json.dumps(m, sort_keys=True) for m in batch]
        todo = list(dict.fromkeys(k for k in keys if k not in self._ids))
        if todo:
            texts = [self.tokenizer.apply_chat_template(json.loads(k), tokenize=False,
                                                        add_generation_prompt=True) for k in todo]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            self._ids.update(zip(todo, ids, strict=True))
        return [self._ids[k] for k in keys]

    def count_tokens(self, messages: Messages) -> int:
        return len(self._token_ids(messages))

    def generate(self, batch: list[Messages], max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.engine.llm.llm_engine
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, detokenize=False,
                                ignore_eos=self._random, output_kind=RequestOutputKind.DELTA)
        prompts = self._batch_token_ids(batch)
        self._batches += 1
        ids = [f"roilab-{id(self)}-{self._batches}-{i}" for i in range(len(batch))]
        wall0, mono0, t0 = time.time(), time.monotonic(), time.perf_counter()
        for rid, toks in zip(ids, prompts, strict=True):
            engine.add_request(rid, TokensPrompt(prompt_token_ids=toks), params)
        first: dict[str, float] = {}
        done: dict[str, float] = {}
        tokens: dict[str, list[int]] = {rid: [] for rid in ids}
        metrics: dict[str, Any] = {}
        while len(done) < len(ids):
            outputs = engine.step()
            now = time.perf_counter() - t0
            for out in outputs:
                new = list(out.outputs[0].token_ids) if out.outputs else []
                if new and out.request_id not in first:
                    first[out.request_id] = now
                tokens[out.request_id].extend(new)
                if out.finished:
                    done[out.request_id] = now
                    metrics[out.request_id] = out.metrics
            if not outputs and not engine.has_unfinished_requests() and len(done) < len(ids):
                raise BackendError("vLLM finished without answering every request; "
                                   "see the engine's log above.")
        gens = [self._generation(rid, toks, tokens[rid], first, done, metrics.get(rid),
                                 (wall0, mono0)) for rid, toks in zip(ids, prompts, strict=True)]
        self._pairs += [(g.latency_s, g.engine_metrics["latency_s"]) for g in gens
                        if g.engine_metrics]
        return gens

    def warm_up(self, prompts: list[Messages], batch_size: int, max_new_tokens: int) -> None:
        super().warm_up(prompts, batch_size, max_new_tokens)
        self._pairs.clear()  # agreement is reported over the timed requests only

    def _generation(self, rid: str, prompt: list[int], out: list[int], first: dict, done: dict,
                    stats, origin: tuple[float, float]) -> Generation:
        cut = next((j for j, t in enumerate(out) if t in self._eos), len(out))
        text = RANDOM_TEXT.format(n=cut) if self._random else \
            self.tokenizer.decode(out[:cut], skip_special_tokens=True).strip()
        return Generation(text=text, prompt_tokens=len(prompt), output_tokens=cut,
                          ttft_s=first.get(rid, done[rid]), latency_s=done[rid],
                          engine_metrics=_engine_metrics(stats, *origin))

    def serving_report(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        report = {"engine": "vllm offline LLM engine", **self._versions(),
                  "engine_args": {k: v for k, v in self.engine.args.items() if k != "model"},
                  "engine_start_s": round(self.engine.start_s, 2),
                  "engine_reused": self._reused,
                  "timing": "ours: from batch submission to the step that returned the request's "
                            "first token / its finish; vLLM's: RequestOutput.metrics "
                            "(engine_metrics per request)"}
        if self._pairs:
            diffs = [abs(ours - theirs) / theirs for ours, theirs in self._pairs if theirs > 0]
            report["latency_vs_vllm_metrics"] = {
                "requests": len(self._pairs), "max_rel_diff": round(max(diffs, default=0), 4),
                "mean_rel_diff": round(sum(diffs) / max(len(diffs), 1), 4)}
        report["engine_pids"] = list(self.engine.pids)
        if self.engine.pids:
            report["memory"] = ("peak RSS summed over vLLM's engine processes (EngineCore + "
                                "worker), each with its own Python/torch runtime, and the KV "
                                "cache pages touched")
        return report

    def peak_memory_bytes(self) -> int | None:
        if self._sampler is not None:
            self._per_process = getattr(self._sampler, "per_process", False)
            self._peak = self._sampler.stop()
            self._sampler = None
        return self._peak

    def memory_report(self) -> dict[str, Any]:
        import psutil

        opts = self.spec.vllm or VllmOptions()
        kv = self.engine.kv if self.engine else {}
        gpu = self._device == "cuda"
        total = gpu_memory(1)[0][0] if gpu else psutil.virtual_memory().total
        return {
            "device": self._device, "peak_bytes": self.peak_memory_bytes(),
            "peak_method": ("GPU memory NVML attributes to the engine's processes, highest "
                            "while serving" if self._per_process else
                            "GPU memory in use on the engine's GPUs (NVML) over the use before "
                            "it started, highest while serving") if gpu else
                           "RSS summed over vLLM's engine processes, highest while serving",
            "weight_bytes": self.engine.weight_bytes if self.engine else None,
            "kv_cache_tokens": kv.get("tokens"), "kv_cache_bytes": kv.get("bytes"),
            "kv_bytes_per_token": kv["bytes"] / kv["tokens"] if kv.get("tokens") else None,
            "kv_method": "reserved by vLLM at start-up (KV blocks x block size)" if kv
                         else f"not reported by this vLLM ({self.engine.kv.get('error', '')})"
                         if self.engine else "engine not started",
            "device_total_bytes": total, "devices": opts.devices,
            "gpu_memory_utilization": self.engine.args.get("gpu_memory_utilization")
            if self.engine and gpu else None,
        }

    def close(self) -> None:
        # The engine stays in the shared cache for the next variant with the same arguments.
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        self.engine = None


def _engine_metrics(stats, wall0: float, mono0: float) -> dict[str, float] | None:
    """vLLM's own timings for one request, in seconds from our batch submission.

    ``arrival_time`` is a wall-clock stamp taken by vLLM's front end when the request was
    added; ``queued/scheduled/first_token/last_token_ts`` are engine-core stamps of the
    monotonic clock, which is system-wide on Linux and so comparable with ours.
    ``ttft_s`` is vLLM's ``first_token_latency`` (front end, from arrival); ``latency_s`` is
    that plus the engine's decode span (first to last token), i.e. arrival to last token.
    """
    if stats is None or not getattr(stats, "first_token_ts", 0):
        return None
    decode = stats.last_token_ts - stats.first_token_ts
    return {"arrival_s": stats.arrival_time - wall0,
            "queued_s": stats.queued_ts - mono0, "scheduled_s": stats.scheduled_ts - mono0,
            "first_token_s": stats.first_token_ts - mono0,
            "last_token_s": stats.last_token_ts - mono0,
            "ttft_s": stats.first_token_latency,
            "latency_s": stats.first_token_latency + decode,
            "generation_tokens": stats.num_generation_tokens,
            "preemptions": getattr(stats, "num_preemptions", None)}  # vLLM >= 0.23
